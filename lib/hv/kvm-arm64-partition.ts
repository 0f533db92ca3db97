/**
 * The KVM arm64 backend: the shared KVM VM (kvm-backend.ts) plus what arm64
 * needs instead of the x86 irqchip/CPUID setup: KVM_ARM_VCPU_INIT with the
 * preferred target and PSCI 0.2 (secondaries powered off, the guest starts
 * them with PSCI CPU_ON), an in-kernel GICv3 through KVM_CREATE_DEVICE,
 * register access through KVM_GET/SET_ONE_REG and SPI injection through
 * KVM_IRQ_LINE. Everything else a partition does is the neutral core's
 * (partition-core.ts).
 * It chooses no addresses of its own: callers pass the GIC frames.
 * Spec: Linux Documentation/virt/kvm/api.rst 4.82-4.84, devices/arm-vgic-v3.rst.
 */
import { HypervisorUnavailableError, NodevmmError } from '../errors';
import { hex } from '../util/bytes';
import {
  arm64CoreRegId,
  KVM_ARM_VCPU_POWER_OFF,
  KVM_ARM_VCPU_PSCI_0_2,
  KVM_DEV_ARM_VGIC_CTRL_INIT,
  KVM_DEV_ARM_VGIC_GRP_ADDR,
  KVM_DEV_ARM_VGIC_GRP_CTRL,
  KVM_DEV_TYPE_ARM_VGIC_V3,
  KVM_VGIC_V3_ADDR_TYPE_DIST,
  KVM_VGIC_V3_ADDR_TYPE_REDIST,
  kvmArmSpiIrq,
  MPIDR_EL1,
  type Arm64CoreReg,
  type Arm64CoreRegs,
} from './arm64-regs';
import { KvmBackend, openKvmVm, type KvmVcpuRunner } from './kvm-backend';
import { native, nativeBinding, type NativeVcpu, type NativeVm } from './native';
import { PartitionCore } from './partition-core';
import { NativeVcpuRunner } from './vcpu-runner';
import type { Arm64Partition, VirtualProcessor } from './partition';

/** What the addon adds on aarch64 builds (native/kvm_arm64.cc). */
export interface NativeArm64Vm extends NativeVm {
  armPreferredTarget(): { target: number; features: number[] };
  createDevice(type: number): number;
  setDeviceAttr(fd: number, group: number, attr: number | bigint, value?: number | bigint): void;
  hasDeviceAttr(fd: number, group: number, attr: number | bigint): boolean;
}

export interface NativeArm64Vcpu extends NativeVcpu {
  armVcpuInit(target: number, featureBits: number[]): void;
  getOneReg(id: bigint): bigint;
  setOneReg(id: bigint, value: bigint): void;
}

export interface KvmArm64PartitionOptions {
  vcpus: number;
  /** GICv3 distributor frame (64 KiB aligned). */
  gicDistributor: number;
  /** First redistributor frame; one 128 KiB region per vCPU follows it. */
  gicRedistributor: number;
  /** See KvmPartitionOptions.dispatchSpinUs. */
  dispatchSpinUs?: number;
}

/** An arm64 vCPU: its index and run thread; registers go through the partition (getCoreReg, setCoreRegs). */
export class KvmArm64Vcpu implements VirtualProcessor {
  constructor(
    readonly index: number,
    readonly runner: KvmVcpuRunner,
  ) {}
  get native(): NativeArm64Vcpu {
    return this.runner.native as NativeArm64Vcpu;
  }
  get state(): string {
    return this.native.state;
  }
  getCoreReg(name: Arm64CoreReg): bigint {
    return native(() => this.native.getOneReg(arm64CoreRegId(name)));
  }
}

/** vCPUs initialised for PSCI 0.2 and the GICv3 at the frames given, on a fresh VM. */
function kvmArm64Backend(opts: KvmArm64PartitionOptions): { backend: KvmBackend<KvmArm64Vcpu>; target: number } {
  const binding = nativeBinding();
  if (binding.arch !== 'aarch64') {
    throw new HypervisorUnavailableError('ERR_ARCH', `the arm64 kvm backend needs an aarch64 host; this addon was built for ${binding.arch}`);
  }
  const kvm = openKvmVm(opts.vcpus, binding);
  const vm = kvm.vm as NativeArm64Vm;
  try {
    const target = native(() => vm.armPreferredTarget()).target;
    const vcpus: KvmArm64Vcpu[] = [];
    for (let i = 0; i < opts.vcpus; i++) {
      const v = new KvmArm64Vcpu(i, new NativeVcpuRunner(native(() => vm.createVcpu(i)), kvm.ringEntries));
      // Secondaries wait powered off until the guest's PSCI CPU_ON names them.
      const features = i === 0 ? [KVM_ARM_VCPU_PSCI_0_2] : [KVM_ARM_VCPU_PSCI_0_2, KVM_ARM_VCPU_POWER_OFF];
      native(() => v.native.armVcpuInit(target, features));
      vcpus.push(v);
    }
    // CTRL_INIT must come after every vCPU exists (arm-vgic-v3.rst).
    const gic = native(() => vm.createDevice(KVM_DEV_TYPE_ARM_VGIC_V3));
    try {
      native(() => vm.setDeviceAttr(gic, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_DIST, opts.gicDistributor));
      native(() => vm.setDeviceAttr(gic, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_REDIST, opts.gicRedistributor));
      native(() => vm.setDeviceAttr(gic, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT));
    } finally {
      // The device belongs to the VM from now on; its fd is only a handle.
      binding.closeFd(gic);
    }
    const backend = new KvmBackend(kvm, {
      vcpus,
      runners: vcpus.map((v) => v.runner),
      clock: undefined,
      // `irq` is an SPI number: INTID 32 + irq of the in-kernel GIC.
      irqLine: (spi, level) => native(() => vm.irqLine(kvmArmSpiIrq(spi), level)),
      stopSite: (i) => ({ at: `pc ${hex(vcpus[i]!.getCoreReg('pc'))}` }),
    });
    return { backend, target };
  } catch (e) {
    vm.destroy();
    throw e;
  }
}

/** An arm64 partition on KVM. */
export class KvmArm64Partition extends PartitionCore<KvmArm64Vcpu, KvmBackend<KvmArm64Vcpu>> implements Arm64Partition {
  /** KVM_ARM_PREFERRED_TARGET's answer, used for every vCPU. */
  readonly target: number;

  constructor(opts: KvmArm64PartitionOptions) {
    const { backend, target } = kvmArm64Backend(opts);
    super(backend, opts.dispatchSpinUs);
    this.target = target;
  }

  /** Raw access for advanced users. */
  get nativeVm(): NativeArm64Vm {
    this.assertAlive('use');
    return this.backend.vm as NativeArm64Vm;
  }

  private arm64Vcpu(index: number): KvmArm64Vcpu {
    const v = this.vcpus[index];
    if (!v) throw new NodevmmError('ERR_INVALID_ARG', `vcpu ${index} does not exist (the partition has ${this.vcpus.length})`);
    return v;
  }

  getCoreReg(vcpu: number, name: Arm64CoreReg): bigint {
    return this.arm64Vcpu(vcpu).getCoreReg(name);
  }

  setCoreRegs(vcpu: number, regs: Arm64CoreRegs): void {
    const v = this.arm64Vcpu(vcpu).native;
    for (const [name, value] of Object.entries(regs) as [Arm64CoreReg, bigint][]) {
      native(() => v.setOneReg(arm64CoreRegId(name), value));
    }
  }

  /** MPIDR_EL1 as KVM assigned it: what the device tree's cpu `reg` must say. */
  mpidr(vcpu: number): bigint {
    const v = this.arm64Vcpu(vcpu).native;
    return native(() => v.getOneReg(MPIDR_EL1));
  }

  /** Human-readable PC of a stopped vCPU, for diagnostics. */
  describePc(vcpu: number): string {
    try {
      return hex(this.getCoreReg(vcpu, 'pc'));
    } catch {
      return 'unknown';
    }
  }
}
