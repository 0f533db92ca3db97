/**
 * One vCPU's run thread as the partition core drives it (backend.ts
 * VcpuRunner), over the native VcpuThread that KVM and WHP share
 * (native/vcpu_thread.cc): the same calls whichever backend made it.
 */
import type { VcpuRunner } from './backend';
import { VcpuSharedView } from './exit-mailbox';
import { native, type NativeVcpuThread } from './native';

export class NativeVcpuRunner<N extends NativeVcpuThread = NativeVcpuThread> implements VcpuRunner {
  readonly shared: VcpuSharedView;

  constructor(
    readonly native: N,
    ringEntries: number,
  ) {
    this.shared = new VcpuSharedView(native.sharedBuffer(), ringEntries);
  }
  start(): void {
    native(() => this.native.start());
  }
  resume(): void {
    this.native.resume();
  }
  pause(): void {
    this.native.pause();
  }
  stop(): void {
    this.native.stop();
  }
  completeExit(): void {
    this.native.completeExit();
  }
}
