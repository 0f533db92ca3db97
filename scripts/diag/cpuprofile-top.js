#!/usr/bin/env node
// Prints where a V8 CPU profile's samples went: the top functions by self
// time and the total self time per source file. For profiles taken inside the
// emulated KVM host, whose files do not survive it: run this there after the
// profiled process, e.g. NODEVMM_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'.
// Usage: node scripts/diag/cpuprofile-top.js DIR_OR_FILE... [--top N]
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const argv = process.argv.slice(2);
const t = argv.indexOf('--top');
const TOP = t >= 0 ? Number(argv.splice(t, 2)[1]) : 25;
const files = argv.flatMap((p) => (fs.statSync(p).isDirectory() ? fs.readdirSync(p).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(p, f)) : [p]));
if (!files.length) {
  console.error('usage: node scripts/diag/cpuprofile-top.js DIR_OR_FILE... [--top N]');
  process.exit(2);
}
for (const file of files) {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const counts = new Map();
  for (const id of prof.samples) counts.set(id, (counts.get(id) ?? 0) + 1);
  // Sample i lasted timeDeltas[i + 1] (the gap to the next sample).
  const self = new Map();
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i + 1] ?? 0;
    self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + dt);
  }
  const byFn = new Map();
  const byFile = new Map();
  let total = 0;
  for (const [id, us] of self) {
    const cf = byId.get(id).callFrame;
    const fn = `${cf.functionName || '(anonymous)'} ${path.basename(cf.url || '')}:${cf.lineNumber + 1}`;
    byFn.set(fn, (byFn.get(fn) ?? 0) + us);
    const f = cf.url ? path.basename(cf.url) : cf.functionName;
    byFile.set(f, (byFile.get(f) ?? 0) + us);
    total += us;
  }
  const show = (m, n) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, us]) => `  ${(us / 1000).toFixed(1).padStart(9)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`).join('\n');
  console.log(`${path.basename(file)}: ${(total / 1000).toFixed(0)} ms sampled\n top functions by self time:\n${show(byFn, TOP)}\n by file:\n${show(byFile, 15)}`);
}
