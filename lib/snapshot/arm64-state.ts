/**
 * The arm64 hypervisor component of a snapshot (hv.json): checks that a
 * decoded file has exactly the shape of Arm64PartitionState before anything
 * reaches the kernel, naming the first field that is wrong. Register ids
 * must be arm64 KVM_REG ids and each value as wide as its id says; the GIC's
 * per-SPI arrays as long as its interrupt count says. The kernel re-checks
 * values (and the restore refuses a register this host does not list).
 */
import type { Arm64GicCpuState, Arm64GicDistState, Arm64PartitionState, Arm64RegValue, Arm64VcpuState } from '../hv/arm64-state';
import { arm64RegBytes, iccApRegCount, isArm64RegId, spiWords } from '../hv/arm64-regs';
import { Shape } from './x86-state';

/** More than KVM lists today (~600 registers per vCPU with every ID register). */
const MAX_REGS = 4096;
const MAX_VCPUS = 255;
/** KVM_ARM_VCPU_INIT has 7 words of feature bits. */
const MAX_FEATURE_BIT = 7 * 32 - 1;

function reg(s: Shape, v: unknown, at: string): Arm64RegValue {
  const o = s.object(v, at);
  const id = s.big(o.id, `${at}.id`);
  if (!isArm64RegId(id)) s.fail(`${at}.id`, 'an arm64 KVM_REG id');
  const bytes = arm64RegBytes(id);
  if (bytes <= 8) {
    const value = s.big(o.value, `${at}.value`);
    if (bytes < 8 && value >= 1n << BigInt(8 * bytes)) s.fail(`${at}.value`, `a ${8 * bytes}-bit number (the id's width)`);
    return { id, value };
  }
  return { id, value: s.bytes(o.value, `${at}.value`, { min: bytes, max: bytes }) };
}

function vcpu(s: Shape, v: unknown, at: string): Arm64VcpuState {
  const o = s.object(v, at);
  const features = s.array(o.features, `${at}.features`, 32).map((f, i) => {
    const n = s.u32(f, `${at}.features[${i}]`);
    if (n > MAX_FEATURE_BIT) s.fail(`${at}.features[${i}]`, `a feature bit from 0 to ${MAX_FEATURE_BIT}`);
    return n;
  });
  const regs = s.array(o.regs, `${at}.regs`, MAX_REGS).map((r, i) => reg(s, r, `${at}.regs[${i}]`));
  const ids = new Set(regs.map((r) => r.id));
  if (ids.size !== regs.length) s.fail(`${at}.regs`, 'a list naming each register once');
  return { target: s.u32(o.target, `${at}.target`), features, mpState: s.u32(o.mpState, `${at}.mpState`), regs };
}

function words(s: Shape, v: unknown, at: string, n: number): number[] {
  const a = s.array(v, at, n).map((w, i) => s.u32(w, `${at}[${i}]`));
  if (a.length !== n) s.fail(at, `an array of ${n} 32-bit words`);
  return a;
}

function dist(s: Shape, v: unknown, at: string): Arm64GicDistState {
  const o = s.object(v, at);
  const nrIrqs = s.u32(o.nrIrqs, `${at}.nrIrqs`);
  // GICD_TYPER.ITLinesNumber: 32 * (N + 1), capped at 1020.
  if (nrIrqs < 64 || nrIrqs > 1020 || (nrIrqs % 32 !== 0 && nrIrqs !== 1020)) s.fail(`${at}.nrIrqs`, 'an interrupt count from 64 to 1020 in steps of 32');
  const bits = (k: string, per: number) => words(s, o[k], `${at}.${k}`, spiWords(nrIrqs, per));
  const irouter = s.array(o.irouter, `${at}.irouter`, nrIrqs - 32).map((r, i) => s.big(r, `${at}.irouter[${i}]`));
  if (irouter.length !== nrIrqs - 32) s.fail(`${at}.irouter`, `an array of ${nrIrqs - 32} routes (one per SPI)`);
  return {
    nrIrqs,
    iidr: s.u32(o.iidr, `${at}.iidr`),
    ctlr: s.u32(o.ctlr, `${at}.ctlr`),
    igroupr: bits('igroupr', 1),
    isenabler: bits('isenabler', 1),
    ispendr: bits('ispendr', 1),
    isactiver: bits('isactiver', 1),
    ipriorityr: bits('ipriorityr', 8),
    icfgr: bits('icfgr', 2),
    irouter,
    lineLevel: bits('lineLevel', 1),
  };
}

function gicCpu(s: Shape, v: unknown, at: string): Arm64GicCpuState {
  const o = s.object(v, at);
  const i = s.object(o.icc, `${at}.icc`);
  const big = (k: string) => s.big(i[k], `${at}.icc.${k}`);
  const ctlr = big('ctlr');
  const aps = iccApRegCount(ctlr);
  const ap = (k: string) => {
    const a = s.array(i[k], `${at}.icc.${k}`, 4).map((x, n) => s.big(x, `${at}.icc.${k}[${n}]`));
    if (a.length !== aps) s.fail(`${at}.icc.${k}`, `${aps} registers (the priority bits icc.ctlr gives)`);
    return a;
  };
  return {
    igroupr0: s.u32(o.igroupr0, `${at}.igroupr0`),
    isenabler0: s.u32(o.isenabler0, `${at}.isenabler0`),
    ispendr0: s.u32(o.ispendr0, `${at}.ispendr0`),
    isactiver0: s.u32(o.isactiver0, `${at}.isactiver0`),
    ipriorityr: words(s, o.ipriorityr, `${at}.ipriorityr`, 8),
    icfgr1: s.u32(o.icfgr1, `${at}.icfgr1`),
    lineLevel: s.u32(o.lineLevel, `${at}.lineLevel`),
    icc: { sre: big('sre'), ctlr, igrpen0: big('igrpen0'), igrpen1: big('igrpen1'), pmr: big('pmr'), bpr0: big('bpr0'), bpr1: big('bpr1'), ap0r: ap('ap0r'), ap1r: ap('ap1r') },
  };
}

/** A decoded hv.json as Arm64PartitionState, or a SnapshotError naming the first wrong field. */
export function checkArm64PartitionState(v: unknown, file: string): Arm64PartitionState {
  const s = new Shape(file);
  const o = s.object(v, 'the top level');
  if (o.arch !== 'aarch64') s.fail('arch', '"aarch64"');
  const vcpus = s.array(o.vcpus, 'vcpus', MAX_VCPUS).map((c, i) => vcpu(s, c, `vcpus[${i}]`));
  if (!vcpus.length) s.fail('vcpus', 'a non-empty array');
  const g = s.object(o.gic, 'gic');
  if (g.version !== 3) s.fail('gic.version', '3');
  const cpus = s.array(g.cpus, 'gic.cpus', MAX_VCPUS).map((c, i) => gicCpu(s, c, `gic.cpus[${i}]`));
  if (cpus.length !== vcpus.length) s.fail('gic.cpus', `one entry per vcpu (${vcpus.length})`);
  return { arch: 'aarch64', gic: { version: 3, dist: dist(s, g.dist, 'gic.dist'), cpus }, vcpus };
}
