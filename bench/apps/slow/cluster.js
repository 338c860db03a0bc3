#!/usr/bin/env node
// examples/node/cluster.js with this directory's server.js (the slow app)
// as its workers, for the bench's load part.
'use strict';

const cluster = require('node:cluster');
const path = require('node:path');

const setupPrimary = cluster.setupPrimary.bind(cluster);
cluster.setupPrimary = (settings) => setupPrimary({ ...settings, exec: path.join(__dirname, 'server.js') });

require(path.join(__dirname, '..', '..', '..', 'examples', 'node', 'cluster.js'));
