/**
 * TypeScript view of the per-vCPU shared page (native/exit_mailbox.h,
 * native/kvm_vm.h VcpuShared) and the per-VM control block. Offsets come
 * from the addon's `layout()` and are checked against the constants below
 * once, so a mismatch fails loudly at load instead of corrupting exits.
 */
import { NodevmmError } from '../errors';
import type { ShadowBlock, SharedWord } from './io-bus';

export const MAILBOX_IDLE = 0;
export const MAILBOX_PENDING = 1;
/** 2 was DONE: an answered exit now goes straight back to IDLE (native/exit_mailbox.h). */
export const MAILBOX_ABORTED = 3;
/** VmControl.notify_pending (native NotifyState): JS waits; any exit, event or first posted write wakes it. */
export const NOTIFY_IDLE = 0;
/** JS was woken or is running: nothing wakes it again. */
export const NOTIFY_OWED = 1;
/** JS drains the posted-write ring on a timer: only exits, events and a half-full ring wake it. */
export const NOTIFY_POSTED_LATER = 2;
export const EXIT_KIND_PIO = 1;
export const EXIT_KIND_MMIO = 2;
/** An EOI a userspace IOAPIC must see (native kExitKindEoi): address is the vector. */
export const EXIT_KIND_EOI = 3;

/** Where each field of the shared pages sits, as the addon's layout() reports it. */
export interface SharedPageLayout {
  mailboxSize: number;
  mailboxState: number;
  mailboxKind: number;
  mailboxIsWrite: number;
  mailboxSize_: number;
  mailboxAddress: number;
  mailboxData: number;
  mailboxExitsToJs: number;
  mailboxExitsNative: number;
  mailboxExitsPosted: number;
  ringHead: number;
  ringTail: number;
  ring: number;
  ringEntries: number;
  postedWriteSize: number;
  vcpuSharedSize: number;
  controlNotifyPending: number;
  controlEventCount: number;
  controlNotifiedAt: number;
  controlUnclaimedReads: number;
  controlUnclaimedWrites: number;
  controlShadow: number;
  controlShadowSize: number;
}

/** Offsets this file was written against. */
const EXPECTED: Partial<SharedPageLayout> = {
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
  controlNotifiedAt: 8,
  controlUnclaimedReads: 64,
  controlUnclaimedWrites: 72,
  controlShadow: 128,
};

export function checkLayout(layout: SharedPageLayout): void {
  for (const [k, v] of Object.entries(EXPECTED)) {
    if ((layout as unknown as Record<string, number>)[k] !== v) {
      throw new NodevmmError('ERR_NATIVE_LAYOUT', `native layout field ${k} is ${(layout as unknown as Record<string, number>)[k]}, lib/hv/exit-mailbox.ts expects ${v}: the addon and the TypeScript build are out of step (rebuild both)`);
    }
  }
}

/** Where drainPosted applies each posted write, in order. */
export interface PostedWriteSink {
  applyPosted(kind: number, address: number, size: number, value: number): void;
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
    if (Atomics.compareExchange(this.i32, 0, MAILBOX_PENDING, MAILBOX_IDLE) !== MAILBOX_PENDING) return false;
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
  drainPosted(sink: PostedWriteSink): number {
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
        sink.applyPosted(kind, address, size, value);
        tail = (tail + 1) >>> 0;
        n++;
      }
      // Store tail, then re-read head (the vCPU stores head, then reads
      // tail): one of the two sides always sees the other's update.
      Atomics.store(this.u32, 32, tail);
    }
  }
}

/** Bytes of one range's shadow block; the last byte holds the enable bits. */
export const SHADOW_BLOCK_SIZE = 32;
const SHADOW_START = 128;
/** Shadow blocks that fit the control block's 4 KiB shadow page. */
export const SHADOW_BLOCKS = 4096 / SHADOW_BLOCK_SIZE;

/**
 * The per-VM control block (native VmControl): the "notification pending"
 * flag the vCPU threads raise before waking JS, the count of queued
 * lifecycle events, the unclaimed-access counters of the native fast path
 * and the shadow page JS writes register values into.
 */
export class ControlBlock {
  private readonly i32: Int32Array;
  private readonly u8: Uint8Array;
  private readonly u32: Uint32Array;
  private readonly dv: DataView;

  constructor(buffer: ArrayBuffer) {
    this.i32 = new Int32Array(buffer);
    this.u8 = new Uint8Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.dv = new DataView(buffer);
  }

  /** A vCPU raised the flag and owes JS no further wakeup until it is cleared (or JS drains posted writes on its own). */
  get notifyPending(): boolean {
    return Atomics.load(this.i32, 0) !== NOTIFY_IDLE;
  }
  /** Going idle: the next exit, event or posted write wakes JS. */
  clearNotify(): void {
    Atomics.store(this.i32, 0, NOTIFY_IDLE);
  }
  /** Going idle with a drain of the posted-write ring scheduled: only exits and events wake JS. */
  deferPostedNotify(): void {
    Atomics.store(this.i32, 0, NOTIFY_POSTED_LATER);
  }
  /** Leave NOTIFY_POSTED_LATER for NOTIFY_IDLE (the scheduled drain is cancelled); any other state stays. */
  cancelPostedLater(): void {
    Atomics.compareExchange(this.i32, 0, NOTIFY_POSTED_LATER, NOTIFY_IDLE);
  }
  /** Lifecycle events (paused, exited) wait in the backend's queue. */
  get eventsQueued(): boolean {
    return Atomics.load(this.i32, 1) !== 0;
  }
  /** When a vCPU last sent JS a wakeup (process.hrtime.bigint()'s clock on Linux; 0n before the first). */
  get notifiedAt(): bigint {
    return this.dv.getBigUint64(8, true);
  }
  get unclaimedReads(): bigint {
    return this.dv.getBigUint64(64, true);
  }
  get unclaimedWrites(): bigint {
    return this.dv.getBigUint64(72, true);
  }

  /** Block `block` of the shadow page as a device's handle on it. */
  shadowBlock(block: number): ShadowBlock {
    const base = SHADOW_START + block * SHADOW_BLOCK_SIZE;
    const u8 = this.u8;
    const u32 = this.u32;
    const w = base / 4;
    const sharedWord = (i: number): SharedWord => ({
      load: () => Atomics.load(u32, i),
      store: (v) => void Atomics.store(u32, i, v),
      or: (bits) => Atomics.or(u32, i, bits),
      and: (mask) => void Atomics.and(u32, i, mask),
    });
    return {
      set: (offset, value) => {
        u8[base + offset] = value;
      },
      enable: (shadows, posting) => {
        Atomics.store(u8, base + SHADOW_BLOCK_SIZE - 1, (shadows ? 1 : 0) | (posting ? 2 : 0));
      },
      word: sharedWord(w),
      held: sharedWord(w + 1),
    };
  }
}
