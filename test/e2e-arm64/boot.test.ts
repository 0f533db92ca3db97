import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findArm64Artifacts, runInArm64KvmHost } from '../../lib/testing/arm64-kvm-host';

// The arm64 proof: inside an emulated arm64 KVM host (QEMU TCG, virt with EL2),
// nodevmm's arm64 backend boots Debian's arm64 kernel with a busybox initramfs
// to GUEST-INIT-OK with 1 and 2 vCPUs, and the guest powers off through PSCI
// SYSTEM_OFF. Needs qemu-system-aarch64, the cross-built addon
// (scripts/cross-build-arm64.sh) and the artifacts (node scripts/arm64-kvm-host.js
// fetches them once); skipped with the reason when one is missing.
const root = path.resolve(__dirname, '..', '..', '..');
const artifacts = findArm64Artifacts();
const addon = path.join(root, 'build-arm64', 'Release', 'nodevmm.node');
const missing = [
  spawnSync('qemu-system-aarch64', ['--version']).status === 0 ? undefined : 'qemu-system-aarch64',
  fs.existsSync(addon) ? undefined : 'build-arm64 (sh scripts/cross-build-arm64.sh)',
  artifacts ? undefined : 'arm64 artifacts (node scripts/arm64-kvm-host.js)',
].filter(Boolean);
const maybe = missing.length ? test.skip : test;
if (missing.length) console.log(`e2e-arm64 skipped: missing ${missing.join(', ')}`);

interface Proof {
  vcpus: number;
  reason: string;
  initOk: boolean;
  nproc: number | null;
  runMs: number;
}

maybe('Debian arm64 boots to GUEST-INIT-OK with 1 and 2 vCPUs and powers off through PSCI', async (t) => {
  const r = await runInArm64KvmHost(`node scripts/arm64-kvm-host.js --guest --quiet --cache /host${artifacts!.dir} --vcpus 1,2`, {
    timeoutMs: 600_000,
    projectDir: root,
    artifacts: artifacts!,
  });
  const proofs: Proof[] = [...r.consoleLog.matchAll(/ARM64-PROOF (\{.*\})/g)].map((m) => JSON.parse(m[1]!) as Proof);
  t.log(`host ready in ${(r.bootMs / 1000).toFixed(1)} s, total ${(r.durationMs / 1000).toFixed(1)} s; ${proofs.map((p) => `${p.vcpus} vCPU: ${(p.runMs / 1000).toFixed(1)} s`).join(', ')}`);
  t.is(r.exitCode, 0, r.consoleLog.slice(-3000));
  t.deepEqual(
    proofs.map((p) => ({ vcpus: p.vcpus, reason: p.reason, initOk: p.initOk, nproc: p.nproc })),
    [1, 2].map((n) => ({ vcpus: n, reason: 'poweroff', initOk: true, nproc: n })),
  );
});
