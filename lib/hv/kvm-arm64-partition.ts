/**
 * arm64 KVM partition: the x86 KvmPartition's memory slots, vCPU threads,
 * MMIO bus and exit dispatch, plus what arm64 needs instead of the x86
 * irqchip/CPUID setup: KVM_ARM_VCPU_INIT with the preferred target and PSCI
 * 0.2 (secondaries powered off, the guest starts them with PSCI CPU_ON), an
 * in-kernel GICv3 through KVM_CREATE_DEVICE, register access through
 * KVM_GET/SET_ONE_REG and SPI injection through KVM_IRQ_LINE.
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
import { KvmPartition } from './kvm-partition';
import type { Arm64Partition } from './partition';
import { native, nativeBinding, type NativeVcpu, type NativeVm } from './native';

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

export class KvmArm64Partition extends KvmPartition implements Arm64Partition {
  /** KVM_ARM_PREFERRED_TARGET's answer, used for every vCPU. */
  readonly target: number;

  constructor(opts: KvmArm64PartitionOptions) {
    const binding = nativeBinding();
    if (binding.arch !== 'aarch64') {
      throw new HypervisorUnavailableError('ERR_ARCH', `the arm64 kvm backend needs an aarch64 host; this addon was built for ${binding.arch}`);
    }
    // No x86 irqchip, PIT or CPUID: arm64 gets its GIC below.
    super({ vcpus: opts.vcpus, irqchip: false, pit: false, cpuid: false, ...(opts.dispatchSpinUs !== undefined ? { dispatchSpinUs: opts.dispatchSpinUs } : {}) });
    const vm = this.nativeVm as NativeArm64Vm;
    try {
      this.target = native(() => vm.armPreferredTarget()).target;
      for (const v of this.vcpus) {
        // Secondaries wait powered off until the guest's PSCI CPU_ON names them.
        const features = v.index === 0 ? [KVM_ARM_VCPU_PSCI_0_2] : [KVM_ARM_VCPU_PSCI_0_2, KVM_ARM_VCPU_POWER_OFF];
        native(() => (v.native as NativeArm64Vcpu).armVcpuInit(this.target, features));
      }
      // CTRL_INIT must come after every vCPU exists (arm-vgic-v3.rst).
      const gic = native(() => vm.createDevice(KVM_DEV_TYPE_ARM_VGIC_V3));
      try {
        native(() => vm.setDeviceAttr(gic, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_DIST, opts.gicDistributor));
        native(() => vm.setDeviceAttr(gic, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_REDIST, opts.gicRedistributor));
        native(() => vm.setDeviceAttr(gic, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT));
      } finally {
        // The device belongs to the VM from now on; its fd is only a handle.
        nativeBinding().closeFd(gic);
      }
    } catch (e) {
      this.destroy();
      throw e;
    }
  }

  private arm64Vcpu(index: number): NativeArm64Vcpu {
    const v = this.vcpus[index];
    if (!v) throw new NodevmmError('ERR_INVALID_ARG', `vcpu ${index} does not exist (the partition has ${this.vcpus.length})`);
    return v.native as NativeArm64Vcpu;
  }

  getCoreReg(vcpu: number, name: Arm64CoreReg): bigint {
    const v = this.arm64Vcpu(vcpu);
    return native(() => v.getOneReg(arm64CoreRegId(name)));
  }

  setCoreRegs(vcpu: number, regs: Arm64CoreRegs): void {
    const v = this.arm64Vcpu(vcpu);
    for (const [name, value] of Object.entries(regs) as [Arm64CoreReg, bigint][]) {
      native(() => v.setOneReg(arm64CoreRegId(name), value));
    }
  }

  /** MPIDR_EL1 as KVM assigned it: what the device tree's cpu `reg` must say. */
  mpidr(vcpu: number): bigint {
    const v = this.arm64Vcpu(vcpu);
    return native(() => v.getOneReg(MPIDR_EL1));
  }

  /** Drive SPI `spi` (INTID 32 + spi) of the in-kernel GIC. */
  override setIrqLine(spi: number, level: boolean): void {
    if (this.destroyed) return;
    const irq = kvmArmSpiIrq(spi);
    native(() => this.nativeVm.irqLine(irq, level));
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
