/**
 * The Windows Hypervisor Platform backend (x86_64): a WHP partition from the
 * addon's Windows build (native/whp_vm.cc), its vCPU threads (the same
 * native/vcpu_thread.cc as KVM's), guest RAM mapped with WHvMapGpaRange from
 * the very pages JS sees, and the x86 registers of each vCPU. WHP emulates
 * the local APICs (xAPIC mode); it has no IOAPIC, 8259 PIC or PIT, so the
 * partition is always irqchip 'userspace': a userspace IOAPIC reaches the
 * local APICs through `localApicBus` (MSI messages become WHvRequestInterrupt
 * calls). Everything else a partition does is the neutral core's.
 * Compiled and loaded under Wine in CI; never run on a real hypervisor
 * there (docs/windows.md).
 */
import { NodevmmError } from '../errors';
import type { GuestMemory } from '../memory/guest-memory';
import { hex } from '../util/bytes';
import type { HostRam, PartitionBackend, RamAllocation, StopSite, VcpuEvent } from './backend';
import { checkLayout } from './exit-mailbox';
import { native, whpBinding, type CpuidEntry, type NativeGuestRam, type NativeWhpBinding, type NativeWhpPartition, type NativeWhpVcpu, type WhpPartitionNativeOptions } from './native';
import { PartitionCore } from './partition-core';
import type { LocalApicBus, NotifyOps, VcpuStop, X86MsiMessage, X86Partition, X86PartitionOptions } from './partition';
import type { Route } from './route-table';
import { NativeVcpuRunner } from './vcpu-runner';
import { X86VcpuHandle } from './x86-vcpu';
import { whpInterruptFromMsi } from './whp-interrupt';
import type { X86CpuidEntry, X86Msr, X86PartitionState } from './x86-state';

/** The most vCPUs a WHP partition may have here (as KVM's MAX_VCPUS). */
export const WHP_MAX_VCPUS = 255;
/** WHV_X64_LOCAL_APIC_EMULATION_MODE xAPIC: the mode the machine's MADT describes. */
const APIC_XAPIC = 1;

function unsupported(what: string): never {
  throw new NodevmmError('ERR_UNSUPPORTED', `${what} is not available on Windows Hypervisor Platform yet (docs/windows.md)`);
}

/** One WHP vCPU's run thread (native/vcpu_thread.cc, entered through whp_vcpu_run.cc). */
type WhpVcpuRunner = NativeVcpuRunner<NativeWhpVcpu>;

/** An x86 vCPU on WHP: registers in KVM's shapes (x86-state.ts). */
export class WhpX86Vcpu extends X86VcpuHandle<NativeWhpVcpu> {
  protected msrRefused(bad: X86Msr): NodevmmError {
    return new NodevmmError('ERR_WHP_MSR', `windows hypervisor platform has no register for msr ${hex(bad.index)} (value ${hex(bad.value)}) on vcpu ${this.index}`);
  }
  /** Not read back on WHP yet: only a snapshot's CPU check asks for it, and snapshots are KVM-only (docs/snapshot.md). */
  getCpuid(): X86CpuidEntry[] {
    return unsupported('reading back the cpuid a vcpu sees');
  }
  /** WHP keeps the activity state itself; a vCPU reads as runnable (KVM_MP_STATE_RUNNABLE). */
  getMpState(): number {
    return 0;
  }
  setMpState(state: number): void {
    if (state !== 0) unsupported(`setting mp_state ${state}`);
  }
}

/** The WHP side of a partition (backend.ts's PartitionBackend). */
export class WhpBackend implements PartitionBackend<WhpX86Vcpu> {
  readonly name = 'whp';
  readonly runCall = 'WHvRunVirtualProcessor';
  readonly vcpus: readonly WhpX86Vcpu[];
  readonly runners: readonly WhpVcpuRunner[];
  readonly control: ArrayBuffer;
  /** WHP's partition time is not frozen across a pause here (WHvSuspendPartitionTime is not used yet). */
  readonly clock = undefined;

  constructor(
    readonly binding: NativeWhpBinding,
    readonly partition: NativeWhpPartition,
  ) {
    this.control = native(() => partition.controlBuffer());
    this.vcpus = [];
    this.runners = [];
  }

  /** Create the vCPUs (after construction, so a failure can destroy the partition). */
  addVcpus(count: number, ringEntries: number): void {
    const vcpus = this.vcpus as WhpX86Vcpu[];
    const runners = this.runners as WhpVcpuRunner[];
    for (let i = 0; i < count; i++) {
      const v = new WhpX86Vcpu(i, new NativeVcpuRunner(native(() => this.partition.createVcpu(i)), ringEntries));
      vcpus.push(v);
      runners.push(v.runner);
    }
  }

  // The addon refuses `shared` and `privateFile` on Windows with one sentence (no memfd, no file mapping there).
  allocateRam(size: number, opts: RamAllocation): HostRam {
    return native(() => new this.binding.GuestRam(size, opts));
  }
  mapRam(_slot: number, gpa: number, ram: HostRam, readonly: boolean): void {
    native(() => this.partition.mapGpaRange(gpa, ram as NativeGuestRam, readonly));
  }
  transfer(): void {
    unsupported('disk i/o straight into guest pages (native/block_io.cc is Linux-only)');
  }
  transferNow(): number {
    unsupported('disk i/o straight into guest pages (native/block_io.cc is Linux-only)');
  }
  setRoutes(routes: Route[]): void {
    native(() => this.partition.setRoutes(routes));
  }
  onNotify(fn: () => void): void {
    this.partition.setNotify(fn);
  }
  takeEvents(): VcpuEvent[] {
    return this.partition.takeEvents();
  }
  irqLine(irq: number): void {
    throw new NodevmmError(
      'ERR_NO_IRQCHIP',
      `windows hypervisor platform has no IOAPIC or PIC to raise irq ${irq} on: drive device interrupts through a userspace IOAPIC on the partition's localApicBus`,
    );
  }
  notifyOps(): NotifyOps {
    unsupported('eventfd kicks and irqfd interrupts (vhost, ioeventfd queue notifiers)');
  }
  ref(): void {
    this.partition.ref();
  }
  unref(): void {
    this.partition.unref();
  }
  stopSite(vcpu: number, memory: GuestMemory): StopSite | undefined {
    try {
      return this.vcpus[vcpu]!.stopSite(memory);
    } catch {
      return undefined;
    }
  }
  systemEvent(): NonNullable<VcpuStop['systemEvent']> {
    return 'other';
  }
  /** native/whp_vcpu_run.cc puts the failed call's HRESULT where KVM puts errno. */
  runFailure(code: bigint): string {
    return `HRESULT 0x${code.toString(16).padStart(8, '0')}`;
  }
  destroy(): void {
    this.partition.destroy();
  }
}

/** WHP needs no TSS or identity-map page (X86PartitionOptions' are ignored). */
export interface WhpPartitionOptions extends Omit<X86PartitionOptions, 'tssAddress' | 'identityMapAddress' | 'ram'> {
  /** CPUID answers that replace WHP's (each listed function exits to native code). Default: none, WHP's own CPUID. */
  cpuidOverrides?: CpuidEntry[];
  /** Exceptions (bit = vector) that stop the vCPU instead of reaching the guest. Default 0. */
  exceptionBitmap?: number;
}

/** Open a WHP partition with its vCPUs (processor count, xAPIC, MSR exits), or throw one sentence. */
function whpBackend(opts: WhpPartitionOptions, binding: NativeWhpBinding): WhpBackend {
  if (!Number.isInteger(opts.vcpus) || opts.vcpus < 1 || opts.vcpus > WHP_MAX_VCPUS) {
    throw new NodevmmError('ERR_INVALID_ARG', `vcpu count ${opts.vcpus} must be an integer from 1 to ${WHP_MAX_VCPUS}`);
  }
  if (opts.irqchip === 'kernel') {
    throw new NodevmmError('ERR_INVALID_ARG', "windows hypervisor platform has no in-kernel IOAPIC, PIC or PIT: create the partition with irqchip 'userspace'");
  }
  const layout = binding.layout();
  checkLayout(layout);
  const nativeOpts: WhpPartitionNativeOptions = {
    processorCount: opts.vcpus,
    apic: APIC_XAPIC,
    msrExits: true,
  };
  if (opts.cpuidOverrides) nativeOpts.cpuidOverrides = opts.cpuidOverrides;
  if (opts.exceptionBitmap) nativeOpts.exceptionBitmap = opts.exceptionBitmap;
  const partition = native(() => new binding.WhpPartition(nativeOpts));
  try {
    const backend = new WhpBackend(binding, partition);
    backend.addVcpus(opts.vcpus, layout.ringEntries);
    return backend;
  } catch (e) {
    partition.destroy();
    throw e;
  }
}

/** An x86_64 partition on Windows Hypervisor Platform. */
export class WhpPartition extends PartitionCore<WhpX86Vcpu, WhpBackend> implements X86Partition {
  /** Where a userspace IOAPIC sends its interrupts (always present: WHP has no other). */
  readonly localApicBus: LocalApicBus;

  constructor(opts: WhpPartitionOptions, binding: NativeWhpBinding = whpBinding()) {
    super(whpBackend(opts, binding), opts.dispatchSpinUs);
    const partition = this.backend.partition;
    this.localApicBus = {
      signalMsi: (message: X86MsiMessage) => {
        this.assertAlive('interrupt');
        const irq = whpInterruptFromMsi(message);
        native(() => partition.requestInterrupt(irq));
      },
      // WHvRequestInterrupt carries the trigger mode with each interrupt, and
      // WHP reports the EOI of every level-triggered one (WHvRunVpExitReasonX64ApicEoi):
      // it needs no pin table.
      setPinRoutes: () => undefined,
      // The EOI exits (native/whp_vcpu_run.cc) come through the mailbox as kind 3.
      onEoi: (fn) => this.setEoiHandler(fn),
    };
  }

  /** Snapshots need XSAVE, LAPIC and timer state WHP keeps elsewhere: KVM-only for now (docs/snapshot.md). */
  saveState(): X86PartitionState {
    throw new NodevmmError('ERR_SNAPSHOT_UNSUPPORTED', 'snapshots are not supported on windows hypervisor platform yet (KVM only)');
  }
  restoreState(_state: X86PartitionState): void {
    throw new NodevmmError('ERR_SNAPSHOT_UNSUPPORTED', 'snapshots are not supported on windows hypervisor platform yet (KVM only)');
  }

  /** MSR accesses WHP does not implement, answered natively (reads 0, writes dropped). */
  msrCounts(): { readsIgnored: bigint; writesIgnored: bigint } {
    return this.backend.partition.msrCounts();
  }
}
