#!/usr/bin/env node
// A Fastify 5 app under handoff:
//
//   handoff run --listen http=tcp://127.0.0.1:8080 -- node examples/node/fastify.js
//
// One Fastify default needs changing under any process manager that
// replaces workers on a shared socket: return503OnClosing: false. By
// default a closing Fastify server answers 503 to every request it reads,
// including one on a connection it accepted just before close(); under
// handoff another worker would have served it. fastify.listen() passes its
// options to node:http, so the socket handoff passed is listen({ fd: 3 }).
//
// Readiness and the drain come from systemd.js. Without LISTEN_FDS it
// listens on PORT (default 8080) of 127.0.0.1.
'use strict';

const Fastify = require('fastify');
const { activationFd, notifyReady, drainOnSignal } = require('./systemd');

const id = `pid=${process.pid} slot=${process.env.HANDOFF_WORKER || '-'} ` +
  `generation=${process.env.HANDOFF_GENERATION || '-'} version=${process.env.APP_VERSION || 'dev'} server=fastify\n`;
let closing = false;

const fastify = Fastify({ return503OnClosing: false });
fastify.addHook('onSend', async (request, reply, payload) => {
  if (closing) reply.header('Connection', 'close');
  return payload;
});
fastify.get('/', async (request, reply) => {
  reply.type('text/plain');
  return id;
});

const fd = activationFd(process.env.SOCKET_NAME);
const where = fd !== null ? { fd } : { port: Number(process.env.PORT || 8080), host: '127.0.0.1' };
drainOnSignal(fastify.server, {
  setClosing: () => { closing = true; },
  close: (done) => { fastify.close().then(done, done); },
});
fastify.listen(where).then(notifyReady, (err) => {
  console.error(`fastify: listen: ${err.message}`);
  process.exit(1);
});
