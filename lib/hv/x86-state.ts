/**
 * x86 vCPU state as plain values, in KVM's shapes (struct kvm_regs,
 * kvm_sregs, kvm_segment, kvm_dtable, kvm_msr_entry). Loaders produce these;
 * the backend applies them. 64-bit registers are bigints so no bit is lost.
 */

export interface X86Regs {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint;
  rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint;
  r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

/** struct kvm_segment: the hidden (descriptor-cache) part of a segment register. */
export interface X86Segment {
  base: bigint;
  limit: number;
  selector: number;
  /** Descriptor type field (4 bits), e.g. 0xB for execute/read accessed code. */
  type: number;
  present: number;
  dpl: number;
  /** Default operation size (D/B bit). */
  db: number;
  /** Descriptor type: 1 = code/data, 0 = system. */
  s: number;
  /** 64-bit code segment. */
  l: number;
  /** Granularity: limit in 4 KiB units. */
  g: number;
  avl: number;
  unusable: number;
}

export interface X86DTable {
  base: bigint;
  limit: number;
}

export interface X86Sregs {
  cs: X86Segment; ds: X86Segment; es: X86Segment; fs: X86Segment; gs: X86Segment; ss: X86Segment;
  tr: X86Segment; ldt: X86Segment;
  gdt: X86DTable; idt: X86DTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint;
  efer: bigint;
  apicBase: bigint;
}

export interface X86Msr {
  index: number;
  value: bigint;
}

/** The complete initial state a loader asks for on one vCPU; omitted parts keep KVM's reset values. */
export interface X86VcpuInitState {
  regs?: Partial<X86Regs>;
  sregs?: Partial<X86Sregs>;
  msrs?: X86Msr[];
}

export const ZERO_REGS: Readonly<X86Regs> = Object.freeze({
  rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
  r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n,
  rip: 0n, rflags: 2n,
});

/**
 * Build a kvm_segment from a GDT descriptor's fields. `attr` uses the
 * Hyper-V/WHP attribute word layout (type bits 0-3, S 4, DPL 5-6, P 7,
 * AVL 12, L 13, D/B 14, G 15), the layout OpenVMM and IGVM contexts use.
 */
export function segmentFromAttributes(selector: number, base: bigint, limit: number, attr: number): X86Segment {
  return {
    base,
    limit: limit >>> 0,
    selector,
    type: attr & 0xf,
    s: (attr >> 4) & 1,
    dpl: (attr >> 5) & 3,
    present: (attr >> 7) & 1,
    avl: (attr >> 12) & 1,
    l: (attr >> 13) & 1,
    db: (attr >> 14) & 1,
    g: (attr >> 15) & 1,
    unusable: (attr >> 7) & 1 ? 0 : 1,
  };
}

/** MSR indices loaders use. */
export const MSR = {
  IA32_APIC_BASE: 0x1b,
  IA32_MTRRCAP: 0xfe,
  IA32_MTRR_PHYSBASE0: 0x200,
  IA32_MTRR_PHYSMASK0: 0x201,
  IA32_MTRR_FIX64K_00000: 0x250,
  IA32_MTRR_FIX16K_80000: 0x258,
  IA32_MTRR_FIX16K_A0000: 0x259,
  IA32_MTRR_FIX4K_C0000: 0x268,
  IA32_PAT: 0x277,
  IA32_MTRR_DEF_TYPE: 0x2ff,
  IA32_EFER: 0xc0000080,
  IA32_MISC_ENABLE: 0x1a0,
} as const;
