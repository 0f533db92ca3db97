/**
 * CPUID for a vCPU: KVM's supported table, adjusted so the guest sees a
 * consistent topology (one socket, `count` cores, APIC ID = vCPU index) and
 * the hypervisor bit. KVM's paravirt leaves (0x40000000 "KVMKVMKVM") come
 * from KVM_GET_SUPPORTED_CPUID already and are passed through.
 *
 * The TSC-deadline timer is the one feature KVM emulates but leaves out of
 * that table (api.rst, KVM_CAP_TSC_DEADLINE_TIMER): the caller says whether
 * the in-kernel LAPIC has it, and we set CPUID.1:ECX[24], as QEMU does.
 * Without it Linux falls back to the LAPIC timer in one-shot mode, which it
 * must calibrate at boot, and every timer event costs a counter write.
 */
import type { CpuidEntry } from './native';

const HYPERVISOR_BIT = 1 << 31; // CPUID.1:ECX[31]
const TSC_DEADLINE_BIT = 1 << 24; // CPUID.1:ECX[24]

export interface CpuidAdjustOptions {
  /** The in-kernel LAPIC emulates the TSC-deadline timer (KVM_CAP_TSC_DEADLINE_TIMER). */
  tscDeadline?: boolean;
}

export function adjustCpuid(supported: readonly CpuidEntry[], index: number, count: number, opts: CpuidAdjustOptions = {}): CpuidEntry[] {
  const out = supported.map((e) => ({ ...e }));
  for (const e of out) {
    switch (e.function) {
      case 0x1:
        // EBX[31:24] initial APIC ID, [23:16] logical processors per package;
        // EDX[28] HTT says the latter field is valid.
        e.ebx = ((e.ebx & 0x0000ffff) | ((count & 0xff) << 16) | ((index & 0xff) << 24)) >>> 0;
        if (count > 1) e.edx = (e.edx | (1 << 28)) >>> 0;
        e.ecx = (e.ecx | HYPERVISOR_BIT | (opts.tscDeadline ? TSC_DEADLINE_BIT : 0)) >>> 0;
        break;
      case 0x4:
        // Intel deterministic cache leaf: EAX[31:26] = cores per package - 1,
        // [25:14] = threads sharing this cache - 1 (no SMT: 0 for L1/L2).
        if ((e.eax & 0x1f) !== 0) e.eax = ((e.eax & 0x3fff) | (((count - 1) & 0x3f) << 26)) >>> 0;
        break;
      case 0xb:
      case 0x1f: {
        // Extended topology: level 0 = SMT (1 thread), level 1 = core (count).
        const level = e.index;
        e.edx = index >>> 0;
        if (level === 0) {
          e.eax = 0;
          e.ebx = 1;
          e.ecx = (1 << 8) | 0;
        } else if (level === 1) {
          e.eax = Math.ceil(Math.log2(Math.max(1, count)));
          e.ebx = count;
          e.ecx = (2 << 8) | 1;
        } else {
          e.eax = 0;
          e.ebx = 0;
          e.ecx = level & 0xff;
        }
        break;
      }
      case 0x80000008:
        // AMD: ECX[7:0] = NC (cores - 1), [15:12] ApicIdCoreIdSize.
        e.ecx = ((e.ecx & ~0xf0ff) | ((count - 1) & 0xff) | (Math.ceil(Math.log2(Math.max(1, count))) << 12)) >>> 0;
        break;
      case 0x8000001e:
        // AMD extended APIC ID.
        e.eax = index >>> 0;
        break;
      default:
        break;
    }
  }
  return out;
}
