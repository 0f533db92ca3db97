/**
 * TypeScript view of the per-vCPU shared page (native/exit_mailbox.h,
 * native/kvm_vm.h VcpuShared) and the per-VM control block. Offsets come
 * from the addon's `layout()` and are checked against the constants below
 * once, so a mismatch fails loudly at load instead of corrupting exits.
 */
import { NodevmmError } from '../errors';
import type { NativeLayout } from './native';

export const MAILBOX_IDLE = 0;
export const MAILBOX_PENDING = 1;
export const MAILBOX_DONE = 2;
export const MAILBOX_ABORTED = 3;
export const EXIT_KIND_PIO = 1;
export const EXIT_KIND_MMIO = 2;

/** Offsets this file was written against. */
const EXPECTED: Partial<NativeLayout> = {
  mailboxState: 0,
  mailboxKind: 4,
  mailboxIsWrite: 8,
  mailboxSize_: 12,
  mailboxAddress: 16,
  mailboxData: 24,
  mailboxExitsToJs: 40,
  mailboxExitsNative: 48,
  mailboxExitsPosted: 56,
  ringHead: 64,
  ringTail: 128,
  ring: 192,
  postedWriteSize: 24,
  controlNotifyPending: 0,
  controlEventCount: 4,
  controlUnclaimedReads: 64,
  controlUnclaimedWrites: 72,
  controlShadow: 128,
};

export function checkLayout(layout: NativeLayout): void {
  for (const [k, v] of Object.entries(EXPECTED)) {
    if ((layout as unknown as Record<string, number>)[k] !== v) {
      throw new NodevmmError('ERR_NATIVE_LAYOUT', `native layout field ${k} is ${(layout as unknown as Record<string, number>)[k]}, lib/hv/exit-mailbox.ts expects ${v}: the addon and the TypeScript build are out of step (rebuild both)`);
    }
  }
}

/** The vCPU side of one exit, as JS sees it. All accessors read shared memory directly. */
export class VcpuSharedView {
  readonly i32: Int32Array;
  readonly u32: Uint32Array;
  readonly dv: DataView;
  readonly ringEntries: number;

  constructor(buffer: ArrayBuffer, ringEntries: number) {
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.dv = new DataView(buffer);
    this.ringEntries = ringEntries;
  }

  get pending(): boolean {
    return Atomics.load(this.i32, 0) === MAILBOX_PENDING;
  }
  get kind(): number {
    return this.u32[1]!;
  }
  get isWrite(): boolean {
    return this.u32[2] !== 0;
  }
  get size(): number {
    return this.u32[3]!;
  }
  /** Port or GPA (GPAs above 2^53 cannot occur: guest physical addresses have at most 52 bits). */
  get address(): number {
    return this.u32[4]! + this.u32[5]! * 0x100000000;
  }
  /** Written value (low 32 bits plus high for 8-byte MMIO). */
  get data(): number {
    return this.u32[6]! + this.u32[7]! * 0x100000000;
  }
  /**
   * Mark the exit answered. Returns true when the vCPU thread is asleep and
   * must be woken through the addon (the vCPU stores `sleeping` then reads
   * `state`; we store `state` then read `sleeping`: one side sees the other).
   */
  complete(): boolean {
    if (Atomics.compareExchange(this.i32, 0, MAILBOX_PENDING, MAILBOX_DONE) !== MAILBOX_PENDING) return false;
    return Atomics.load(this.i32, 8) !== 0;
  }
  setReadResult(value: number): void {
    this.u32[6] = value >>> 0;
    this.u32[7] = Math.floor(value / 0x100000000) >>> 0;
  }
  get exitsToJs(): bigint {
    return this.dv.getBigUint64(40, true);
  }
  get exitsNative(): bigint {
    return this.dv.getBigUint64(48, true);
  }
  get exitsPosted(): bigint {
    return this.dv.getBigUint64(56, true);
  }

  /** True when posted writes are queued and not yet applied. */
  postedQueued(): boolean {
    return Atomics.load(this.u32, 16) !== this.u32[32];
  }

  /** Apply every queued posted write in order; returns how many. */
  drainPosted(apply: (kind: number, address: number, size: number, value: number) => unknown): number {
    let n = 0;
    for (;;) {
      const head = Atomics.load(this.u32, 16);
      let tail = this.u32[32]!;
      if (head === tail) return n;
      while (tail !== head) {
        const at = 48 + (tail % this.ringEntries) * 6; // 192 bytes / 4, entries of 24 bytes
        const kind = this.u32[at]!;
        const size = this.u32[at + 1]!;
        const address = this.u32[at + 2]! + this.u32[at + 3]! * 0x100000000;
        const value = this.u32[at + 4]! + this.u32[at + 5]! * 0x100000000;
        apply(kind, address, size, value);
        tail = (tail + 1) >>> 0;
        n++;
      }
      // Store tail, then re-read head (the vCPU stores head, then reads
      // tail): one of the two sides always sees the other's update.
      Atomics.store(this.u32, 32, tail);
    }
  }
}
