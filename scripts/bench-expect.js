#!/usr/bin/env node
'use strict';
/**
 * expect() cost with output streaming in (no VM; lib/vm/serial-port.ts):
 * MIB MiB of guest output in 4 KiB deliveries, with no expect() pending (the
 * baseline: logging only), with a string pattern pending and with a RegExp
 * pending (default 64 KiB match window), each matched at the very end.
 * Interleaved rounds, medians, ratios to the baseline, and the characters
 * the matcher scanned per byte of output.
 *
 *   node scripts/bench-expect.js [--mib 4] [--rounds 5]
 */
const { SerialPort } = require('../dist/lib/vm/serial-port');
const { numberOption } = require('./lib/options');

const MIB = numberOption('--mib', 4);
const ROUNDS = numberOption('--rounds', 5);
const CHUNK = 4096;
const filler = Buffer.from(('z'.repeat(63) + '\n').repeat(CHUNK / 64), 'latin1');

async function once(kind) {
  const port = new SerialPort('com1', 64 * 1024 * 1024);
  const t0 = process.hrtime.bigint();
  const pending = kind === 'none' ? undefined : port.expect(kind === 'string' ? 'END-OF-OUTPUT' : /END-OF-(\w+)/, { timeoutMs: 600_000 });
  for (let sent = 0; sent < MIB * 1024 * 1024; sent += CHUNK) port.deliver(filler);
  port.deliver(Buffer.from('END-OF-OUTPUT\n'));
  if (pending) await pending;
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, scannedPerByte: port.expectScannedChars / port.totalBytes };
}

async function main() {
  const kinds = ['none', 'string', 'regexp'];
  const rows = Object.fromEntries(kinds.map((k) => [k, []]));
  for (let r = 0; r < ROUNDS; r++) for (const k of kinds) rows[k].push(await once(k));
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const base = median(rows.none.map((x) => x.ms));
  console.log(`expect() with ${MIB} MiB of output in ${CHUNK}-byte deliveries, ${ROUNDS} interleaved rounds, medians:`);
  for (const k of kinds) {
    const ms = median(rows[k].map((x) => x.ms));
    console.log(`  ${k === 'none' ? 'no expect pending (baseline)' : `${k} pattern pending`}: ${ms.toFixed(1)} ms, ${(ms / base).toFixed(2)}x, ${median(rows[k].map((x) => x.scannedPerByte)).toFixed(2)} chars scanned per byte`);
  }
}

main();
