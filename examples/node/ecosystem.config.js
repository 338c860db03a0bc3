// PM2 ecosystem file for server.js in cluster mode, for comparison with
// handoff:
//
//   PORT=8080 WORKERS=2 pm2 start examples/node/ecosystem.config.js
//   pm2 reload node-example      # zero-downtime reload, one instance at a time
//   pm2 delete node-example
//
// PM2's God daemon is the cluster master and shares PORT among the
// instances. With wait_ready, a new instance counts as up once it sends
// 'ready' (server.js does so when listening); PM2 then stops the old one
// with SIGINT, which server.js drains like SIGTERM, and kills it after
// kill_timeout.
'use strict';

const path = require('node:path');

const closeWindowMs = Number(process.env.CLOSE_WINDOW_MS || 300);
const drainTimeoutMs = Number(process.env.DRAIN_TIMEOUT_MS || 25000);

module.exports = {
  apps: [{
    name: process.env.PM2_APP_NAME || 'node-example',
    script: path.join(__dirname, 'server.js'),
    exec_mode: 'cluster',
    instances: Number(process.env.WORKERS) || 'max',
    wait_ready: true,
    listen_timeout: 10000,
    // server.js gives up on open connections after its window plus
    // DRAIN_TIMEOUT_MS; PM2 kills a little later.
    kill_timeout: closeWindowMs + drainTimeoutMs + 2000,
    autorestart: true,
    env: {
      PORT: process.env.PORT || '8080',
      HOST: process.env.HOST || '127.0.0.1',
      APP_VERSION: process.env.APP_VERSION || 'dev',
      CLOSE_WINDOW_MS: String(closeWindowMs),
      DRAIN_TIMEOUT_MS: String(drainTimeoutMs),
    },
  }],
};
