#!/usr/bin/env node
// Runs a shell command inside the emulated KVM host (QEMU TCG + SVM, real kvm_amd) and exits with its status.
// Usage: node scripts/kvm-host.js [--timeout SECONDS] [--quiet] [--smp N] [--memory MiB] [--tcg-single] -- <command...>
// The command runs with /bin/sh in the current directory; this machine's / is its (read-only) root.
'use strict';
const { runInKvmHost } = require('../dist/lib/testing/kvm-host');
const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');

async function main() {
  const argv = process.argv.slice(2);
  const dash = argv.indexOf('--');
  const flags = dash < 0 ? [] : argv.slice(0, dash);
  const command = (dash < 0 ? argv : argv.slice(dash + 1)).join(' ');
  if (!command) {
    console.error('usage: node scripts/kvm-host.js [--timeout SECONDS] [--quiet] [--smp N] [--memory MiB] [--tcg-single] -- <command...>');
    process.exit(2);
  }
  const t = flags.indexOf('--timeout');
  const timeoutMs = (t >= 0 ? Number(flags[t + 1]) : 600) * 1000;
  const quiet = flags.includes('--quiet');
  const num = (name) => {
    const i = flags.indexOf(name);
    if (i < 0) return undefined;
    const v = Number(flags[i + 1]);
    if (!Number.isInteger(v) || v < 1) {
      console.error(`kvm-host: ${name} ${flags[i + 1]} is not a positive integer`);
      process.exit(2);
    }
    return v;
  };
  const smp = num('--smp');
  const memoryMiB = num('--memory');
  const tcgThread = flags.includes('--tcg-single') ? 'single' : 'multi';
  const artifacts = await ensureGuestArtifacts({ arch: 'x86_64', onProgress: (m) => console.error(`[guest-artifacts] ${m}`) });
  const r = await runInKvmHost(command, {
    timeoutMs,
    cwd: process.cwd(),
    artifacts,
    smp,
    memoryMiB,
    tcgThread,
    onConsole: quiet ? undefined : (text) => process.stdout.write(text),
  });
  console.error(`[kvm-host] exit ${r.exitCode}, host ready in ${(r.bootMs / 1000).toFixed(1)} s, total ${(r.durationMs / 1000).toFixed(1)} s`);
  process.exit(r.exitCode);
}

main().catch((err) => {
  console.error(`${err.code ? err.code + ': ' : ''}${err.message}`);
  process.exit(1);
});
