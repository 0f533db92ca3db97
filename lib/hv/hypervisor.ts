/**
 * The host's hypervisor behind one interface: the VM layer asks it for
 * partitions and never names a backend. Linux gets KVM (x86_64 and arm64);
 * a Windows Hypervisor Platform backend slots in here, beside it.
 */
import { NodevmmError } from '../errors';
import type { KvmArm64Partition } from './kvm-arm64-partition';
import { KvmPartition, supportedCpuid } from './kvm-partition';
import { nativeBinding, type CpuidEntry } from './native';
import type { Arm64Partition, Arm64PartitionOptions, X86Irqchip, X86Partition, X86PartitionOptions } from './partition';

export interface Hypervisor {
  /** 'kvm' today. */
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
  createX86Partition: (opts) => new KvmPartition(opts),
  // Loaded on first use: an x86 VM never compiles the arm64 backend (CLI start-up time).
  createArm64Partition: (opts) => new (require('./kvm-arm64-partition') as { KvmArm64Partition: typeof KvmArm64Partition }).KvmArm64Partition(opts),
  supportedCpuid: () => supportedCpuid(),
  // The in-kernel irqchip is there on every x86 KVM; the split one since Linux 4.5.
  x86Irqchips: () => (nativeBinding().checkExtension(KVM_CAP_SPLIT_IRQCHIP) > 0 ? ['kernel', 'userspace'] : ['kernel']),
};

/** This host's hypervisor, or one sentence saying there is none yet. */
export function openHypervisor(platform: NodeJS.Platform = process.platform): Hypervisor {
  if (platform === 'linux') return kvm;
  throw new NodevmmError('ERR_NO_HYPERVISOR', `nodevmm has no hypervisor backend for ${platform} yet (KVM on Linux today; Windows Hypervisor Platform is planned)`);
}
