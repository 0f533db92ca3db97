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

/** A CPUID leaf as KVM takes and gives it (struct kvm_cpuid_entry2). */
export interface X86CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/**
 * Everything KVM keeps of one x86 vCPU, as a snapshot saves it. The opaque
 * parts stay in the kernel's byte layouts (struct kvm_xsave, kvm_debugregs,
 * kvm_lapic_state, kvm_vcpu_events): they are only ever handed back to the
 * same kind of kernel.
 */
export interface X86VcpuState {
  /** KVM_MP_STATE_* (0 runnable, 1 uninitialized AP, 2 INIT received, 3 halted, 4 SIPI received). */
  mpState: number;
  regs: X86Regs;
  sregs: X86Sregs;
  /** The XSAVE area (x87, SSE, AVX, ... as XCR0 enables them). */
  xsave: Uint8Array;
  xcrs: { xcr: number; value: bigint }[];
  debugRegs: Uint8Array;
  lapic: Uint8Array;
  /** Every MSR in KVM_GET_MSR_INDEX_LIST that KVM could read, TSC and kvmclock included. */
  msrs: X86Msr[];
  /** Pending exception, interrupt, NMI and SMI (KVM_GET_VCPU_EVENTS): read last, restored last. */
  vcpuEvents: Uint8Array;
  /** The CPUID the guest saw. */
  cpuid: X86CpuidEntry[];
  /** The guest's TSC rate (0: unknown). */
  tscKhz: number;
}

/** The x86 VM-wide state KVM keeps in the kernel: interrupt controllers, PIT, kvmclock. */
export interface X86VmState {
  /** struct kvm_irqchip of the PIC master, PIC slave and IOAPIC; absent without the in-kernel irqchip. */
  irqchip?: { picMaster: Uint8Array; picSlave: Uint8Array; ioapic: Uint8Array };
  /** struct kvm_pit_state2; absent without the in-kernel PIT. */
  pit?: Uint8Array;
  /** kvmclock (ns) at the moment the vCPUs paused. */
  clockNs?: bigint;
}

/** A whole x86 partition's hypervisor state (RAM apart). */
export interface X86PartitionState {
  arch: 'x86_64';
  vm: X86VmState;
  vcpus: X86VcpuState[];
}
