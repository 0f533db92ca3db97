/**
 * The hypervisor-neutral contract the VM layer programs against. The KVM
 * backend (kvm-partition.ts) implements it today; a Windows Hypervisor
 * Platform or arm64 backend implements the same interfaces later, so
 * callers never change.
 */
import type { EventEmitter } from 'node:events';
import type { GuestMemory } from '../memory/guest-memory';
import type { IoBus } from './io-bus';
import type { X86Msr, X86Regs, X86Sregs } from './x86-state';

/** Why a vCPU left its run loop for good. */
export interface VcpuStop {
  vcpu: number;
  kind: 'hlt' | 'triple-fault' | 'system-event' | 'fail-entry' | 'internal-error' | 'debug' | 'unknown' | 'host-error';
  message: string;
  /** For system events: what the guest asked for. */
  systemEvent?: 'shutdown' | 'reset' | 'crash' | 'other';
  rip?: bigint;
  /** Up to 15 bytes at RIP, when they could be read (emulation failures). */
  instructionBytes?: Uint8Array;
  suberror?: number;
  detail?: bigint[];
  error?: Error;
}

export interface RamOptions {
  gpa: number;
  size: number;
  readonly?: boolean;
  name?: string;
  /** Back with a memfd (shareable with other processes) instead of anonymous memory. */
  memfd?: boolean;
  /**
   * Ask for transparent huge pages (MADV_HUGEPAGE; default true), as QEMU
   * does for guest RAM: fewer nested-page faults and TLB misses for the
   * guest. Honoured where the host's THP mode allows it.
   */
  hugepages?: boolean;
}

export interface VirtualProcessor {
  readonly index: number;
  readonly state: string;
  getRegs(): X86Regs;
  setRegs(regs: Partial<X86Regs>): void;
  getSregs(): X86Sregs;
  setSregs(sregs: Partial<X86Sregs>): void;
  getMsrs(indices: number[]): X86Msr[];
  setMsrs(msrs: X86Msr[]): void;
  getMpState(): number;
  setMpState(state: number): void;
}

export interface PartitionStats {
  exitsToJs: bigint;
  exitsNative: bigint;
  exitsPosted: bigint;
  unclaimedReads: bigint;
  unclaimedWrites: bigint;
  notifications: number;
  /** Dispatches the 50 ms watchdog had to start because no wakeup arrived (should stay 0). */
  rescues: number;
}

export interface Partition extends EventEmitter {
  readonly memory: GuestMemory;
  readonly pio: IoBus;
  readonly mmio: IoBus;
  readonly vcpus: readonly VirtualProcessor[];
  addRam(opts: RamOptions): void;
  /** Start every vCPU thread (paused) and let them run. */
  start(): void;
  resume(): void;
  /** Resolves once every vCPU is paused or has stopped. */
  pause(): Promise<void>;
  setIrqLine(irq: number, level: boolean): void;
  stats(): PartitionStats;
  destroy(): void;
  readonly destroyed: boolean;
}
