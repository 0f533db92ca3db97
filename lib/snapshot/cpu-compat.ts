/**
 * Can this host run a guest that booted with another host's CPUID? The
 * guest chose its code paths (AVX-512, XSAVE components, RDRAND, ...) from
 * the CPUID it saw; a host that lacks one of those features would fault it
 * at some later instruction. So every feature bit the guest saw must be
 * one this host's hypervisor offers, and the vendor must match (the guest
 * picked vendor-specific code: SYSCALL vs SYSENTER, errata, microcode MSRs).
 * Bits the hypervisor sets on its own (hypervisor present, x2APIC,
 * TSC-deadline) or that follow guest state (OSXSAVE, OSPKE) are left out.
 */
import type { X86CpuidEntry } from '../hv/x86-state';

type Reg = 'eax' | 'ebx' | 'ecx' | 'edx';

/** Feature leaves compared, with the bits that are not host features. */
const FEATURE_LEAVES: Array<{ fn: number; index: number; reg: Reg; name: string; ignore: number }> = [
  // CPUID.1:ECX bit 21 x2APIC, 24 TSC-deadline (KVM emulates both), 27 OSXSAVE (mirrors CR4), 31 hypervisor.
  { fn: 0x1, index: 0, reg: 'ecx', name: 'leaf 0x1 ecx', ignore: (1 << 21) | (1 << 24) | (1 << 27) | (1 << 31) },
  // CPUID.1:EDX bit 9 APIC (present with the in-kernel LAPIC whatever the host).
  { fn: 0x1, index: 0, reg: 'edx', name: 'leaf 0x1 edx', ignore: 1 << 9 },
  { fn: 0x7, index: 0, reg: 'ebx', name: 'leaf 0x7 ebx', ignore: 0 },
  // CPUID.7:ECX bit 4 OSPKE (mirrors CR4.PKE).
  { fn: 0x7, index: 0, reg: 'ecx', name: 'leaf 0x7 ecx', ignore: 1 << 4 },
  { fn: 0x7, index: 0, reg: 'edx', name: 'leaf 0x7 edx', ignore: 0 },
  // XSAVE state components (XCR0 bits the guest may have enabled).
  { fn: 0xd, index: 0, reg: 'eax', name: 'leaf 0xd eax (xsave components)', ignore: 0 },
  { fn: 0xd, index: 1, reg: 'eax', name: 'leaf 0xd.1 eax', ignore: 0 },
  { fn: 0x80000001, index: 0, reg: 'ecx', name: 'leaf 0x80000001 ecx', ignore: 0 },
  { fn: 0x80000001, index: 0, reg: 'edx', name: 'leaf 0x80000001 edx', ignore: 0 },
];

function leaf(entries: readonly X86CpuidEntry[], fn: number, index: number): X86CpuidEntry | undefined {
  // An entry that does not depend on its index (flags without KVM_CPUID_FLAG_SIGNIFCANT_INDEX) answers every index.
  return entries.find((e) => e.function === fn && (e.index === index || (e.flags & 1) === 0));
}

/** CPUID.0's vendor string. */
export function cpuVendor(entries: readonly X86CpuidEntry[]): string {
  const l = leaf(entries, 0, 0);
  if (!l) return 'unknown';
  const b = Buffer.alloc(12);
  b.writeUInt32LE(l.ebx >>> 0, 0);
  b.writeUInt32LE(l.edx >>> 0, 4);
  b.writeUInt32LE(l.ecx >>> 0, 8);
  return b.toString('latin1');
}

/** Why a guest that saw `guest` cannot run on a host offering `host`, in one sentence; undefined when it can. */
export function cpuIncompatibility(guest: readonly X86CpuidEntry[], host: readonly X86CpuidEntry[]): string | undefined {
  const gv = cpuVendor(guest);
  const hv = cpuVendor(host);
  if (gv !== hv) return `the snapshot's guest ran on a ${gv} cpu and this host is ${hv}`;
  for (const f of FEATURE_LEAVES) {
    const g = leaf(guest, f.fn, f.index);
    if (!g) continue;
    const h = leaf(host, f.fn, f.index);
    const missing = (g[f.reg] & ~(h ? h[f.reg] : 0) & ~f.ignore) >>> 0;
    if (missing) {
      const bits = [...Array(32).keys()].filter((b) => (missing >>> b) & 1);
      return `the snapshot's guest saw cpu features this host does not offer (cpuid ${f.name} bit${bits.length > 1 ? 's' : ''} ${bits.join(', ')})`;
    }
  }
  return undefined;
}
