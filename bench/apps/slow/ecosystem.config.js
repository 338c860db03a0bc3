// examples/node/ecosystem.config.js with this directory's server.js (the
// slow app) as its script, for the bench's load part. SLOW_MS and
// SLOW_MODE are passed on.
'use strict';

const path = require('node:path');

const config = require(path.join(__dirname, '..', '..', '..', 'examples', 'node', 'ecosystem.config.js'));
for (const app of config.apps) {
  app.script = path.join(__dirname, 'server.js');
  app.env.SLOW_MS = process.env.SLOW_MS || '1000';
  app.env.SLOW_MODE = process.env.SLOW_MODE || 'cpu';
}
module.exports = config;
