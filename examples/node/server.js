#!/usr/bin/env node
// Example app for handoff: a Node.js HTTP server with no npm dependencies,
// written for systemd-style socket activation so it runs under handoff
// (or systemd) unchanged, and also under Node's cluster module and PM2.
//
//   handoff run --listen http=tcp://127.0.0.1:8080 -- node examples/node/server.js
//
// Every answer names the process, in the same format as examples/hello:
//
//   pid=1234 slot=0 generation=3 version=v2
//
// Listening: with LISTEN_FDS (and LISTEN_PID naming this process) it serves
// on the first socket it was given, fd 3 (or the one
// SOCKET_NAME names in LISTEN_FDNAMES); otherwise it listens on PORT (default 8080) on HOST
// (default 127.0.0.1), which under cluster or PM2 is the shared port.
//
// Readiness: once listening it runs `systemd-notify --ready`. Under handoff
// every worker has its own NOTIFY_SOCKET, so the message of this helper
// process is credited to the right worker. Where systemd-notify is
// missing, run handoff with `--ready delay=1s` instead. Under cluster or
// PM2 (wait_ready) it sends the message 'ready' to its parent.
//
// Draining: on SIGTERM, SIGINT (PM2's signal) or a 'shutdown' message
// (cluster.js) it keeps serving for CLOSE_WINDOW_MS (default 300) with
// `Connection: close` on every response, so that each keep-alive client
// closes its connection after its next request, and only then calls
// server.close(), which stops accepting and drops idle connections.
// Closing first would drop keep-alive connections on which a client is
// sending its next request at that very moment.
//
// Environment: APP_VERSION (or the first argument) is the version shown;
// HANDOFF_WORKER and HANDOFF_GENERATION (set by handoff) are the slot and
// generation, else NODE_APP_INSTANCE (PM2, cluster.js) and APP_GENERATION
// (cluster.js); CLOSE_WINDOW_MS and DRAIN_TIMEOUT_MS tune the drain.
'use strict';

const http = require('node:http');
const { execFile } = require('node:child_process');

const version = process.env.APP_VERSION || process.argv[2] || 'dev';
const slot = process.env.HANDOFF_WORKER || process.env.NODE_APP_INSTANCE || '-';
const generation = process.env.HANDOFF_GENERATION || process.env.APP_GENERATION || '-';
const closeWindowMs = intEnv('CLOSE_WINDOW_MS', 300);
const drainTimeoutMs = intEnv('DRAIN_TIMEOUT_MS', 25000);

const id = `pid=${process.pid} slot=${slot} generation=${generation} version=${version}\n`;
let closing = false;

const server = http.createServer((req, res) => {
  // Read (and discard) any request body before answering.
  req.resume();
  req.on('end', () => {
    const headers = { 'Content-Type': 'text/plain; charset=utf-8' };
    if (closing) headers.Connection = 'close';
    res.writeHead(200, headers);
    res.end(id);
  });
});

function intEnv(name, dflt) {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`node example: ${name}=${v}: want a whole number of milliseconds`);
    process.exit(2);
  }
  return n;
}

// activationFd returns the socket handoff (or systemd) passed, or null.
function activationFd() {
  const n = Number(process.env.LISTEN_FDS || 0);
  if (!(n > 0) || Number(process.env.LISTEN_PID) !== process.pid) return null;
  const want = process.env.SOCKET_NAME;
  if (want) {
    const names = (process.env.LISTEN_FDNAMES || '').split(':');
    const i = names.indexOf(want);
    if (i < 0 || i >= n) {
      console.error(`node example: no socket named ${want} in LISTEN_FDNAMES`);
      process.exit(2);
    }
    return 3 + i;
  }
  return 3;
}

function notifyReady() {
  if (process.env.NOTIFY_SOCKET) {
    execFile('systemd-notify', ['--ready'], (err) => {
      if (err) {
        console.error(`node example: systemd-notify --ready: ${err.message} ` +
          '(without systemd-notify, run handoff with --ready delay=1s)');
      }
    });
  }
  if (typeof process.send === 'function') process.send('ready');
}

function drain() {
  if (closing) return;
  closing = true;
  setTimeout(() => {
    // Stops accepting and closes idle connections (Node >= 19 does the
    // latter in close(); say it for 18); requests in flight finish, each on
    // a connection told to close.
    server.close(() => process.exit(0));
    if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
    // A connection on which nothing was sent yet is not idle to Node and
    // would hold the drain up; close it once it has been silent for 5 s,
    // as Go's http.Server.Shutdown does.
    setInterval(() => {
      for (const s of sockets) {
        if (s.bytesRead === 0 && Date.now() - s.acceptedAt >= 5000) s.destroy();
      }
    }, 250).unref();
  }, closeWindowMs);
  setTimeout(() => {
    const open = [...sockets].map((s) => `port ${s.remotePort} read ${s.bytesRead} B wrote ${s.bytesWritten} B` +
      ` accepted ${Date.now() - s.acceptedAt} ms ago${s._httpMessage ? ' (response pending)' : ''}`);
    console.error(`node example: ${open.length} connection(s) still open ${drainTimeoutMs} ms after closing, ` +
      `exiting: ${open.join('; ')}`);
    process.exit(0);
  }, closeWindowMs + drainTimeoutMs).unref();
}

process.on('SIGTERM', drain);
process.on('SIGINT', drain);
process.on('message', (msg) => {
  if (msg === 'shutdown') drain();
});

server.on('error', (err) => {
  console.error(`node example: ${err.message}`);
  process.exit(1);
});
server.on('listening', notifyReady);
// Open connections, to say which kept the drain from finishing.
const sockets = new Set();
server.on('connection', (s) => {
  s.acceptedAt = Date.now();
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
});

const fd = activationFd();
if (fd !== null) {
  server.listen({ fd });
} else {
  const port = Number(process.env.PORT || 8080);
  server.listen({ port, host: process.env.HOST || '127.0.0.1' });
}
