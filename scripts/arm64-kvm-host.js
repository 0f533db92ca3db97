#!/usr/bin/env node
// The arm64 proof. On this (x86) machine: fetch the arm64 artifacts, cross-build
// the addon if build-arm64/ is missing, boot the emulated arm64 KVM host and run
// this same script inside it with --guest. Inside (--guest): boot Debian's arm64
// kernel with a busybox initramfs on nodevmm's arm64 backend for each vCPU count
// and check GUEST-INIT-OK and a PSCI SYSTEM_OFF power-off.
// Usage: node scripts/arm64-kvm-host.js [--vcpus 1,2] [--timeout SECONDS] [--quiet] [--json FILE]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const argv = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const vcpuCounts = flag('--vcpus', '1,2').split(',').map(Number);

async function guest() {
  // Inside the emulated arm64 host: boot through the real CLI, `nodevmm run`, as a user would.
  const os = require('node:os');
  const { spawnSync } = require('node:child_process');
  const { buildTestInitramfs, GUEST_MARKERS } = require('../dist/lib/initramfs/initramfs');
  const { findArm64Artifacts } = require('../dist/lib/testing/arm64-kvm-host');
  const a = findArm64Artifacts(flag('--cache'));
  if (!a) throw new Error('arm64 artifacts not visible inside the host');
  const initrdPath = path.join(os.tmpdir(), 'arm64-test-initramfs.cpio.gz');
  fs.writeFileSync(initrdPath, buildTestInitramfs({ busybox: new Uint8Array(fs.readFileSync(a.busybox)) }));
  let failed = false;
  for (const vcpus of vcpuCounts) {
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [path.join(root, 'bin', 'nodevmm.js'), 'run', '--kernel', a.image, '--initrd', initrdPath, '-p', String(vcpus), '-m', '512M', '--cmdline', 'quiet', '--com1', 'stdio'], { input: '', timeout: 600_000 });
    const out = r.stdout.toString('latin1');
    if (!argv.includes('--quiet')) process.stdout.write(out);
    const initOk = out.includes(GUEST_MARKERS.initOk);
    const nproc = /GUEST-NPROC=(\d+)/.exec(out)?.[1];
    // nodevmm run exits 0 only when the guest powered off (PSCI SYSTEM_OFF).
    const reason = r.status === 0 ? 'poweroff' : `exit status ${r.status}: ${r.stderr.toString().trim()}`;
    const result = { vcpus, reason, initOk, nproc: nproc ? Number(nproc) : null, runMs: Date.now() - t0 };
    console.log(`ARM64-PROOF ${JSON.stringify(result)}`);
    if (!initOk || reason !== 'poweroff' || Number(nproc) !== vcpus) failed = true;
  }
  process.exit(failed ? 1 : 0);
}

async function host() {
  const { ensureArm64Artifacts, runInArm64KvmHost } = require('../dist/lib/testing/arm64-kvm-host');
  const timings = {};
  let t = Date.now();
  const a = ensureArm64Artifacts({ onProgress: (m) => console.error(`[arm64-artifacts] ${m}`) });
  timings.artifactsMs = Date.now() - t;
  if (!fs.existsSync(path.join(root, 'build-arm64', 'Release', 'nodevmm.node'))) {
    t = Date.now();
    execFileSync('sh', [path.join(root, 'scripts', 'cross-build-arm64.sh')], { stdio: 'inherit' });
    timings.crossBuildMs = Date.now() - t;
  }
  const cmd = `node scripts/arm64-kvm-host.js --guest --cache /host${a.dir} --vcpus ${vcpuCounts.join(',')}${argv.includes('--quiet') ? ' --quiet' : ''}`;
  const r = await runInArm64KvmHost(cmd, {
    timeoutMs: Number(flag('--timeout', '1800')) * 1000,
    projectDir: root,
    artifacts: a,
    onConsole: (s) => process.stdout.write(s),
  });
  timings.hostBootMs = r.bootMs;
  timings.totalMs = r.durationMs;
  const proofs = [...r.consoleLog.matchAll(/ARM64-PROOF (\{.*\})/g)].map((m) => JSON.parse(m[1]));
  const summary = { exitCode: r.exitCode, timings, proofs };
  console.error(`[arm64-kvm-host] ${JSON.stringify(summary)}`);
  const json = flag('--json');
  if (json) fs.writeFileSync(json, JSON.stringify(summary, null, 2));
  process.exit(r.exitCode);
}

(argv.includes('--guest') ? guest() : host()).catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
