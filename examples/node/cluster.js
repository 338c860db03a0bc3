#!/usr/bin/env node
// A Node.js cluster-module master for server.js, for comparison with
// handoff: it forks WORKERS workers (default: one per core) that share
// PORT through the master (round-robin scheduling, Node's default on
// Linux), and on SIGHUP replaces them the way Node's documentation shows
// for worker.disconnect(): fork the new workers, and once they listen tell
// each old one 'shutdown' and kill it if it has not exited a little after
// its own drain timeout (CLOSE_WINDOW_MS + DRAIN_TIMEOUT_MS). server.js
// answers 'shutdown' with the same drain as SIGTERM (a window with
// `Connection: close`, then server.close()).
//
//   PORT=8080 WORKERS=2 node examples/node/cluster.js
//   kill -HUP <master pid>     # reload
//   kill -TERM <master pid>    # stop
//
// A worker of the serving generation that dies is replaced. SIGHUPs that
// arrive during a reload are coalesced into one more reload after it.
// The master logs one line per event on stdout, e.g.
// "cluster: generation 2 serving pids=[…]" and "cluster: generation 1 retired".
'use strict';

const cluster = require('node:cluster');
const os = require('node:os');
const path = require('node:path');

const workers = Number(process.env.WORKERS || os.availableParallelism());
// server.js gives up on open connections after its window plus
// DRAIN_TIMEOUT_MS (it inherits the variable); the master kills a little later.
const drainTimeoutMs = Number(process.env.DRAIN_TIMEOUT_MS || 25000);
const killAfterMs = Number(process.env.CLOSE_WINDOW_MS || 300) + drainTimeoutMs + 2000;
if (!Number.isInteger(workers) || workers < 1) {
  console.error(`cluster: WORKERS=${process.env.WORKERS}: want a number of at least 1`);
  process.exit(2);
}

cluster.setupPrimary({ exec: path.join(__dirname, 'server.js'), args: process.argv.slice(2) });

let generation = 0;
let serving = [];       // workers of the serving generation
let reloading = false;
let reloadPending = false;
let stopping = false;

// startGeneration forks n workers and resolves when all of them listen, or
// rejects when one exits first.
function startGeneration() {
  const gen = ++generation;
  const started = [];
  const ready = [];
  for (let i = 0; i < workers; i++) {
    const w = forkWorker(gen, i);
    started.push(w);
    ready.push(new Promise((resolve, reject) => {
      w.once('listening', resolve);
      w.once('exit', (code, signal) => reject(new Error(`worker ${w.process.pid} exited (${signal || code}) before listening`)));
    }));
  }
  return Promise.all(ready).then(() => ({ gen, started }), (err) => {
    started.forEach((w) => retire(w));
    throw err;
  });
}

function forkWorker(gen, slot) {
  const w = cluster.fork({ NODE_APP_INSTANCE: String(slot), APP_GENERATION: String(gen) });
  w.slot = slot;
  w.gen = gen;
  w.on('exit', (code, signal) => {
    if (w.retiring || stopping) return;
    const i = serving.indexOf(w);
    if (i < 0) return;
    console.log(`cluster: worker ${w.process.pid} died (${signal || code}), replacing it`);
    serving[i] = forkWorker(gen, slot);
  });
  return w;
}

// retire asks w to drain and exit, and kills it after the drain timeout.
function retire(w) {
  return new Promise((resolve) => {
    if (w.isDead()) return resolve();
    w.retiring = true;
    const timer = setTimeout(() => {
      console.log(`cluster: worker ${w.process.pid} still running ${killAfterMs} ms after 'shutdown', killing it`);
      w.kill('SIGKILL');
    }, killAfterMs);
    w.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    if (w.isConnected()) w.send('shutdown');
    else w.kill('SIGTERM');
  });
}

async function reload() {
  if (reloading) {
    reloadPending = true;
    return;
  }
  reloading = true;
  try {
    do {
      reloadPending = false;
      const old = serving;
      const oldGen = generation;
      let next;
      try {
        next = await startGeneration();
      } catch (err) {
        console.log(`cluster: reload failed, generation ${oldGen} keeps serving: ${err.message}`);
        continue;
      }
      if (stopping) {
        await Promise.all(next.started.map(retire));
        return;
      }
      serving = next.started;
      console.log(`cluster: generation ${next.gen} serving pids=[${serving.map((w) => w.process.pid)}]`);
      await Promise.all(old.map(retire));
      console.log(`cluster: generation ${oldGen} retired`);
    } while (reloadPending && !stopping);
  } finally {
    reloading = false;
  }
}

async function stop(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`cluster: ${signal}: stopping workers`);
  await Promise.all(Object.values(cluster.workers).map(retire));
  console.log('cluster: all workers stopped');
  process.exit(0);
}

process.on('SIGHUP', () => { reload(); });
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

startGeneration().then((g) => {
  serving = g.started;
  console.log(`cluster: generation ${g.gen} serving pids=[${serving.map((w) => w.process.pid)}]`);
}, (err) => {
  console.error(`cluster: cannot start: ${err.message}`);
  process.exit(1);
});
