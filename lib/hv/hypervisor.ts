/**
 * The host's hypervisor behind one interface: the VM layer asks it for
 * partitions and never names a backend. Linux gets KVM (x86_64 and arm64),
 * Windows gets Windows Hypervisor Platform (x86_64, whp-partition.ts).
 */
import { NodevmmError } from '../errors';
import type { KvmArm64Partition } from './kvm-arm64-partition';
import { KvmPartition, supportedCpuid, type KvmPartitionOptions } from './kvm-partition';
import { nativeBinding, whpBinding, type CpuidEntry } from './native';
import type { Arm64Partition, Arm64PartitionOptions, X86Irqchip, X86Partition, X86PartitionOptions } from './partition';
import type { WhpPartition } from './whp-partition';

export interface Hypervisor {
  /** 'kvm' (Linux) or 'whp' (Windows). */
  readonly name: string;
  /** The architecture of the guests this host runs (the addon's build); loads the addon. */
  readonly arch: 'x86_64' | 'aarch64' | 'unknown';
  /** Whether VMs can run here, or one sentence why not (no /dev/kvm, no permission, too old). */
  probe(): { ok: true } | { ok: false; message: string };
  createX86Partition(opts: X86PartitionOptions): X86Partition;
  createArm64Partition(opts: Arm64PartitionOptions): Arm64Partition;
  /** The CPUID leaves the hypervisor can give an x86 guest. */
  supportedCpuid(): CpuidEntry[];
  /** Where this host can put an x86 partition's interrupt controllers (X86PartitionOptions.irqchip), preferred first. */
  x86Irqchips(): X86Irqchip[];
}

/** include/uapi/linux/kvm.h */
const KVM_CAP_SPLIT_IRQCHIP = 121;

const kvm: Hypervisor = {
  name: 'kvm',
  get arch() {
    return nativeBinding().arch;
  },
  probe: () => {
    const p = nativeBinding().probe();
    return p.ok ? { ok: true } : { ok: false, message: p.message };
  },
  createX86Partition: (opts) => new KvmPartition(opts as KvmPartitionOptions),
  // Loaded on first use: an x86 VM never compiles the arm64 backend (CLI start-up time).
  createArm64Partition: (opts) => new (require('./kvm-arm64-partition') as { KvmArm64Partition: typeof KvmArm64Partition }).KvmArm64Partition(opts),
  supportedCpuid: () => supportedCpuid(),
  // The in-kernel irqchip is there on every x86 KVM; the split one since Linux 4.5.
  x86Irqchips: () => (nativeBinding().checkExtension(KVM_CAP_SPLIT_IRQCHIP) > 0 ? ['kernel', 'userspace'] : ['kernel']),
};

/** The CPUID leaves the host reports, as WHP passes most of them through (no partition needed). */
const WHP_CPUID_LEAVES = [0, 1, 7, 0x80000000, 0x80000001, 0x80000007, 0x80000008];

const whp: Hypervisor = {
  name: 'whp',
  get arch() {
    return whpBinding().arch;
  },
  probe: () => {
    const p = whpBinding().probe();
    return p.ok ? { ok: true } : { ok: false, message: p.message };
  },
  // Loaded on first use, like arm64: Linux never compiles the WHP backend.
  createX86Partition: (opts) => {
    // WHP needs no TSS or identity-map page.
    const { tssAddress: _tss, identityMapAddress: _idmap, ram, ...rest } = opts;
    const p = new (require('./whp-partition') as { WhpPartition: typeof WhpPartition }).WhpPartition(rest);
    try {
      for (const r of ram ?? []) p.addRam(r);
    } catch (e) {
      p.destroy();
      throw e;
    }
    return p;
  },
  createArm64Partition: () => {
    throw new NodevmmError('ERR_ARCH', 'windows hypervisor platform runs x86_64 guests here; arm64 guests need KVM on an arm64 Linux host');
  },
  supportedCpuid: () => {
    const b = whpBinding();
    return WHP_CPUID_LEAVES.map((leaf) => ({ function: leaf, index: 0, flags: 0, ...b.hostCpuid(leaf, 0) }));
  },
  // WHP emulates the local APICs only: the IOAPIC and PIT are the caller's.
  x86Irqchips: () => ['userspace'],
};

/** This host's hypervisor (KVM on Linux, WHP on Windows), or one sentence saying there is none. */
export function openHypervisor(platform: NodeJS.Platform = process.platform): Hypervisor {
  if (platform === 'linux') return kvm;
  if (platform === 'win32') return whp;
  throw new NodevmmError('ERR_NO_HYPERVISOR', `nodevmm has no hypervisor backend for ${platform} (KVM on Linux, Windows Hypervisor Platform on Windows)`);
}
