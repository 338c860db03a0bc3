#!/usr/bin/env node
// examples/node/server.js with a slow path, for the bench's load part
// (bench/load_aware.go): `/slow` blocks the process for SLOW_MS
// milliseconds (default 1000) before it answers, in a CPU loop (SLOW_MODE=cpu,
// the default: a request stuck in computation) or a synchronous sleep
// (SLOW_MODE=sleep: Atomics.wait, no CPU). Node is single-threaded: while
// it blocks, the process accepts and answers nothing else. Everything else
// (listening, readiness, draining, the answer) is examples/node/server.js,
// whose handler this wraps.
'use strict';

const http = require('node:http');
const path = require('node:path');

const slowMs = Number(process.env.SLOW_MS || 1000);
const mode = process.env.SLOW_MODE || 'cpu';
if (!Number.isInteger(slowMs) || slowMs < 0 || (mode !== 'cpu' && mode !== 'sleep')) {
  console.error(`slow app: SLOW_MS=${process.env.SLOW_MS} SLOW_MODE=${process.env.SLOW_MODE}: want whole milliseconds and cpu or sleep`);
  process.exit(2);
}

function block(ms) {
  if (mode === 'sleep') {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    return;
  }
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  return x;
}

const createServer = http.createServer;
http.createServer = (handler) => createServer((req, res) => {
  if (req.url === '/slow' || req.url.startsWith('/slow?')) block(slowMs);
  handler(req, res);
});

require(path.join(__dirname, '..', '..', '..', 'examples', 'node', 'server.js'));
