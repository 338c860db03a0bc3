// What a Node.js server needs to run under handoff (or systemd socket
// activation), shared by express.js and fastify.js (server.js has its own
// copy, so that it needs no file besides itself):
//
//   activationFd()        the listening socket handoff passed, or null
//   notifyReady()         READY=1 through `systemd-notify --ready`
//   drainOnSignal(...)    on SIGTERM/SIGINT, stop without losing a request
//
// Node cannot send a unix datagram itself, so readiness goes through the
// systemd-notify helper; handoff gives every worker a NOTIFY_SOCKET of its
// own, so the helper's message is credited to the right worker. Where
// systemd-notify is missing, run handoff with --ready delay=1s instead.
'use strict';

const { execFile } = require('node:child_process');

// activationFd returns the descriptor of the socket named `name` in
// LISTEN_FDNAMES (the first socket, fd 3, when name is empty), or null when
// the process was not started with sockets (LISTEN_PID must be our pid).
function activationFd(name) {
  const n = Number(process.env.LISTEN_FDS || 0);
  if (!(n > 0) || Number(process.env.LISTEN_PID) !== process.pid) return null;
  if (!name) return 3;
  const i = (process.env.LISTEN_FDNAMES || '').split(':').indexOf(name);
  if (i < 0 || i >= n) {
    console.error(`no socket named ${name} in LISTEN_FDNAMES=${process.env.LISTEN_FDNAMES}`);
    process.exit(2);
  }
  return 3 + i;
}

// notifyReady tells handoff (or systemd) that this worker serves.
function notifyReady() {
  if (!process.env.NOTIFY_SOCKET) return;
  execFile('systemd-notify', ['--ready'], (err) => {
    if (err) {
      console.error(`systemd-notify --ready: ${err.message} (without systemd-notify, run handoff with --ready delay=1s)`);
    }
  });
}

// drainOnSignal stops `server` (a node:http Server) on SIGTERM or SIGINT
// in the order that loses no request:
//
//  1. setClosing() is called at once: from then on the app answers with
//     `Connection: close`, so a keep-alive client closes after its current
//     request instead of sending the next one on a connection about to go.
//  2. windowMs later, close(done) stops accepting (the socket is shared:
//     connections still queued go to other workers) and closes idle
//     keep-alive connections; requests in flight are answered.
//  3. A connection accepted but silent for 5 s is closed (Node does not
//     count it as idle), and at the latest timeoutMs after the window the
//     process exits anyway; keep that below handoff's --drain-timeout.
//
// close defaults to server.close; a framework passes its own (fastify.close).
function drainOnSignal(server, { setClosing, close, windowMs = 300, timeoutMs = 25000 }) {
  const sockets = new Set();
  server.on('connection', (s) => {
    s.acceptedAt = Date.now();
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  let draining = false;
  const drain = () => {
    if (draining) return;
    draining = true;
    setClosing();
    setTimeout(() => {
      const done = () => process.exit(0);
      if (close) close(done);
      else server.close(done);
      server.closeIdleConnections();
      setInterval(() => {
        for (const s of sockets) {
          if (s.bytesRead === 0 && Date.now() - s.acceptedAt >= 5000) s.destroy();
        }
      }, 250).unref();
    }, windowMs);
    setTimeout(() => {
      console.error(`${sockets.size} connection(s) still open ${timeoutMs} ms after closing, exiting`);
      process.exit(0);
    }, windowMs + timeoutMs).unref();
  };
  process.on('SIGTERM', drain);
  process.on('SIGINT', drain);
}

module.exports = { activationFd, notifyReady, drainOnSignal };
