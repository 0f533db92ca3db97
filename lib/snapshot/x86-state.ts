/**
 * The x86 hypervisor component of a snapshot (hv.json): checks that a
 * decoded file has exactly the shape of X86PartitionState before anything
 * reaches the kernel, naming the first field that is wrong. The kernel
 * re-checks the values (KVM refuses an invalid segment or MSR); this keeps
 * a damaged file from turning into a TypeError deep in the restore.
 */
import { SnapshotError } from '../errors';
import type { X86CpuidEntry, X86PartitionState, X86Segment, X86VcpuState, X86VmState } from '../hv/x86-state';

/** Field checks that throw one sentence naming the file and the field. */
class Shape {
  constructor(readonly file: string) {}
  fail(at: string, what: string): never {
    throw new SnapshotError(`${this.file}: ${at} must be ${what}`, { file: this.file, field: at });
  }
  object(v: unknown, at: string): Record<string, unknown> {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) this.fail(at, 'an object');
    return v as Record<string, unknown>;
  }
  array(v: unknown, at: string, max: number): unknown[] {
    if (!Array.isArray(v)) this.fail(at, 'an array');
    if (v.length > max) this.fail(at, `an array of at most ${max} entries`);
    return v;
  }
  u32(v: unknown, at: string): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff) this.fail(at, 'an integer from 0 to 2^32-1');
    return v;
  }
  big(v: unknown, at: string): bigint {
    if (typeof v !== 'bigint' || v < 0n || v >= 1n << 64n) this.fail(at, 'a 64-bit number');
    return v;
  }
  bytes(v: unknown, at: string, size?: { min: number; max: number }): Uint8Array {
    if (!(v instanceof Uint8Array)) this.fail(at, 'bytes');
    if (size && (v.length < size.min || v.length > size.max)) this.fail(at, size.min === size.max ? `${size.min} bytes` : `${size.min} to ${size.max} bytes`);
    return v;
  }
}

const REGS = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;
const SEGS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const SEG_FIELDS = ['limit', 'selector', 'type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable'] as const;
const CRS = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;
const CPUID_FIELDS = ['function', 'index', 'flags', 'eax', 'ebx', 'ecx', 'edx'] as const;

/** Sizes of the kernel structs, as this header generation has them (an XSAVE area grows with XSAVE2). */
const SIZES = { lapic: 1024, debugRegs: 128, irqchip: 520, pit: 112, xsaveMin: 4096, xsaveMax: 1 << 20 };
/** More than KVM's limits (KVM_MAX_CPUID_ENTRIES 256, the MSR index list is ~100 today). */
const MAX_ENTRIES = 4096;
const MAX_VCPUS = 255;

function segment(s: Shape, v: unknown, at: string): X86Segment {
  const o = s.object(v, at);
  const seg = { base: s.big(o.base, `${at}.base`) } as X86Segment;
  for (const f of SEG_FIELDS) seg[f] = s.u32(o[f], `${at}.${f}`);
  return seg;
}

export function cpuidEntries(s: Shape, v: unknown, at: string): X86CpuidEntry[] {
  return s.array(v, at, MAX_ENTRIES).map((e, i) => {
    const o = s.object(e, `${at}[${i}]`);
    const entry = {} as X86CpuidEntry;
    for (const f of CPUID_FIELDS) entry[f] = s.u32(o[f], `${at}[${i}].${f}`);
    return entry;
  });
}

function vcpu(s: Shape, v: unknown, at: string): X86VcpuState {
  const o = s.object(v, at);
  const r = s.object(o.regs, `${at}.regs`);
  const regs = {} as X86VcpuState['regs'];
  for (const k of REGS) regs[k] = s.big(r[k], `${at}.regs.${k}`);
  const sr = s.object(o.sregs, `${at}.sregs`);
  const sregs = {} as X86VcpuState['sregs'];
  for (const k of SEGS) sregs[k] = segment(s, sr[k], `${at}.sregs.${k}`);
  for (const k of ['gdt', 'idt'] as const) {
    const d = s.object(sr[k], `${at}.sregs.${k}`);
    sregs[k] = { base: s.big(d.base, `${at}.sregs.${k}.base`), limit: s.u32(d.limit, `${at}.sregs.${k}.limit`) };
  }
  for (const k of CRS) sregs[k] = s.big(sr[k], `${at}.sregs.${k}`);
  return {
    mpState: s.u32(o.mpState, `${at}.mpState`),
    regs,
    sregs,
    xsave: s.bytes(o.xsave, `${at}.xsave`, { min: SIZES.xsaveMin, max: SIZES.xsaveMax }),
    xcrs: s.array(o.xcrs, `${at}.xcrs`, 16).map((x, i) => {
      const e = s.object(x, `${at}.xcrs[${i}]`);
      return { xcr: s.u32(e.xcr, `${at}.xcrs[${i}].xcr`), value: s.big(e.value, `${at}.xcrs[${i}].value`) };
    }),
    debugRegs: s.bytes(o.debugRegs, `${at}.debugRegs`, { min: SIZES.debugRegs, max: SIZES.debugRegs }),
    lapic: s.bytes(o.lapic, `${at}.lapic`, { min: SIZES.lapic, max: SIZES.lapic }),
    msrs: s.array(o.msrs, `${at}.msrs`, MAX_ENTRIES).map((m, i) => {
      const e = s.object(m, `${at}.msrs[${i}]`);
      return { index: s.u32(e.index, `${at}.msrs[${i}].index`), value: s.big(e.value, `${at}.msrs[${i}].value`) };
    }),
    vcpuEvents: s.bytes(o.vcpuEvents, `${at}.vcpuEvents`, { min: 64, max: 64 }),
    cpuid: cpuidEntries(s, o.cpuid, `${at}.cpuid`),
    tscKhz: s.u32(o.tscKhz, `${at}.tscKhz`),
  };
}

/** A decoded hv.json as X86PartitionState, or a SnapshotError naming the first wrong field. */
export function checkX86PartitionState(v: unknown, file: string): X86PartitionState {
  const s = new Shape(file);
  const o = s.object(v, 'the top level');
  if (o.arch !== 'x86_64') s.fail('arch', '"x86_64"');
  const vmo = s.object(o.vm, 'vm');
  const vm: X86VmState = {};
  if (vmo.irqchip !== undefined) {
    const c = s.object(vmo.irqchip, 'vm.irqchip');
    const one = (k: 'picMaster' | 'picSlave' | 'ioapic') => s.bytes(c[k], `vm.irqchip.${k}`, { min: SIZES.irqchip, max: SIZES.irqchip });
    vm.irqchip = { picMaster: one('picMaster'), picSlave: one('picSlave'), ioapic: one('ioapic') };
  }
  if (vmo.pit !== undefined) vm.pit = s.bytes(vmo.pit, 'vm.pit', { min: SIZES.pit, max: SIZES.pit });
  if (vmo.clockNs !== undefined) vm.clockNs = s.big(vmo.clockNs, 'vm.clockNs');
  const vcpus = s.array(o.vcpus, 'vcpus', MAX_VCPUS).map((c, i) => vcpu(s, c, `vcpus[${i}]`));
  if (!vcpus.length) s.fail('vcpus', 'a non-empty array');
  return { arch: 'x86_64', vm, vcpus };
}

export { Shape };
