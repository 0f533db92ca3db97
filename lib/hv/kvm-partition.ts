/**
 * The KVM x86_64 backend: the shared KVM VM (kvm-backend.ts) plus the
 * in-kernel LAPIC/IOAPIC/PIC and PIT (or, with irqchip 'userspace', only the
 * LAPICs: KVM_CAP_SPLIT_IRQCHIP), the private pages Intel VMX needs, the
 * adjusted CPUID on every vCPU, kvmclock frozen across a pause, and the x86
 * registers of each vCPU. Everything else a partition does is the neutral
 * core's (partition-core.ts).
 */
import { NodevmmError } from '../errors';
import { hex } from '../util/bytes';
import { adjustCpuid } from './cpuid';
import { KvmBackend, mapEarlyRam, openKvmVm, type KvmVm } from './kvm-backend';
import { native, nativeBinding, type CpuidEntry, type NativeBinding, type NativeVcpu, type NativeVm } from './native';
import { PartitionCore } from './partition-core';
import { NativeVcpuRunner } from './vcpu-runner';
import { X86VcpuHandle } from './x86-vcpu';
import type { LocalApicBus, RamOptions, X86Irqchip, X86MsiMessage, X86Partition } from './partition';
import type { X86Msr, X86PartitionState, X86VcpuState, X86VmState } from './x86-state';

export type { FileIoMode } from './partition';

export interface KvmPartitionOptions {
  vcpus: number;
  /**
   * true or 'kernel' (default): in-kernel LAPIC/IOAPIC/PIC (KVM_CREATE_IRQCHIP).
   * 'userspace': in-kernel LAPICs only (KVM_CAP_SPLIT_IRQCHIP); the IOAPIC,
   * PIC and PIT are the caller's, reached through `localApicBus`.
   * false: no interrupt controller at all (HLT exits to userspace).
   */
  irqchip?: boolean | X86Irqchip;
  /** IOAPIC pins (GSIs) KVM keeps for the userspace IOAPIC's routes with irqchip 'userspace'. Default 24 (an 82093AA). */
  ioapicPins?: number;
  /** In-kernel PIT (KVM_CREATE_PIT2) with the in-kernel irqchip. Default true. */
  pit?: boolean;
  /** GPA of the 3-page TSS area Intel VMX needs below 4 GiB; must not be RAM. Required with the irqchip (the machine's layout names it: KVM_TSS_START). */
  tssAddress?: number;
  /** GPA of the identity-map page Intel VMX needs for real mode; must not be RAM. Required with the irqchip (KVM_IDENTITY_MAP_START). */
  identityMapAddress?: number;
  /** Set the adjusted supported CPUID on every vCPU. Default true. */
  cpuid?: boolean;
  /** See DEFAULT_DISPATCH_SPIN_US (partition-core.ts); 0 turns polling off. */
  dispatchSpinUs?: number;
  /** See X86PartitionOptions.ram. */
  ram?: RamOptions[];
}

/** include/uapi/linux/kvm.h */
const KVM_CAP_TSC_DEADLINE_TIMER = 72;
const KVM_CAP_SPLIT_IRQCHIP = 121;
const DEFAULT_IOAPIC_PINS = 24;

let cpuidCache: CpuidEntry[] | undefined;
/** KVM_GET_SUPPORTED_CPUID answers the same for the life of the process: ask once. */
export function supportedCpuid(binding: NativeBinding = nativeBinding()): CpuidEntry[] {
  cpuidCache ??= native(() => binding.getSupportedCpuid());
  return cpuidCache;
}

let msrIndexCache: number[] | undefined;
/** KVM_GET_MSR_INDEX_LIST: the MSRs KVM can save and restore (asked once per process). */
export function savedMsrIndices(binding: NativeBinding = nativeBinding()): number[] {
  msrIndexCache ??= native(() => binding.getMsrIndexList());
  return msrIndexCache;
}

/** KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE, _IOAPIC (arch/x86/include/uapi/asm/kvm.h). */
const IRQCHIP = { picMaster: 0, picSlave: 1, ioapic: 2 } as const;

/** An x86 vCPU on KVM: the shared x86 handle plus the state only KVM gives (FPU, XSAVE, events, CPUID). */
export class KvmX86Vcpu extends X86VcpuHandle<NativeVcpu> {
  protected msrRefused(bad: X86Msr): NodevmmError {
    return new NodevmmError('ERR_KVM_MSR', `kvm refused msr ${hex(bad.index)} = ${hex(bad.value)} on vcpu ${this.index}`);
  }
  /** The CPUID this vCPU answers the guest with (KVM_GET_CPUID2: what the hypervisor made of what it was given). */
  getCpuid(): CpuidEntry[] {
    return native(() => this.native.getCpuid2());
  }
  getMpState(): number {
    return native(() => this.native.getMpState());
  }
  setMpState(state: number): void {
    native(() => this.native.setMpState(state));
  }
  getFpu(): Uint8Array {
    return native(() => this.native.getFpu());
  }
  setFpu(fpu: Uint8Array): void {
    native(() => this.native.setFpu(fpu));
  }
  setLapic(l: Uint8Array): void {
    native(() => this.native.setLapic(l));
  }
  getXcrs(): { xcr: number; value: bigint }[] {
    return native(() => this.native.getXcrs());
  }
  setXcrs(x: { xcr: number; value: bigint }[]): void {
    native(() => this.native.setXcrs(x));
  }
  getVcpuEvents(): Uint8Array {
    return native(() => this.native.getVcpuEvents());
  }
  setVcpuEvents(e: Uint8Array): void {
    native(() => this.native.setVcpuEvents(e));
  }

  /**
   * Everything KVM keeps of this vCPU, in the order Firecracker and Cloud
   * Hypervisor read it: MP state first (reading it makes KVM accept pending
   * INIT/SIPI into the LAPIC, which the reads after must see), vCPU events
   * last (the other reads may still move pending events). `msrIndices`: the
   * MSRs to try (KVM_GET_MSR_INDEX_LIST); those KVM refuses to read are left out.
   */
  saveState(msrIndices: readonly number[]): X86VcpuState {
    const v = this.native;
    const mpState = native(() => v.getMpState());
    const regs = native(() => v.getRegs());
    const sregs = native(() => v.getSregs());
    const xsave = native(() => v.getXsave());
    const xcrs = native(() => v.getXcrs());
    const debugRegs = native(() => v.getDebugRegs());
    const lapic = native(() => v.getLapic());
    const tscKhz = native(() => v.getTscKhz());
    const cpuid = native(() => v.getCpuid2());
    const msrs = readableMsrs(v, msrIndices);
    const vcpuEvents = native(() => v.getVcpuEvents());
    return { mpState, regs, sregs, xsave, xcrs, debugRegs, lapic, msrs, vcpuEvents, cpuid, tscKhz };
  }

  /**
   * Put a saved state on this (fresh, never run) vCPU. The order is KVM's
   * constraints (Firecracker's restore_state records them): CPUID before
   * anything that depends on it; SET_REGS before SET_VCPU_EVENTS (it clears
   * a pending exception that the events bring back); SET_SREGS before
   * SET_LAPIC (sregs carry the APIC base); SET_LAPIC before SET_MSRS (the
   * TSC-deadline MSR only sticks with the LAPIC configured); events last.
   */
  restoreState(s: X86VcpuState): void {
    const v = this.native;
    const step = (what: string, fn: () => void) => {
      try {
        native(fn);
      } catch (e) {
        throw new NodevmmError('ERR_SNAPSHOT_RESTORE', `kvm refused the saved ${what} of vcpu ${this.index}: ${(e as Error).message}`, { cause: e });
      }
    };
    step('cpuid', () => v.setCpuid2(s.cpuid));
    step('mp state', () => v.setMpState(s.mpState));
    step('registers', () => v.setRegs(s.regs));
    step('special registers', () => v.setSregs(s.sregs));
    step('xsave area', () => v.setXsave(s.xsave));
    step('xcrs', () => v.setXcrs(s.xcrs));
    step('debug registers', () => v.setDebugRegs(s.debugRegs));
    step('local apic', () => v.setLapic(s.lapic));
    this.setMsrs(s.msrs);
    step('vcpu events', () => v.setVcpuEvents(s.vcpuEvents));
  }

}

/**
 * The MSRs of `indices` KVM reads on this vCPU. KVM_GET_MSRS stops at the
 * first index it refuses (an MSR the index list names but this CPU model
 * lacks): skip that one and go on from the next.
 */
function readableMsrs(v: NativeVcpu, indices: readonly number[]): X86Msr[] {
  const out: X86Msr[] = [];
  let rest = indices.slice();
  while (rest.length) {
    const got = native(() => v.getMsrs(rest));
    out.push(...got);
    rest = rest.slice(got.length + 1);
  }
  return out;
}

/** Irqchip, PIT, VMX pages and CPUID on a fresh VM; its vCPUs. */
function kvmX86Backend(opts: KvmPartitionOptions): KvmBackend<KvmX86Vcpu> {
  const mode = irqchipMode(opts.irqchip);
  const irqchip = mode !== 'none';
  const { tssAddress, identityMapAddress } = opts;
  const kvm: KvmVm = openKvmVm(opts.vcpus);
  const { vm, binding } = kvm;
  // Before the irqchip: see mapEarlyRam.
  const early = mapEarlyRam(kvm, opts.ram ?? []);
  try {
    // The hypervisor chooses no guest addresses: the machine's layout does (arch/x86_64/layout.ts).
    if (irqchip && (tssAddress === undefined || identityMapAddress === undefined)) {
      throw new NodevmmError('ERR_INVALID_ARG', 'an x86 partition with the in-kernel irqchip needs tssAddress and identityMapAddress (pages outside RAM below 4 GiB that KVM keeps for Intel VMX; arch/x86_64/layout.ts names them)');
    }
    if (irqchip) {
      native(() => vm.setTssAddr(tssAddress!));
      native(() => vm.setIdentityMapAddr(identityMapAddress!));
    }
    if (mode === 'kernel') {
      native(() => vm.createIrqchip());
      if (opts.pit ?? true) native(() => vm.createPit2(0));
    } else if (mode === 'userspace') {
      const pins = opts.ioapicPins ?? DEFAULT_IOAPIC_PINS;
      if (!Number.isInteger(pins) || pins < 1 || pins > 256) throw new NodevmmError('ERR_INVALID_ARG', `ioapicPins ${pins} must be an integer from 1 to 256`);
      if (native(() => vm.checkExtension(KVM_CAP_SPLIT_IRQCHIP)) <= 0) {
        throw new NodevmmError('ERR_KVM_CAP', "this host's KVM lacks KVM_CAP_SPLIT_IRQCHIP (Linux 4.5+), which irqchip 'userspace' needs: use irqchip 'kernel'");
      }
      // Before any vCPU exists (api.rst 7.8): KVM keeps `pins` GSIs for the userspace IOAPIC's routes.
      native(() => vm.enableCap(KVM_CAP_SPLIT_IRQCHIP, [pins]));
    }
    const cpuid = opts.cpuid ?? true ? supportedCpuid(binding) : undefined;
    const tscDeadline = irqchip && native(() => vm.checkExtension(KVM_CAP_TSC_DEADLINE_TIMER)) > 0;
    const vcpus: KvmX86Vcpu[] = [];
    for (let i = 0; i < opts.vcpus; i++) {
      const nv = native(() => vm.createVcpu(i));
      if (cpuid) native(() => nv.setCpuid2(adjustCpuid(cpuid, i, opts.vcpus, { tscDeadline })));
      vcpus.push(new KvmX86Vcpu(i, new NativeVcpuRunner(nv, kvm.ringEntries)));
    }
    return new KvmBackend(kvm, {
      vcpus,
      runners: vcpus.map((v) => v.runner),
      // kvmclock (KVM_GET/SET_CLOCK) needs the in-kernel irqchip.
      clock: irqchip ? { get: () => native(() => vm.getClock()), set: (ns) => native(() => vm.setClock(ns)) } : undefined,
      irqLine: (irq, level) => native(() => vm.irqLine(irq, level)),
      stopSite: (i, memory) => vcpus[i]!.stopSite(memory),
    }, early);
  } catch (e) {
    vm.destroy();
    for (const r of early) r.ram.release();
    throw e;
  }
}

function irqchipMode(irqchip: KvmPartitionOptions['irqchip']): X86Irqchip | 'none' {
  if (irqchip === undefined || irqchip === true || irqchip === 'kernel') return 'kernel';
  if (irqchip === false) return 'none';
  if (irqchip === 'userspace') return 'userspace';
  throw new NodevmmError('ERR_INVALID_ARG', `irqchip ${JSON.stringify(irqchip)} must be 'kernel', 'userspace', true or false`);
}

/** An x86_64 partition on KVM. */
export class KvmPartition extends PartitionCore<KvmX86Vcpu, KvmBackend<KvmX86Vcpu>> implements X86Partition {
  readonly localApicBus: LocalApicBus | undefined;
  /** The in-kernel PIC pair and IOAPIC (irqchip 'kernel'); 'userspace' keeps only the LAPICs in KVM. */
  private readonly irqchip: boolean;
  private readonly userspaceIrqchip: boolean;
  private readonly pit: boolean;

  constructor(opts: KvmPartitionOptions) {
    super(kvmX86Backend(opts), opts.dispatchSpinUs);
    const mode = irqchipMode(opts.irqchip);
    this.irqchip = mode === 'kernel';
    this.userspaceIrqchip = mode === 'userspace';
    this.pit = this.irqchip && (opts.pit ?? true);
    if (this.userspaceIrqchip) this.localApicBus = new KvmLocalApicBus(this, (fn) => this.setEoiHandler(fn));
  }

  /**
   * The hypervisor's whole state of this partition (RAM apart: writeRamTo):
   * in-kernel PIC, IOAPIC and PIT, kvmclock as the pause froze it, and every
   * vCPU. Only on a partition that is paused (pause() resolved) or never
   * started; anything else throws VmStateError.
   */
  saveState(): X86PartitionState {
    this.assertQuiet('snapshot');
    // The TypeScript IOAPIC and PIT of irqchip 'userspace' keep no saved state yet (docs/snapshot.md).
    if (this.userspaceIrqchip) throw new NodevmmError('ERR_SNAPSHOT_UNSUPPORTED', "a vm with irqchip 'userspace' cannot be snapshotted yet: its TypeScript IOAPIC and PIT have no saved state; use irqchip 'kernel'");
    const vm = this.backend.vm;
    const vmState: X86VmState = {};
    if (this.irqchip) {
      vmState.irqchip = {
        picMaster: native(() => vm.getIrqchip(IRQCHIP.picMaster)),
        picSlave: native(() => vm.getIrqchip(IRQCHIP.picSlave)),
        ioapic: native(() => vm.getIrqchip(IRQCHIP.ioapic)),
      };
      const clock = this.frozenClock();
      if (clock !== undefined) vmState.clockNs = clock;
    }
    if (this.pit) vmState.pit = native(() => vm.getPit2());
    const msrs = savedMsrIndices(this.backend.binding);
    return { arch: 'x86_64', vm: vmState, vcpus: this.vcpus.map((v) => v.saveState(msrs)) };
  }

  /**
   * Put a saved state on this partition before it starts (its RAM comes
   * from addRam's privateFile). It must have been created with the same
   * vCPU count, irqchip and PIT. The VM-wide parts go first (PIT, then the
   * PICs and IOAPIC, as Firecracker restores them), then each vCPU; the
   * kvmclock resumes at the saved time when start() runs the vCPUs.
   */
  restoreState(state: X86PartitionState): void {
    this.assertAlive('restore');
    if (!this.neverStarted) throw new NodevmmError('ERR_VM_STATE', 'a snapshot can only be restored into a partition that has never run');
    if (state.vcpus.length !== this.vcpus.length) throw new NodevmmError('ERR_SNAPSHOT_RESTORE', `the snapshot has ${state.vcpus.length} vcpus and this partition ${this.vcpus.length}`);
    if (!!state.vm.irqchip !== this.irqchip || !!state.vm.pit !== this.pit) {
      throw new NodevmmError('ERR_SNAPSHOT_RESTORE', `the snapshot was taken ${state.vm.irqchip ? 'with' : 'without'} the in-kernel irqchip and ${state.vm.pit ? 'with' : 'without'} the PIT; this partition differs`);
    }
    const vm = this.backend.vm;
    const step = (what: string, fn: () => void) => {
      try {
        native(fn);
      } catch (e) {
        throw new NodevmmError('ERR_SNAPSHOT_RESTORE', `kvm refused the saved ${what}: ${(e as Error).message}`, { cause: e });
      }
    };
    if (state.vm.pit) step('pit state', () => vm.setPit2(state.vm.pit!));
    if (state.vm.irqchip) {
      step('pic master state', () => vm.setIrqchip(state.vm.irqchip!.picMaster));
      step('pic slave state', () => vm.setIrqchip(state.vm.irqchip!.picSlave));
      step('ioapic state', () => vm.setIrqchip(state.vm.irqchip!.ioapic));
    }
    state.vcpus.forEach((s, i) => this.vcpus[i]!.restoreState(s));
    if (state.vm.clockNs !== undefined) this.resumeClockAt(state.vm.clockNs);
  }

  /** Raw access for advanced users (irqfd, ioeventfd, GSI routing, MSI). */
  get nativeVm(): NativeVm {
    this.assertAlive('use');
    return this.backend.vm;
  }
}

/**
 * The split irqchip's side of a userspace IOAPIC: KVM_SIGNAL_MSI for each
 * interrupt, and the pins' messages as MSI routes of GSIs 0..pins-1
 * (KVM_SET_GSI_ROUTING), which is how KVM learns the vectors whose EOIs it
 * must exit for (KVM_EXIT_IOAPIC_EOI, api.rst) and where irqfds on those
 * GSIs deliver.
 */
class KvmLocalApicBus implements LocalApicBus {
  constructor(
    private readonly partition: KvmPartition,
    private readonly setEoi: (fn: (vector: number) => void) => void,
  ) {}
  signalMsi(m: X86MsiMessage): void {
    if (this.partition.destroyed) return;
    // 0: the message was blocked (e.g. the guest's APIC is disabled), as on hardware.
    native(() => this.partition.nativeVm.signalMsi(m.address, m.data));
  }
  setPinRoutes(routes: ReadonlyArray<X86MsiMessage | undefined>): void {
    if (this.partition.destroyed) return;
    const entries: { gsi: number; type: 'msi'; addressLo: number; addressHi: number; data: number }[] = [];
    routes.forEach((m, gsi) => m && entries.push({ gsi, type: 'msi', addressLo: m.address >>> 0, addressHi: 0, data: m.data >>> 0 }));
    native(() => this.partition.nativeVm.setGsiRouting(entries));
  }
  onEoi(fn: (vector: number) => void): void {
    this.setEoi(fn);
  }
}
