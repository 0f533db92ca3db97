/**
 * What an x86 vCPU handle does the same on every backend: the registers in
 * KVM's shapes (x86-state.ts), the MSRs, the local APIC page, the exit it
 * waits on and where it stopped. The KVM and WHP handles (kvm-partition.ts,
 * whp-partition.ts) add what only their hypervisor has.
 */
import type { NodevmmError } from '../errors';
import type { GuestMemory } from '../memory/guest-memory';
import type { StopSite } from './backend';
import { native, type NativeX86Vcpu } from './native';
import type { PendingExit, X86VirtualProcessor } from './partition';
import { pendingExitOf, x86StopSite } from './stop-description';
import type { NativeVcpuRunner } from './vcpu-runner';
import type { X86CpuidEntry, X86Msr, X86Regs, X86Sregs } from './x86-state';

export abstract class X86VcpuHandle<N extends NativeX86Vcpu> implements X86VirtualProcessor {
  constructor(
    readonly index: number,
    readonly runner: NativeVcpuRunner<N>,
  ) {}
  protected get native(): N {
    return this.runner.native;
  }
  get state(): string {
    return this.native.state;
  }
  pendingExit(): PendingExit | undefined {
    return pendingExitOf(this.runner.shared);
  }
  getRegs(): X86Regs {
    return native(() => this.native.getRegs());
  }
  setRegs(regs: Partial<X86Regs>): void {
    native(() => this.native.setRegs(regs));
  }
  getSregs(): X86Sregs {
    return native(() => this.native.getSregs());
  }
  setSregs(sregs: Partial<X86Sregs>): void {
    native(() => this.native.setSregs(sregs));
  }
  getMsrs(indices: number[]): X86Msr[] {
    return native(() => this.native.getMsrs(indices));
  }
  /** Sets every MSR or throws naming the first one the hypervisor refused (the native call stops there). */
  setMsrs(msrs: X86Msr[]): void {
    const n = native(() => this.native.setMsrs(msrs));
    if (n !== msrs.length) throw this.msrRefused(msrs[n]!);
  }
  getLapic(): Uint8Array {
    return native(() => this.native.getLapic());
  }
  stopSite(memory: GuestMemory): StopSite {
    return x86StopSite(this, (linear) => this.native.translate(linear), memory);
  }
  /** The error for an MSR the hypervisor would not set, in its own words. */
  protected abstract msrRefused(msr: X86Msr): NodevmmError;
  abstract getMpState(): number;
  abstract setMpState(state: number): void;
  abstract getCpuid(): X86CpuidEntry[];
}
