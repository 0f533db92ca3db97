#!/usr/bin/env node
'use strict';
/**
 * `npm start`: boot the default guest (Debian 12's kernel, a busybox shell)
 * to an interactive shell. Fetches and caches the guest on first use with
 * progress. Where /dev/kvm cannot run unmodified Linux (KVM-PVM), it says so
 * in one line and boots the guest inside the emulated KVM host instead.
 * Extra arguments go to `nodevmm run`, e.g. `npm start -- -p 2 -m 1G`.
 * Ctrl-A x quits the guest.
 */
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const HOST_ATTEMPTS = 3;

/** Debian packages `npm start` needs on this machine; installed with apt when missing and we are root. */
function ensureHostPackages(needQemu) {
  const want = [['xz', 'xz-utils'], ['dpkg-deb', 'dpkg']];
  if (needQemu) want.push(['qemu-system-x86_64', 'qemu-system-x86']);
  const missing = want.filter(([bin]) => spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0).map(([, pkg]) => pkg);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0 || spawnSync('sh', ['-c', 'command -v apt-get']).status !== 0) {
    throw new Error(`missing ${missing.join(', ')}: install them (apt-get install ${missing.join(' ')}) and run npm start again`);
  }
  process.stderr.write(`nodevmm: installing ${missing.join(', ')} with apt-get\n`);
  spawnSync('apt-get', ['update', '-q'], { stdio: 'inherit' });
  const r = spawnSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.status !== 0) throw new Error(`apt-get install ${missing.join(' ')} failed`);
}

async function main() {
  const { detectKvm: detect } = require('../dist/lib/testing/detect');
  ensureHostPackages(detect().kind === 'pvm');
  const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');
  const { detectKvm } = require('../dist/lib/testing/detect');
  const a = await ensureGuestArtifacts({ arch: 'x86_64', onProgress: (m) => process.stderr.write(`nodevmm: ${m}\n`) });
  const extra = process.argv.slice(2);
  const runArgs = [path.join(root, 'bin', 'nodevmm.js'), 'run', '--kernel', a.vmlinuz, '--initrd', a.shellInitramfs, '-m', '512M', ...extra];
  const kvm = detectKvm();
  if (kvm.kind === 'real') {
    const r = spawnSync(process.execPath, runArgs, { stdio: 'inherit' });
    return r.status ?? 1;
  }
  if (kvm.kind === 'none') {
    process.stderr.write(`nodevmm: ${kvm.reason}; nodevmm needs KVM (load kvm-intel/kvm-amd or enable nested virtualization)\n`);
    return 2;
  }
  process.stderr.write(`nodevmm: ${kvm.reason}, so the guest boots inside an emulated KVM host (QEMU TCG with SVM) instead; Ctrl-A x quits\n`);
  const { runInKvmHost, KVM_HOST_FAILURES } = require('../dist/lib/testing/kvm-host');
  const tty = process.stdin.isTTY;
  if (tty) process.stdin.setRawMode(true);
  process.stdin.resume();
  const quoted = [process.execPath, ...runArgs].map((s) => `'${s.replace(/'/g, `'\\''`)}'`).join(' ');
  try {
    // The emulated host's own kernel now and then wedges or dies while it boots (TCG with nested
    // SVM; soft lockups and RCU stalls before our guest even starts). Such a host is replaced, up
    // to twice, as long as the guest had not started yet; a session already in the guest is not.
    for (let attempt = 1; ; attempt++) {
      let guestStarted = false;
      try {
        const r = await runInKvmHost(quoted, {
          cwd: root,
          timeoutMs: 24 * 3600 * 1000,
          artifacts: a,
          input: process.stdin,
          onConsole: (text) => {
            if (text.includes('Run /init') || text.includes('GUEST-INIT-OK')) guestStarted = true;
            process.stdout.write(text);
          },
        });
        return r.exitCode;
      } catch (e) {
        if (guestStarted || attempt >= HOST_ATTEMPTS || !KVM_HOST_FAILURES.has(e.code)) throw e;
        process.stderr.write(`\nnodevmm: ${e.message.split('\n')[0]}\nnodevmm: the emulated host failed before the guest started; starting a fresh one (attempt ${attempt + 1} of ${HOST_ATTEMPTS})\n`);
      }
    }
  } finally {
    if (tty) process.stdin.setRawMode(false);
    process.stdin.pause();
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`nodevmm: ${e.message}\n`);
    process.exit(1);
  },
);
