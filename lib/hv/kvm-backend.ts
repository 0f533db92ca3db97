/**
 * What the x86_64 and arm64 KVM backends share: a VM fd from the addon, its
 * memory slots, vCPU threads, route table, control block and event queue
 * (native/kvm_vm.cc, vcpu_thread.cc), eventfd plumbing and file transfers.
 * Each architecture adds its own vCPU setup, interrupt lines, clock and stop
 * site through `KvmArch` (the shape of kvmtool's kvm__arch_* hooks).
 */
import { NodevmmError } from '../errors';
import type { GuestMemory } from '../memory/guest-memory';
import type { EarlyRam, HostRam, PartitionBackend, RamAllocation, StopSite, VcpuEvent } from './backend';
import { checkLayout } from './exit-mailbox';
import { native, nativeBinding, watchReadable, type NativeBinding, type NativeGuestRam, type NativeVcpu, type NativeVm } from './native';
import type { NotifyOps, RamOptions, VcpuStop } from './partition';
import { checkRamPlacement, hostRamFor } from './ram-slots';
import type { Route } from './route-table';
import type { NativeVcpuRunner } from './vcpu-runner';

/** The most vCPUs a partition may have. */
export const MAX_VCPUS = 255;

/** include/uapi/linux/kvm.h KVM_SYSTEM_EVENT_* */
const KVM_SYSTEM_EVENT: Record<number, NonNullable<VcpuStop['systemEvent']>> = { 1: 'shutdown', 2: 'reset', 3: 'crash' };

/** A fresh KVM VM fd and what its vCPUs need to share pages with JS. */
export interface KvmVm {
  readonly binding: NativeBinding;
  readonly vm: NativeVm;
  readonly ringEntries: number;
  /** Asked for first, as the VM opens (its JS buffer lives as long as the partition). */
  readonly control: ArrayBuffer;
}

/** Check the vCPU count and open a VM (the addon's layout checked against exit-mailbox.ts first). */
export function openKvmVm(vcpus: number, binding: NativeBinding = nativeBinding()): KvmVm {
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MAX_VCPUS) {
    throw new NodevmmError('ERR_INVALID_ARG', `vcpu count ${vcpus} must be an integer from 1 to ${MAX_VCPUS}`);
  }
  const layout = binding.layout();
  checkLayout(layout);
  const vm = native(() => new binding.Vm());
  try {
    return { binding, vm, ringEntries: layout.ringEntries, control: native(() => vm.controlBuffer()) };
  } catch (e) {
    vm.destroy();
    throw e;
  }
}

/**
 * Resolves once every VM fd that a destroy handed to a closer thread is
 * closed. destroy() returns with the vCPU threads joined, their fds closed
 * and guest RAM unmapped; the VM fd, whose close makes KVM tear the VM down
 * and wait for grace periods (~10 ms on KVM-PVM), closes on a closer thread
 * (at most 4 at once; beyond that destroy() closes it itself). For leak
 * checks and callers that count fds; rejects after `timeoutMs`.
 */
export async function vmClosesSettled(timeoutMs = 10_000, binding: NativeBinding = nativeBinding()): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (binding.pendingCloses() > 0) {
    if (Date.now() > end) throw new NodevmmError('ERR_VM_CLOSE_TIMEOUT', `${binding.pendingCloses()} VM fds were still closing after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/**
 * Allocate `ram` and map it in slots 0, 1, ... now, on a VM that has no
 * irqchip yet. A slot added once KVM_CREATE_IRQCHIP has run waits for an
 * SRCU grace period the kernel only finishes on a timer tick (two 250 Hz
 * ticks, ~7.6 ms, on KVM-PVM: `perf record -e sched:sched_switch` shows the
 * wait in kvm_swap_active_memslots); one added before it takes ~0.02 ms
 * (scripts/bench/restore-baseline.c measures both orders). On failure the
 * RAM made so far is released (the caller destroys the VM) and it throws.
 */
export function mapEarlyRam(kvm: KvmVm, ram: readonly RamOptions[]): EarlyRam[] {
  const out: EarlyRam[] = [];
  const allocator = { allocateRam: (size: number, o: RamAllocation) => native(() => new kvm.binding.GuestRam(size, o)) };
  try {
    for (const opts of ram) {
      const name = checkRamPlacement(opts, out.map((e) => ({ gpa: e.opts.gpa, size: e.opts.size, name: e.name })));
      const r = hostRamFor(allocator, opts, name);
      out.push({ opts, name, ram: r });
      native(() => kvm.vm.setUserMemoryRegion(out.length - 1, opts.gpa, r as NativeGuestRam, 0, opts.size, { readonly: !!opts.readonly }));
    }
    return out;
  } catch (e) {
    kvm.vm.destroy();
    for (const x of out) x.ram.release();
    throw e;
  }
}

/** One KVM vCPU's run thread (native/vcpu_thread.cc). */
export type KvmVcpuRunner = NativeVcpuRunner<NativeVcpu>;

/** What one architecture adds to the shared KVM backend. */
export interface KvmArch<V> {
  readonly vcpus: readonly V[];
  readonly runners: readonly KvmVcpuRunner[];
  readonly clock: PartitionBackend['clock'];
  irqLine(irq: number, level: boolean): void;
  stopSite(vcpu: number, memory: GuestMemory): StopSite | undefined;
}

export class KvmBackend<V> implements PartitionBackend<V> {
  readonly name = 'kvm';
  readonly runCall = 'KVM_RUN';
  readonly vcpus: readonly V[];
  readonly runners: readonly KvmVcpuRunner[];
  readonly control: ArrayBuffer;
  readonly clock: PartitionBackend['clock'];
  readonly binding: NativeBinding;
  readonly vm: NativeVm;

  /** mapEarlyRam's RAM until the core takes it (takeEarlyRam). */
  private earlyRam: EarlyRam[];

  constructor(
    kvm: KvmVm,
    private readonly arch: KvmArch<V>,
    earlyRam: EarlyRam[] = [],
  ) {
    this.earlyRam = earlyRam;
    this.binding = kvm.binding;
    this.vm = kvm.vm;
    this.vcpus = arch.vcpus;
    this.runners = arch.runners;
    this.clock = arch.clock;
    this.control = kvm.control;
  }

  takeEarlyRam(): EarlyRam[] {
    const e = this.earlyRam;
    this.earlyRam = [];
    return e;
  }
  allocateRam(size: number, opts: RamAllocation): HostRam {
    return native(() => new this.binding.GuestRam(size, opts));
  }
  /**
   * Creating a slot makes KVM wait for an SRCU grace period (~4.6 ms on KVM-PVM, where a
   * churning process spent a third of its JS thread there): it runs on the thread pool while
   * this thread builds the rest of the machine. A snapshot's RAM (`restored`) is mapped at once
   * instead: the saved MSRs a restore sets next (PV EOI, async page faults) make KVM look up
   * their guest pages, which must be in a slot by then.
   */
  mapRam(slot: number, gpa: number, ram: HostRam, readonly: boolean, restored: boolean): void | Promise<void> {
    const background = !restored;
    return native(() => this.vm.setUserMemoryRegion(slot, gpa, ram as NativeGuestRam, 0, ram.size, { readonly, background }));
  }
  transfer(op: 0 | 1 | 2, fd: number, position: number, rams: readonly HostRam[], segments: Float64Array, done: (error: Error | null, bytes: number) => void): void {
    native(() => this.binding.blockIo(op, fd, position, rams as NativeGuestRam[], segments, done));
  }
  transferNow(op: 0 | 1, fd: number, position: number, rams: readonly HostRam[], segments: Float64Array, nowait: boolean): number {
    return native(() => this.binding.blockIoNow(op, fd, position, rams as NativeGuestRam[], segments, nowait));
  }
  setRoutes(routes: Route[]): void {
    native(() => this.vm.setRoutes(routes));
  }
  onNotify(fn: () => void): void {
    this.vm.setNotify(fn);
  }
  takeEvents(): VcpuEvent[] {
    return this.vm.takeEvents();
  }
  irqLine(irq: number, level: boolean): void {
    this.arch.irqLine(irq, level);
  }
  /** eventfds registered on this VM's fd as ioeventfds (kicks) and irqfds (interrupts). */
  notifyOps(): NotifyOps {
    const binding = this.binding;
    const vm = this.vm;
    return {
      eventfd: () => native(() => binding.eventfd(0)),
      signal: (fd) => native(() => binding.eventfdWrite(fd, 1)),
      close: (fd) => binding.closeFd(fd),
      ioeventfd: (fd, address, length, datamatch, assign) => native(() => vm.ioeventfd(fd, address, length, { datamatch, deassign: !assign })),
      irqfd: (fd, gsi, assign) => native(() => vm.irqfd(fd, gsi, { deassign: !assign })),
      drain: (fd) => native(() => binding.eventfdRead(fd)),
      watch: watchReadable,
    };
  }
  ref(): void {
    this.vm.ref();
  }
  unref(): void {
    this.vm.unref();
  }
  stopSite(vcpu: number, memory: GuestMemory): StopSite | undefined {
    try {
      return this.arch.stopSite(vcpu, memory);
    } catch {
      // registers are best effort: the vCPU may be in a state KVM won't report
      return undefined;
    }
  }
  systemEvent(subtype: number): NonNullable<VcpuStop['systemEvent']> {
    return KVM_SYSTEM_EVENT[subtype] ?? 'other';
  }
  destroy(): void {
    this.vm.destroy();
    // Early RAM the core never took (its constructor failed first).
    for (const e of this.takeEarlyRam()) e.ram.release();
  }
}
