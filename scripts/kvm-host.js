#!/usr/bin/env node
// Runs a shell command inside the emulated KVM host (QEMU TCG + SVM, real kvm_amd) and exits with its status.
// Usage: node scripts/kvm-host.js [--timeout SECONDS] [--retries N] [--quiet] [--smp N] [--memory MiB] [--tcg-single] [--monitor SOCKET] -- <command...>
// The command runs with /bin/sh in the current directory; this machine's / is its (read-only) root.
//
// --timeout bounds the whole run, retries included (default 600 s). The host gives up at once
// when its kernel panics or wedges (a soft lockup of a minute, a repeated RCU stall:
// lib/testing/host-watchdog.ts), when QEMU freezes, or when it never boots; the command then
// runs again in a fresh host, up to --retries times (default 2), while at least
// MIN_ATTEMPT_S of the time limit is left. The last line counts the retries.
'use strict';
const { runInKvmHost, KVM_HOST_FAILURES: HOST_FAILURES } = require('../dist/lib/testing/kvm-host');
const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');

/** No retry starts with less time than this left (a host takes 1-2 min to boot here). */
const MIN_ATTEMPT_S = 180;
const USAGE = 'usage: node scripts/kvm-host.js [--timeout SECONDS] [--retries N] [--quiet] [--smp N] [--memory MiB] [--tcg-single] [--monitor SOCKET] -- <command...>';

async function main() {
  const argv = process.argv.slice(2);
  const dash = argv.indexOf('--');
  const flags = dash < 0 ? [] : argv.slice(0, dash);
  const command = (dash < 0 ? argv : argv.slice(dash + 1)).join(' ');
  if (!command) {
    console.error(USAGE);
    process.exit(2);
  }
  const num = (name, min) => {
    const i = flags.indexOf(name);
    if (i < 0) return undefined;
    const v = Number(flags[i + 1]);
    if (!Number.isInteger(v) || v < min) {
      console.error(`kvm-host: ${name} ${flags[i + 1]} is not a whole number of at least ${min}`);
      process.exit(2);
    }
    return v;
  };
  const timeoutMs = (num('--timeout', 1) ?? 600) * 1000;
  const retries = num('--retries', 0) ?? 2;
  const quiet = flags.includes('--quiet');
  const smp = num('--smp', 1);
  const memoryMiB = num('--memory', 1);
  const tcgThread = flags.includes('--tcg-single') ? 'single' : 'multi';
  // QEMU's monitor on a unix socket: `info registers` shows where a wedged host's CPU is.
  const mi = flags.indexOf('--monitor');
  const monitorSocket = mi < 0 ? undefined : flags[mi + 1];
  if (mi >= 0 && (!monitorSocket || monitorSocket.startsWith('--'))) {
    console.error(`kvm-host: --monitor needs the path of a unix socket, not ${monitorSocket === undefined ? 'nothing' : JSON.stringify(monitorSocket)}`);
    process.exit(2);
  }
  const artifacts = await ensureGuestArtifacts({ arch: 'x86_64', onProgress: (m) => console.error(`[guest-artifacts] ${m}`) });
  const started = Date.now();
  const failures = [];
  for (let attempt = 0; ; attempt++) {
    const remaining = timeoutMs - (Date.now() - started);
    try {
      const r = await runInKvmHost(command, {
        timeoutMs: remaining,
        cwd: process.cwd(),
        artifacts,
        smp,
        memoryMiB,
        tcgThread,
        monitorSocket,
        onConsole: quiet ? undefined : (text) => process.stdout.write(text),
      });
      console.error(`[kvm-host] exit ${r.exitCode}, host ready in ${(r.bootMs / 1000).toFixed(1)} s, total ${((Date.now() - started) / 1000).toFixed(1)} s, retries ${attempt}${failures.length ? ` (${failures.join('; ')})` : ''}`);
      process.exit(r.exitCode);
    } catch (err) {
      const first = `${err.code ? err.code + ': ' : ''}${err.message.split('\n')[0].replace(/; last \d+ console lines:$/, '')}`;
      const left = (timeoutMs - (Date.now() - started)) / 1000;
      if (!HOST_FAILURES.has(err.code) || attempt >= retries || left < MIN_ATTEMPT_S) {
        console.error(`${err.code ? err.code + ': ' : ''}${err.message}`);
        console.error(`[kvm-host] failed after ${((Date.now() - started) / 1000).toFixed(1)} s, retries ${attempt}${failures.length ? ` (${failures.join('; ')})` : ''}`);
        process.exit(1);
      }
      failures.push(first);
      console.error(`[kvm-host] ${first}; running the command again in a fresh host (retry ${attempt + 1} of ${retries}, ${left.toFixed(0)} s left)`);
    }
  }
}

main().catch((err) => {
  console.error(`${err.code ? err.code + ': ' : ''}${err.message}`);
  process.exit(1);
});
