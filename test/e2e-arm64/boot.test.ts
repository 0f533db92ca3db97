import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findArm64Artifacts, runInArm64KvmHost } from '../../lib/testing/arm64-kvm-host';

// The arm64 proof: inside an emulated arm64 KVM host (QEMU TCG, virt with EL2),
// nodevmm's arm64 backend boots Debian's arm64 kernel with a busybox initramfs
// to GUEST-INIT-OK with 1 and 2 vCPUs, and the guest powers off through PSCI
// SYSTEM_OFF; a third boot gives the guest a virtio-blk disk, virtio-rng and a
// virtio console on virtio-mmio slots it finds in the device tree. Needs
// qemu-system-aarch64, the cross-built addon (scripts/cross-build-arm64.sh) and
// the artifacts (node scripts/arm64-kvm-host.js fetches them once); skipped with
// the reason when one is missing.
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
  insmodFailed: string[];
  runMs: number;
}

interface VirtioProof {
  reason: string;
  hvc0: boolean;
  vdaSectors: string | null;
  vdaHead: string | null;
  hwrngCurrent: string | null;
  hwrng: string | null;
  irqs: string[];
  written: string;
  runMs: number;
}

maybe('Debian arm64 boots to GUEST-INIT-OK with 1 and 2 vCPUs, powers off through PSCI, and uses virtio-blk, virtio-rng and hvc0 from the device tree', async (t) => {
  const r = await runInArm64KvmHost(`node scripts/arm64-kvm-host.js --guest --quiet --cache /host${artifacts!.dir} --vcpus 1,2`, {
    timeoutMs: 600_000,
    projectDir: root,
    artifacts: artifacts!,
  });
  const proofs: Proof[] = [...r.consoleLog.matchAll(/ARM64-PROOF (\{.*\})/g)].map((m) => JSON.parse(m[1]!) as Proof);
  const virtio = [...r.consoleLog.matchAll(/ARM64-VIRTIO-PROOF (\{.*\})/g)].map((m) => JSON.parse(m[1]!) as VirtioProof);
  t.log(`host ready in ${(r.bootMs / 1000).toFixed(1)} s, total ${(r.durationMs / 1000).toFixed(1)} s; ${proofs.map((p) => `${p.vcpus} vCPU: ${(p.runMs / 1000).toFixed(1)} s`).join(', ')}, virtio: ${virtio.map((v) => `${(v.runMs / 1000).toFixed(1)} s`).join('')}`);
  t.is(r.exitCode, 0, r.consoleLog.slice(-3000));
  t.deepEqual(
    proofs.map((p) => ({ vcpus: p.vcpus, reason: p.reason, initOk: p.initOk, nproc: p.nproc, insmodFailed: p.insmodFailed })),
    [1, 2].map((n) => ({ vcpus: n, reason: 'poweroff', initOk: true, nproc: n, insmodFailed: [] })),
  );
  t.is(virtio.length, 1, r.consoleLog.slice(-3000));
  const v = virtio[0]!;
  t.log(`virtio proof: ${JSON.stringify(v)}`);
  // The guest's findings reached us through hvc0; it read the host's pattern from sector 0 of an
  // 8 MiB image, and the image holds what it wrote to sector 2048 after nodevmm exited.
  t.like(v, { reason: 'poweroff', hvc0: true, vdaSectors: String((8 * 2 ** 20) / 512), vdaHead: 'host-pattern-0123456789', written: 'written-by-the-guest' });
  t.regex(v.hwrngCurrent ?? '', /^virtio_rng/);
  t.regex(v.hwrng ?? '', /^[0-9a-f]{64}$/);
  t.not(v.hwrng, '0'.repeat(64));
  // disk, rng, console on SPIs 16-18 (INTIDs 48-50), each configured edge-rising from the device tree.
  t.deepEqual(v.irqs.map((i) => i.split(':').slice(0, 2).join(':')).sort(), ['48:Edge', '49:Edge', '50:Edge']);
});
