/**
 * The arm64 hypervisor component of a snapshot without KVM: an
 * Arm64PartitionState written into a folder reads back equal (64-bit
 * registers as numbers, 128-bit vregs as bytes, the GIC by name), a field of
 * the wrong shape or width is refused naming it, the GIC restore's order is
 * the documented one, and a snapshot of another architecture than this
 * host's is refused naming both.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { arm64CoreRegId, arm64SysRegId, describeArm64Reg, iccApRegCount, KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, KVM_REG_ARM_TIMER_CNT, MIDR_EL1, spiWords, vgicIrqCount, vgicMpidrField } from '../../../lib/hv/arm64-regs';
import type { Arm64PartitionState } from '../../../lib/hv/arm64-state';
import { restoreVgicV3, saveVgicV3, type VgicAttrs } from '../../../lib/hv/kvm-arm64-vgic';
import { checkArm64PartitionState, readSnapshotFolder, stateFromJson, stateToJson, writeSnapshotFolder, type SnapshotParts } from '../../../lib/snapshot';
import { loadVmSnapshot } from '../../../lib/vm/snapshot';
import { tempDir } from '../../temp-dir';

const KVM_REG_ARM64 = 0x6000_0000_0000_0000n;
const U32 = 0x0020_0000_0000_0000n;
const U128 = 0x0040_0000_0000_0000n;
const CORE = 0x0010n << 16n;
/** struct kvm_regs: fp_regs.vregs[0] at byte 36 * 8 + 16 (after regs, sp_el1, elr_el1, spsr[5]: 0x220), fpsr after the 32 vregs. */
const VREG0 = KVM_REG_ARM64 | U128 | CORE | BigInt(0x220 / 4);
const FPSR = KVM_REG_ARM64 | U32 | CORE | BigInt((0x220 + 32 * 16) / 4);

function sampleState(): Arm64PartitionState {
  const nrIrqs = 64;
  const words = (bits: number, fill: number) => Array.from({ length: spiWords(nrIrqs, bits) }, (_, i) => (fill + i) >>> 0);
  const vreg = new Uint8Array(16).map((_, i) => i + 1);
  return {
    arch: 'aarch64',
    vcpus: [
      {
        target: 5,
        features: [2],
        mpState: 0,
        regs: [
          { id: arm64CoreRegId('x0'), value: 0xffff_ffff_ffff_ffffn },
          { id: arm64CoreRegId('pc'), value: 0x4000_0040n },
          { id: VREG0, value: vreg },
          { id: FPSR, value: 0x0800_0000n },
          { id: MIDR_EL1, value: 0x410f_d083n },
          { id: KVM_REG_ARM_TIMER_CNT, value: 123_456_789n },
        ],
      },
    ],
    gic: {
      version: 3,
      dist: { nrIrqs, iidr: 0x0300_043b, ctlr: 0x12, igroupr: words(1, 0xffff_ffff), isenabler: words(1, 0x100), ispendr: words(1, 0x200), isactiver: words(1, 0), ipriorityr: words(8, 0xa0a0_a0a0), icfgr: words(2, 0), irouter: Array.from({ length: nrIrqs - 32 }, (_, i) => BigInt(i % 2)), lineLevel: words(1, 1) },
      cpus: [
        {
          igroupr0: 0xffff_ffff,
          isenabler0: 0x0800_0000,
          ispendr0: 0,
          isactiver0: 0,
          ipriorityr: [0, 0, 0, 0, 0, 0, 0x8000_0000, 0],
          icfgr1: 0,
          lineLevel: 0,
          // ICC_CTLR_EL1.PRIbits = 4: five priority bits, one AP0R and one AP1R.
          icc: { sre: 7n, ctlr: 0x400n, igrpen0: 0n, igrpen1: 1n, pmr: 0xf0n, bpr0: 2n, bpr1: 3n, ap0r: [0n], ap1r: [0n] },
        },
      ],
    },
  };
}

function parts(state: Arm64PartitionState = sampleState()): SnapshotParts {
  return {
    description: { nodevmmVersion: '0.1.0', arch: 'aarch64', host: { hypervisor: 'kvm', cpuModel: 'test cpu', cpuVendor: 'MIDR_EL1 0x410fd083' }, config: { arch: 'aarch64', kernel: 'Image', memory: 64 * 2 ** 20, vcpus: 1 } },
    hypervisor: state,
    devices: { machine: { arch: 'aarch64' }, vm: { agentReady: [] } },
    memory: [{ gpa: 2 ** 30, size: 4096 }],
    writeMemory: (fds) => fs.ftruncateSync(fds[0]!, 4096),
  };
}

/** hv.json of `state` after `edit` on its JSON form, checked. */
function checkEdited(edit: (j: any) => void, state = sampleState()): () => Arm64PartitionState {
  const j = JSON.parse(stateToJson(state));
  edit(j);
  return () => checkArm64PartitionState(stateFromJson(Buffer.from(JSON.stringify(j)), 'hv.json'), 'hv.json');
}

test('an arm64 snapshot reads back equal: registers by id and width, the GIC by name', async (t) => {
  const dir = path.join(tempDir(t), 'snap');
  const m = await writeSnapshotFolder(dir, parts());
  t.is(m.arch, 'aarch64');
  t.is(m.guestCpuid, undefined);
  const back = await readSnapshotFolder(dir, { verifyMemory: true });
  t.deepEqual(back.hypervisor, sampleState());
  // Wide registers are bytes in the file, 64-bit ones tagged numbers.
  const hv = JSON.parse(fs.readFileSync(path.join(dir, 'hv.json'), 'utf8'));
  t.deepEqual(hv.vcpus[0].regs[2].value, { $bytes: Buffer.from(new Uint8Array(16).map((_, i) => i + 1)).toString('base64') });
  t.deepEqual(hv.vcpus[0].regs[0].value, { $bigint: '0xffffffffffffffff' });
});

test('an arm64 hv.json of the wrong shape is refused naming the field', (t) => {
  const cases: Array<[(j: any) => void, RegExp]> = [
    [(j) => (j.vcpus[0].regs[3].value = { $bigint: '0x100000000' }), /vcpus\[0\]\.regs\[3\]\.value must be a 32-bit number \(the id's width\)/],
    [(j) => (j.vcpus[0].regs[2].value = { $bigint: '0x1' }), /vcpus\[0\]\.regs\[2\]\.value must be bytes/],
    [(j) => (j.vcpus[0].regs[2].value = { $bytes: Buffer.alloc(8).toString('base64') }), /vcpus\[0\]\.regs\[2\]\.value must be 16 bytes/],
    [(j) => (j.vcpus[0].regs[0].id = { $bigint: '0x4030000000100000' }), /vcpus\[0\]\.regs\[0\]\.id must be an arm64 KVM_REG id/],
    [(j) => j.vcpus[0].regs.push(j.vcpus[0].regs[1]), /vcpus\[0\]\.regs must be a list naming each register once/],
    [(j) => (j.vcpus[0].features = [300]), /vcpus\[0\]\.features\[0\] must be a feature bit from 0 to 223/],
    [(j) => j.gic.dist.irouter.pop(), /gic\.dist\.irouter must be an array of 32 routes/],
    [(j) => j.gic.dist.ipriorityr.pop(), /gic\.dist\.ipriorityr must be an array of 8 32-bit words/],
    [(j) => (j.gic.dist.nrIrqs = 65), /gic\.dist\.nrIrqs must be an interrupt count from 64 to 1020/],
    [(j) => (j.gic.cpus[0].icc.ap0r = []), /gic\.cpus\[0\]\.icc\.ap0r must be 1 registers/],
    [(j) => j.gic.cpus.push(j.gic.cpus[0]), /gic\.cpus must be one entry per vcpu \(1\)/],
    [(j) => (j.gic.version = 2), /gic\.version must be 3/],
    [(j) => (j.arch = 'x86_64'), /arch must be "aarch64"/],
  ];
  for (const [edit, message] of cases) t.throws(checkEdited(edit), { name: 'SnapshotError', message }, String(message));
  t.notThrows(checkEdited(() => {}));
});

test('register ids, vgic attributes and counts in words', (t) => {
  t.is(describeArm64Reg(arm64CoreRegId('x7')), 'x7');
  t.is(describeArm64Reg(arm64CoreRegId('pstate')), 'pstate');
  t.is(describeArm64Reg(VREG0), 'core register at byte 544 of struct kvm_regs');
  t.is(describeArm64Reg(arm64SysRegId(3, 0, 1, 0, 0)), 'S3_0_C1_C0_0');
  t.is(describeArm64Reg(KVM_REG_ARM_TIMER_CNT), 'KVM_REG_ARM_TIMER_CNT');
  // MPIDR_EL1 Aff3 (bits 39-32) packs next to Aff2-0 in the attribute's upper half.
  t.is(vgicMpidrField(0x0000_0012_0003_0201n), 0x1203_0201n << 32n);
  t.is(vgicMpidrField(0x8000_0001n), 1n << 32n);
  t.is(vgicIrqCount(0x7), 256);
  t.is(vgicIrqCount(0x1f), 1020);
  t.deepEqual([4, 5, 6].map((b) => iccApRegCount(BigInt(b << 8))), [1, 2, 4]);
});

/** A VGIC register file keyed by group and attribute, recording every access in order. */
function recordingGic(typer: number): VgicAttrs & { regs: Map<string, bigint>; writes: string[] } {
  const regs = new Map<string, bigint>();
  const writes: string[] = [];
  const key = (g: number, a: bigint) => `${g}:${a.toString(16)}`;
  regs.set(key(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 4n), BigInt(typer));
  return {
    regs,
    writes,
    get: (g, a) => regs.get(key(g, a)) ?? (g === KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS && (a & 0xffffn) === 0x6664n ? 0x400n : 0n),
    set: (g, a, v) => {
      writes.push(key(g, a));
      regs.set(key(g, a), v);
    },
  };
}

test('the gic restore writes IIDR first, trigger modes before levels before pending bits, clears before sets, the CPU interface last', (t) => {
  const saved = sampleState().gic;
  const g = recordingGic(1); // 64 interrupts
  restoreVgicV3(g, [0n], saved);
  const at = (group: number, attr: bigint) => g.writes.indexOf(`${group}:${attr.toString(16)}`);
  const D = KVM_DEV_ARM_VGIC_GRP_DIST_REGS;
  const R = (off: number) => at(KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, BigInt(off));
  t.is(at(D, 0x8n), 0);
  t.is(at(D, 0x0n), 1);
  t.true(at(D, 0xc08n) < at(KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, 32n) && at(KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, 32n) < at(D, 0x204n));
  t.true(at(D, 0x184n) < at(D, 0x104n) && at(D, 0x384n) < at(D, 0x304n));
  t.true(R(0x10c04) < at(KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, 0n) && R(0x10180) < R(0x10100));
  const icc = g.writes.filter((w) => w.startsWith(`${KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS}:`));
  t.deepEqual(icc.slice(0, 2), [`6:${(0xc665).toString(16)}`, `6:${(0xc664).toString(16)}`]); // ICC_SRE_EL1, ICC_CTLR_EL1
  t.true(g.writes.indexOf(icc[0]!) > at(D, 0x104n));
  // ICENABLER gets the complement: bits the saved state lacks are cleared.
  t.is(g.regs.get(`${D}:184`), BigInt(~saved.dist.isenabler[0]! >>> 0));
  // What a save reads back from the register file is what was restored.
  const again = saveVgicV3(g, [0n]);
  t.deepEqual({ ...again.dist, ctlr: 0, iidr: 0 }, { ...saved.dist, ctlr: 0, iidr: 0 });
  t.deepEqual(again.cpus, saved.cpus);
  t.throws(() => restoreVgicV3(recordingGic(7), [0n], saved), { message: /the snapshot's GIC has 64 interrupts and this VM's 256/ });
});

test('a snapshot of another architecture than the host runs is refused naming both', async (t) => {
  const dir = path.join(tempDir(t), 'snap');
  await writeSnapshotFolder(dir, parts());
  const here = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
  if (here === 'aarch64') return t.pass('this host runs aarch64 vms: the x86_64 case is the one that applies, and needs an x86 snapshot');
  await t.throwsAsync(loadVmSnapshot(dir), { name: 'SnapshotError', message: /the snapshot is of an aarch64 vm and this host runs x86_64 vms: restore it on an aarch64 host/ });
  // The manifest's arch decides: one rewritten to claim x86_64 still holds an arm64 hv.json, refused by its shape.
  const mp = path.join(dir, 'manifest.json');
  const m = JSON.parse(fs.readFileSync(mp, 'utf8'));
  m.arch = 'x86_64';
  fs.writeFileSync(mp, JSON.stringify(m));
  await t.throwsAsync(readSnapshotFolder(dir), { name: 'SnapshotError', message: /hv\.json: arch must be "x86_64"/ });
});
