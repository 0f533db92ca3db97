/**
 * IGVM VP contexts for x64 → the vCPU state our KVM backend applies: the
 * NATIVE context (`IgvmNativeVpContextX64`, 232 bytes at the start of a
 * zero-padded page) and the VSM "VBS" register list (Hyper-V TLFS register
 * names). Also checks the result the way KVM_SET_SREGS does, so a bad file
 * fails at load with a message instead of a vCPU entry failure. SNP VMSAs
 * and AArch64 contexts are out of scope (plan.ts refuses those platforms).
 */
import { FormatError } from '../errors';
import { ByteReader, hex } from '../util/bytes';
import { MSR, segmentFromAttributes, type X86Segment, type X86VcpuInitState, type X86Regs, type X86Sregs, type X86Msr } from '../hv/x86-state';
import { IGVM_NATIVE_VP_CONTEXT_X64_SIZE, VBS_VP_CONTEXT_HEADER_SIZE, VBS_VP_CONTEXT_REGISTER_SIZE } from './defs';

/** IgvmNativeVpContextX64, field names as in igvm_defs. */
export interface IgvmNativeVpContextX64 {
  rax: bigint; rcx: bigint; rdx: bigint; rbx: bigint; rsp: bigint; rbp: bigint; rsi: bigint; rdi: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint; r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
  idtr_base: bigint; idtr_limit: number; gdtr_limit: number; gdtr_base: bigint;
  code_selector: number; code_attributes: number; code_base: number; code_limit: number;
  data_selector: number; data_attributes: number; data_base: number; data_limit: number;
  gs_base: bigint; cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint;
}

const GPR_ORDER = ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;

/** `where` names the header in errors, e.g. "igvm header 913 (VP_CONTEXT)". */
function ctxError(where: string, field: string, message: string, offset?: number): FormatError {
  return new FormatError('ERR_IGVM_VP_CONTEXT', `${where}: ${field} ${message}`, { format: 'igvm', field, offset });
}

/** Decode the native context page at `fileOffset`; the bytes after the struct must be zero. */
export function decodeNativeVpContextX64(file: Uint8Array, fileOffset: number, pageSize: number, where: string): IgvmNativeVpContextX64 {
  const r = new ByteReader(file, 'igvm');
  r.need(fileOffset, pageSize, 'VP_CONTEXT data');
  const q = (off: number, f: string) => r.u64(fileOffset + off, f);
  const gprs = {} as Record<(typeof GPR_ORDER)[number], bigint>;
  GPR_ORDER.forEach((name, i) => (gprs[name] = q(i * 8, name)));
  for (let off = 154; off < 158; off++) if (file[fileOffset + off] !== 0) throw ctxError(where, 'reserved', `byte at context offset ${off} is not 0`, fileOffset + off);
  for (let off = IGVM_NATIVE_VP_CONTEXT_X64_SIZE; off < pageSize; off++) {
    if (file[fileOffset + off] !== 0) throw ctxError(where, 'padding', `byte at context offset ${hex(off)} is ${hex(file[fileOffset + off]!)}, the page after the 232-byte context must be zero`, fileOffset + off);
  }
  return {
    ...gprs,
    idtr_base: q(144, 'idtr_base'),
    idtr_limit: r.u16(fileOffset + 152, 'idtr_limit'),
    gdtr_limit: r.u16(fileOffset + 158, 'gdtr_limit'),
    gdtr_base: q(160, 'gdtr_base'),
    code_selector: r.u16(fileOffset + 168, 'code_selector'),
    code_attributes: r.u16(fileOffset + 170, 'code_attributes'),
    code_base: r.u32(fileOffset + 172, 'code_base'),
    code_limit: r.u32(fileOffset + 176, 'code_limit'),
    data_selector: r.u16(fileOffset + 180, 'data_selector'),
    data_attributes: r.u16(fileOffset + 182, 'data_attributes'),
    data_base: r.u32(fileOffset + 184, 'data_base'),
    data_limit: r.u32(fileOffset + 188, 'data_limit'),
    gs_base: q(192, 'gs_base'),
    cr0: q(200, 'cr0'),
    cr3: q(208, 'cr3'),
    cr4: q(216, 'cr4'),
    efer: q(224, 'efer'),
  };
}

/** Serialize a native context into a zero-padded page (the builder's side). */
export function encodeNativeVpContextX64(c: IgvmNativeVpContextX64, pageSize: number): Uint8Array {
  const page = new Uint8Array(pageSize);
  const dv = new DataView(page.buffer);
  GPR_ORDER.forEach((name, i) => dv.setBigUint64(i * 8, c[name], true));
  dv.setBigUint64(144, c.idtr_base, true);
  dv.setUint16(152, c.idtr_limit, true);
  dv.setUint16(158, c.gdtr_limit, true);
  dv.setBigUint64(160, c.gdtr_base, true);
  dv.setUint16(168, c.code_selector, true);
  dv.setUint16(170, c.code_attributes, true);
  dv.setUint32(172, c.code_base, true);
  dv.setUint32(176, c.code_limit, true);
  dv.setUint16(180, c.data_selector, true);
  dv.setUint16(182, c.data_attributes, true);
  dv.setUint32(184, c.data_base, true);
  dv.setUint32(188, c.data_limit, true);
  dv.setBigUint64(192, c.gs_base, true);
  dv.setBigUint64(200, c.cr0, true);
  dv.setBigUint64(208, c.cr3, true);
  dv.setBigUint64(216, c.cr4, true);
  dv.setBigUint64(224, c.efer, true);
  return page;
}

/** QEMU's reset TR: a busy 32-bit TSS, which KVM_SET_SREGS needs once CR0.PE is set. */
function resetTr(): X86Segment {
  return { base: 0n, limit: 0xffff, selector: 0, type: 11, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 };
}
function unusableLdt(): X86Segment {
  return { base: 0n, limit: 0xffff, selector: 0, type: 2, present: 0, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 1 };
}

export function nativeContextToVcpuState(c: IgvmNativeVpContextX64, where: string): X86VcpuInitState {
  for (const [field, attr] of [['code_attributes', c.code_attributes], ['data_attributes', c.data_attributes]] as const) {
    if (attr & 0x0f00) throw ctxError(where, field, `${hex(attr)} has bits 8-11 set, which the attribute format reserves`);
  }
  const regs: X86Regs = {
    rax: c.rax, rbx: c.rbx, rcx: c.rcx, rdx: c.rdx, rsi: c.rsi, rdi: c.rdi, rsp: c.rsp, rbp: c.rbp,
    r8: c.r8, r9: c.r9, r10: c.r10, r11: c.r11, r12: c.r12, r13: c.r13, r14: c.r14, r15: c.r15, rip: c.rip, rflags: c.rflags,
  };
  const data = segmentFromAttributes(c.data_selector, BigInt(c.data_base), c.data_limit, c.data_attributes);
  const sregs: Partial<X86Sregs> = {
    cs: segmentFromAttributes(c.code_selector, BigInt(c.code_base), c.code_limit, c.code_attributes),
    ds: { ...data }, es: { ...data }, fs: { ...data }, ss: { ...data },
    // The spec documents gs_base as GS.base (QEMU uses data_base instead; COCONUT fills gs_base from its GS).
    gs: { ...data, base: c.gs_base },
    tr: resetTr(),
    ldt: unusableLdt(),
    gdt: { base: c.gdtr_base, limit: c.gdtr_limit },
    idt: { base: c.idtr_base, limit: c.idtr_limit },
    cr0: c.cr0, cr3: c.cr3, cr4: c.cr4, efer: c.efer,
  };
  const state: X86VcpuInitState = { regs, sregs };
  checkVcpuStateForKvm(state, where);
  return state;
}

const CR0_PE = 1n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;

/**
 * Refuse register combinations KVM_SET_SREGS rejects or a vCPU cannot enter
 * (kvm_is_valid_sregs plus VMX guest-state checks on CS), naming the register.
 */
export function checkVcpuStateForKvm(state: X86VcpuInitState, where: string): void {
  const s = state.sregs ?? {};
  const cr0 = s.cr0 ?? 0x60000010n;
  const cr4 = s.cr4 ?? 0n;
  const efer = s.efer ?? 0n;
  const pg = (cr0 & CR0_PG) !== 0n;
  if (pg && !(cr0 & CR0_PE)) throw ctxError(where, 'cr0', `${hex(cr0)} sets PG without PE`);
  const longMode = pg && (efer & EFER_LME) !== 0n;
  if (longMode && !(cr4 & CR4_PAE)) throw ctxError(where, 'cr4', `${hex(cr4)} lacks PAE, which long mode (cr0 ${hex(cr0)}, efer ${hex(efer)}) requires`);
  if (longMode && !(efer & EFER_LMA)) throw ctxError(where, 'efer', `${hex(efer)} has LME and paging but not LMA`);
  if (!longMode && efer & EFER_LMA) throw ctxError(where, 'efer', `${hex(efer)} sets LMA without both EFER.LME and CR0.PG (cr0 ${hex(cr0)})`);
  const cs = s.cs;
  if (!cs) return;
  if (cs.l && !longMode) throw ctxError(where, 'cs', `is a 64-bit code segment (L=1) but long mode is off (cr0 ${hex(cr0)}, cr4 ${hex(cr4)}, efer ${hex(efer)})`);
  if (cs.l && cs.db) throw ctxError(where, 'cs', 'sets both L and D/B, which no code segment may do');
  if (cr0 & CR0_PE && (!cs.present || !cs.s || !(cs.type & 0x8))) {
    throw ctxError(where, 'cs', `is not a present code segment (type ${cs.type}, s ${cs.s}, present ${cs.present}) in protected mode`);
  }
}

/** One entry of a VBS register list, value kept as its raw 16 bytes. */
export interface VbsRegister {
  vtl: number;
  name: number;
  value: Uint8Array;
}

/** Decode a VBS register list: u32 count, then 32-byte entries with the name at the unaligned offset 1. */
export function decodeVbsVpContext(file: Uint8Array, fileOffset: number, where: string): VbsRegister[] {
  const r = new ByteReader(file, 'igvm');
  const count = r.u32(fileOffset, 'register_count');
  if (count === 0) throw ctxError(where, 'register_count', 'is 0, a VBS context needs at least one register', fileOffset);
  r.need(fileOffset + VBS_VP_CONTEXT_HEADER_SIZE, count * VBS_VP_CONTEXT_REGISTER_SIZE, 'VBS register list');
  const out: VbsRegister[] = [];
  for (let i = 0; i < count; i++) {
    const at = fileOffset + VBS_VP_CONTEXT_HEADER_SIZE + i * VBS_VP_CONTEXT_REGISTER_SIZE;
    const vtl = r.u8(at, 'vtl');
    const name = r.u32(at + 1, 'register_name');
    for (let p = at + 5; p < at + 16; p++) if (file[p] !== 0) throw ctxError(where, `registers[${i}].mbz`, `byte at ${hex(p)} is not 0`, p);
    if (out.length && out[0]!.vtl !== vtl) throw ctxError(where, `registers[${i}].vtl`, `${vtl} differs from the list's vtl ${out[0]!.vtl}`, at);
    out.push({ vtl, name, value: file.slice(at + 16, at + 32) });
  }
  return out;
}

type SregSegment = 'es' | 'cs' | 'ss' | 'ds' | 'fs' | 'gs' | 'ldt' | 'tr';
const SEGMENTS: readonly SregSegment[] = ['es', 'cs', 'ss', 'ds', 'fs', 'gs', 'ldt', 'tr'];
const CRS = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8'] as const;

/** HvX64RegisterName values → MSR index, for names that are plain MSRs. */
const MSR_NAMES = new Map<number, number>([
  [0x80000, 0x10], // Tsc
  [0x80002, 0xc0000102], // KernelGsBase
  [0x80004, MSR.IA32_PAT],
  [0x80005, 0x174], [0x80006, 0x176], [0x80007, 0x175], // Sysenter Cs/Eip/Esp
  [0x80008, 0xc0000081], [0x80009, 0xc0000082], [0x8000a, 0xc0000083], [0x8000b, 0xc0000084], // Star/Lstar/Cstar/Sfmask
  [0x8000e, MSR.IA32_MTRR_DEF_TYPE],
  [0x80070, MSR.IA32_MTRR_FIX64K_00000], [0x80071, MSR.IA32_MTRR_FIX16K_80000], [0x80072, MSR.IA32_MTRR_FIX16K_A0000],
  ...Array.from({ length: 16 }, (_, i) => [0x80010 + i, MSR.IA32_MTRR_PHYSBASE0 + 2 * i] as [number, number]),
  ...Array.from({ length: 16 }, (_, i) => [0x80040 + i, MSR.IA32_MTRR_PHYSMASK0 + 2 * i] as [number, number]),
  ...Array.from({ length: 8 }, (_, i) => [0x80073 + i, MSR.IA32_MTRR_FIX4K_C0000 + i] as [number, number]),
]);

/** Map a VBS register list onto our vCPU state; unknown or unsupported names are refused by name. */
export function vbsContextToVcpuState(list: readonly VbsRegister[], where: string): X86VcpuInitState {
  const regs: Partial<X86Regs> = {};
  const sregs: Partial<X86Sregs> = { tr: resetTr(), ldt: unusableLdt() };
  const msrs: X86Msr[] = [];
  const seen = new Set<number>();
  for (const reg of list) {
    const dv = new DataView(reg.value.buffer, reg.value.byteOffset, 16);
    const u64 = dv.getBigUint64(0, true);
    const n = reg.name;
    if (seen.has(n)) throw ctxError(where, 'register_name', `${hex(n)} appears twice`);
    seen.add(n);
    if (n >= 0x20000 && n <= 0x20011 && GPR_ORDER[n - 0x20000]) regs[GPR_ORDER[n - 0x20000]!] = u64;
    else if (n >= 0x40000 && n <= 0x40004) sregs[CRS[n - 0x40000]!] = u64;
    else if (n >= 0x60000 && n <= 0x60007) {
      sregs[SEGMENTS[n - 0x60000]!] = segmentFromAttributes(dv.getUint16(12, true), u64, dv.getUint32(8, true), dv.getUint16(14, true));
    } else if (n === 0x70000 || n === 0x70001) {
      sregs[n === 0x70000 ? 'idt' : 'gdt'] = { limit: dv.getUint16(6, true), base: dv.getBigUint64(8, true) };
    } else if (n === 0x80001) sregs.efer = u64;
    else if (n === 0x80003) sregs.apicBase = u64;
    else if (MSR_NAMES.has(n)) msrs.push({ index: MSR_NAMES.get(n)!, value: u64 });
    else throw ctxError(where, 'register_name', `${hex(n)} is not an x64 register this loader can apply`);
  }
  const state: X86VcpuInitState = { regs, sregs };
  if (msrs.length) state.msrs = msrs;
  checkVcpuStateForKvm(state, where);
  return state;
}
