#!/usr/bin/env node
// An Express 5 app under handoff:
//
//   handoff run --listen http=tcp://127.0.0.1:8080 -- node examples/node/express.js
//
// app.listen() passes its arguments to node:http's server.listen(), so the
// socket handoff passed is `app.listen({ fd: 3 })`, as for a plain http
// server. Readiness and the drain come from systemd.js. Without LISTEN_FDS
// it listens on PORT (default 8080) of 127.0.0.1.
'use strict';

const express = require('express');
const { activationFd, notifyReady, drainOnSignal } = require('./systemd');

const id = `pid=${process.pid} slot=${process.env.HANDOFF_WORKER || '-'} ` +
  `generation=${process.env.HANDOFF_GENERATION || '-'} version=${process.env.APP_VERSION || 'dev'} server=express\n`;
let closing = false;

const app = express();
app.disable('x-powered-by');
app.use((req, res, next) => {
  if (closing) res.set('Connection', 'close');
  next();
});
app.get('/', (req, res) => {
  res.type('text/plain').send(id);
});

const fd = activationFd(process.env.SOCKET_NAME);
const where = fd !== null ? { fd } : { port: Number(process.env.PORT || 8080), host: '127.0.0.1' };
const server = app.listen(where, (err) => {
  if (err) {
    console.error(`express: listen: ${err.message}`);
    process.exit(1);
  }
  notifyReady();
});
drainOnSignal(server, { setClosing: () => { closing = true; } });
