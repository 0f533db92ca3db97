/**
 * IGVM VP contexts → the vCPU state our backend applies: the NATIVE context
 * and the VSM "VBS" register list. Also checks the result the way
 * KVM_SET_SREGS does, so a bad file fails at load with a message instead of
 * a vCPU entry failure.
 */
import { hex } from '../../util/bytes';
import { MSR, segmentFromAttributes, type X86Segment, type X86VcpuInitState, type X86Regs, type X86Sregs, type X86Msr } from '../../hv/x86-state';
import { ctxError, GPR_ORDER, type IgvmNativeVpContextX64, type VbsRegister } from '../../igvm/vp-context';

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
