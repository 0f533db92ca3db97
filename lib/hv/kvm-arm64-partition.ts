/**
 * The KVM arm64 backend: the shared KVM VM (kvm-backend.ts) plus what arm64
 * needs instead of the x86 irqchip/CPUID setup: KVM_ARM_VCPU_INIT with the
 * preferred target and PSCI 0.2 (secondaries powered off, the guest starts
 * them with PSCI CPU_ON), an in-kernel GICv3 through KVM_CREATE_DEVICE,
 * register access through KVM_GET/SET_ONE_REG and SPI injection through
 * KVM_IRQ_LINE, and snapshots of all of it (saveState/restoreState: every
 * register KVM_GET_REG_LIST names, the MP state, the GICv3 through
 * kvm-arm64-vgic.ts). Everything else a partition does is the neutral
 * core's (partition-core.ts).
 * It chooses no addresses of its own: callers pass the GIC frames.
 * Spec: Linux Documentation/virt/kvm/api.rst 4.82-4.84, devices/arm-vgic-v3.rst.
 */
import { HypervisorUnavailableError, NodevmmError } from '../errors';
import { hex } from '../util/bytes';
import {
  arm64CoreRegId,
  arm64RegBytes,
  describeArm64Reg,
  KVM_ARM_VCPU_POWER_OFF,
  KVM_ARM_VCPU_PSCI_0_2,
  KVM_DEV_ARM_VGIC_CTRL_INIT,
  KVM_DEV_ARM_VGIC_GRP_ADDR,
  KVM_DEV_ARM_VGIC_GRP_CTRL,
  KVM_DEV_TYPE_ARM_VGIC_V3,
  KVM_VGIC_V3_ADDR_TYPE_DIST,
  KVM_VGIC_V3_ADDR_TYPE_REDIST,
  KVM_REG_ARM_PTIMER_CNT,
  KVM_REG_ARM_TIMER_CNT,
  kvmArmSpiIrq,
  MPIDR_EL1,
  type Arm64CoreReg,
  type Arm64CoreRegs,
} from './arm64-regs';
import type { Arm64PartitionState, Arm64RegValue, Arm64VcpuState } from './arm64-state';
import { restoreVgicV3, saveVgicV3, type VgicAttrs } from './kvm-arm64-vgic';
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
  getDeviceAttr(fd: number, group: number, attr: number | bigint): bigint;
}

export interface NativeArm64Vcpu extends NativeVcpu {
  armVcpuInit(target: number, featureBits: number[]): void;
  getOneReg(id: bigint): bigint;
  setOneReg(id: bigint, value: bigint): void;
  getRegList(): bigint[];
  getOneRegBytes(id: bigint): Uint8Array;
  setOneRegBytes(id: bigint, value: Uint8Array): void;
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
    /** KVM_ARM_VCPU_INIT's target and feature bits for this vCPU. */
    readonly init: { target: number; features: readonly number[] },
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

  /** Every register KVM lists for this vCPU, its MP state and init choice (the vCPU out of KVM_RUN). */
  saveState(): Arm64VcpuState {
    const v = this.native;
    const mpState = native(() => v.getMpState());
    const regs = native(() => v.getRegList()).map((id): Arm64RegValue => ({ id, value: arm64RegBytes(id) <= 8 ? native(() => v.getOneReg(id)) : native(() => v.getOneRegBytes(id)) }));
    return { target: this.init.target, features: [...this.init.features], mpState, regs };
  }

  /**
   * Put a saved state on this vCPU, which was initialised the same way and
   * has never run. Registers go in their saved order, except the counters
   * (KVM_REG_ARM_TIMER_CNT, KVM_REG_ARM_PTIMER_CNT), which go after the
   * rest: writing one sets the VM's counter offset, and the timers' control
   * and compare values it is measured against must be in place first (QEMU
   * too writes the virtual counter last). The MP state goes last: it says
   * whether a secondary the guest had started with PSCI runs.
   * A register this host's vCPU does not list is refused by name; one the
   * snapshot lacks (a newer kernel's) keeps its reset value.
   */
  restoreState(s: Arm64VcpuState): void {
    const v = this.native;
    const fail = (what: string, e?: unknown): never => {
      throw new NodevmmError('ERR_SNAPSHOT_RESTORE', `vcpu ${this.index}: ${what}${e ? `: ${(e as Error).message}` : ''}`, e ? { cause: e } : undefined);
    };
    if (s.target !== this.init.target) fail(`the snapshot's vcpu was kvm target ${s.target} and this host's is ${this.init.target}: restore on a host with the same cpu`);
    const sameFeatures = s.features.length === this.init.features.length && s.features.every((f) => this.init.features.includes(f));
    if (!sameFeatures) fail(`the snapshot's vcpu was initialised with features [${s.features.join(', ')}] and this one with [${this.init.features.join(', ')}]`);
    const known = new Set(native(() => v.getRegList()));
    for (const r of s.regs) if (!known.has(r.id)) fail(`the snapshot has ${describeArm64Reg(r.id)}, which this host's kvm does not list`);
    const counters = (r: Arm64RegValue) => r.id === KVM_REG_ARM_TIMER_CNT || r.id === KVM_REG_ARM_PTIMER_CNT;
    for (const r of [...s.regs.filter((r) => !counters(r)), ...s.regs.filter(counters)]) {
      try {
        if (typeof r.value === 'bigint') {
          if (arm64RegBytes(r.id) > 8) fail(`${describeArm64Reg(r.id)} is ${arm64RegBytes(r.id)} bytes wide and the snapshot holds a number for it`);
          native(() => v.setOneReg(r.id, r.value as bigint));
        } else {
          native(() => v.setOneRegBytes(r.id, r.value as Uint8Array));
        }
      } catch (e) {
        if (e instanceof NodevmmError && e.code === 'ERR_SNAPSHOT_RESTORE') throw e;
        fail(`kvm refused the saved ${describeArm64Reg(r.id)}`, e);
      }
    }
    try {
      native(() => v.setMpState(s.mpState));
    } catch (e) {
      fail(`kvm refused the saved mp state ${s.mpState}`, e);
    }
  }
}

/** vCPUs initialised for PSCI 0.2 and the GICv3 at the frames given, on a fresh VM. */
function kvmArm64Backend(opts: KvmArm64PartitionOptions): { backend: KvmBackend<KvmArm64Vcpu>; target: number; gicFd: number } {
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
      // Secondaries wait powered off until the guest's PSCI CPU_ON names them.
      const features = i === 0 ? [KVM_ARM_VCPU_PSCI_0_2] : [KVM_ARM_VCPU_PSCI_0_2, KVM_ARM_VCPU_POWER_OFF];
      const v = new KvmArm64Vcpu(i, new NativeVcpuRunner(native(() => vm.createVcpu(i)), kvm.ringEntries), { target, features });
      native(() => v.native.armVcpuInit(target, features));
      vcpus.push(v);
    }
    // CTRL_INIT must come after every vCPU exists (arm-vgic-v3.rst).
    const gic = native(() => vm.createDevice(KVM_DEV_TYPE_ARM_VGIC_V3));
    try {
      native(() => vm.setDeviceAttr(gic, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_DIST, opts.gicDistributor));
      native(() => vm.setDeviceAttr(gic, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_REDIST, opts.gicRedistributor));
      native(() => vm.setDeviceAttr(gic, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT));
    } catch (e) {
      binding.closeFd(gic);
      throw e;
    }
    const backend = new KvmBackend(kvm, {
      vcpus,
      runners: vcpus.map((v) => v.runner),
      clock: undefined,
      // `irq` is an SPI number: INTID 32 + irq of the in-kernel GIC.
      irqLine: (spi, level) => native(() => vm.irqLine(kvmArmSpiIrq(spi), level)),
      stopSite: (i) => ({ at: `pc ${hex(vcpus[i]!.getCoreReg('pc'))}` }),
    });
    return { backend, target, gicFd: gic };
  } catch (e) {
    vm.destroy();
    throw e;
  }
}

/** An arm64 partition on KVM. */
export class KvmArm64Partition extends PartitionCore<KvmArm64Vcpu, KvmBackend<KvmArm64Vcpu>> implements Arm64Partition {
  /** KVM_ARM_PREFERRED_TARGET's answer, used for every vCPU. */
  readonly target: number;
  /**
   * The VGIC's device fd, kept for its state (snapshots) and closed before
   * the VM in destroy(): it holds a reference on the VM, so the VM's
   * teardown stays on the closer thread destroy() hands the VM fd to.
   */
  private gicFd: number;

  constructor(opts: KvmArm64PartitionOptions) {
    const { backend, target, gicFd } = kvmArm64Backend(opts);
    try {
      super(backend, opts.dispatchSpinUs);
    } catch (e) {
      backend.binding.closeFd(gicFd);
      throw e;
    }
    this.target = target;
    this.gicFd = gicFd;
  }

  override destroy(): void {
    if (this.gicFd >= 0 && !this.destroyed) {
      this.backend.binding.closeFd(this.gicFd);
      this.gicFd = -1;
    }
    super.destroy();
  }

  private vgicAttrs(): VgicAttrs {
    const vm = this.backend.vm as NativeArm64Vm;
    const fd = this.gicFd;
    return {
      get: (group, attr) => native(() => vm.getDeviceAttr(fd, group, attr)),
      set: (group, attr, value) => native(() => vm.setDeviceAttr(fd, group, attr, value)),
    };
  }

  /**
   * The hypervisor's whole state of this partition (RAM apart: writeRamTo):
   * every vCPU (MP state, then each register KVM_GET_REG_LIST names), then
   * the GICv3 (kvm-arm64-vgic.ts). Only on a paused or never-started
   * partition; anything else throws VmStateError.
   */
  saveState(): Arm64PartitionState {
    this.assertQuiet('snapshot');
    const vcpus = this.vcpus.map((v) => v.saveState());
    const gic = saveVgicV3(this.vgicAttrs(), this.vcpus.map((v) => this.mpidr(v.index)));
    return { arch: 'aarch64', gic, vcpus };
  }

  /**
   * Put a saved state on this partition before it ever runs (its RAM comes
   * from addRam's privateFile): each vCPU first (its MPIDR is what the
   * GIC's per-CPU registers are addressed by), then the GIC.
   */
  restoreState(state: Arm64PartitionState): void {
    this.assertAlive('restore');
    if (!this.neverStarted) throw new NodevmmError('ERR_VM_STATE', 'a snapshot can only be restored into a partition that has never run');
    if (state.vcpus.length !== this.vcpus.length) throw new NodevmmError('ERR_SNAPSHOT_RESTORE', `the snapshot has ${state.vcpus.length} vcpus and this partition ${this.vcpus.length}`);
    state.vcpus.forEach((s, i) => this.vcpus[i]!.restoreState(s));
    restoreVgicV3(this.vgicAttrs(), this.vcpus.map((v) => this.mpidr(v.index)), state.gic);
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
