/**
 * ByteSink implementations for device output: BatchingSink coalesces the
 * UART's byte-at-a-time writes and delivers them once per macrotask (or at a
 * size threshold) to a Node Writable or a callback; RingLog keeps the last N
 * bytes in memory for tests and post-mortems; TeeSink fans out to several.
 * None of them block: under backpressure they hold a bounded amount and count
 * what they drop. They know nothing about UARTs or ports.
 */

import type { Writable } from 'node:stream';
import type { ByteSink } from './types';

export type ChunkCallback = (chunk: Uint8Array) => void;

export interface BatchingSinkOptions {
  /** Deliver at once when this many bytes are pending (default 4096). */
  maxBatchBytes?: number;
  /** Bytes held while a Writable is backpressured; beyond this, bytes are dropped (default 1 MiB). */
  maxPendingBytes?: number;
  /** How to defer a flush; default setImmediate, i.e. the next macrotask. */
  schedule?: (flush: () => void) => void;
}

export interface BatchingSinkStats {
  bytesIn: number;
  bytesOut: number;
  /** Deliveries made to the target. */
  flushes: number;
  /** Bytes dropped because the target was backpressured, closed, or threw. */
  dropped: number;
}

const DEFAULT_MAX_BATCH = 4096;
const DEFAULT_MAX_PENDING = 1024 * 1024;

/**
 * Coalesces writes so console output costs one event-loop turn per batch,
 * not one per character.
 */
export class BatchingSink implements ByteSink {
  readonly stats: BatchingSinkStats = { bytesIn: 0, bytesOut: 0, flushes: 0, dropped: 0 };
  private readonly target: Writable | ChunkCallback;
  private readonly maxBatch: number;
  private readonly maxPending: number;
  private readonly schedule: (flush: () => void) => void;
  private pending = new Uint8Array(256);
  private pendingLength = 0;
  private flushScheduled = false;
  private waitingForDrain = false;

  constructor(target: Writable | ChunkCallback, options: BatchingSinkOptions = {}) {
    this.target = target;
    this.maxBatch = positiveInt(options.maxBatchBytes ?? DEFAULT_MAX_BATCH, 'maxBatchBytes');
    this.maxPending = positiveInt(options.maxPendingBytes ?? DEFAULT_MAX_PENDING, 'maxPendingBytes');
    if (this.maxPending < this.maxBatch) {
      throw new RangeError(`maxPendingBytes must be at least maxBatchBytes (${this.maxBatch}), got ${this.maxPending}`);
    }
    this.schedule = options.schedule ?? ((fn) => void setImmediate(fn));
  }

  /** Bytes accepted but not yet delivered. */
  get pendingBytes(): number {
    return this.pendingLength;
  }

  write(bytes: Uint8Array): void {
    this.stats.bytesIn += bytes.length;
    const room = this.maxPending - this.pendingLength;
    const take = Math.min(room, bytes.length);
    this.stats.dropped += bytes.length - take;
    if (take > 0) this.append(take === bytes.length ? bytes : bytes.subarray(0, take));
    if (this.pendingLength >= this.maxBatch) this.flush();
    else this.scheduleFlush();
  }

  writeByte(byte: number): void {
    this.stats.bytesIn++;
    if (this.pendingLength < this.maxPending) {
      if (this.pendingLength === this.pending.length) this.grow(this.pendingLength + 1);
      this.pending[this.pendingLength++] = byte;
    } else this.stats.dropped++;
    if (this.pendingLength >= this.maxBatch) this.flush();
    else this.scheduleFlush();
  }

  /** Deliver everything pending now (unless a Writable is waiting for 'drain'). */
  flush(): void {
    if (this.pendingLength === 0 || this.waitingForDrain) return;
    // A copy, because a Writable may keep the chunk after write() returns.
    const chunk = this.pending.slice(0, this.pendingLength);
    this.pendingLength = 0;
    if (typeof this.target === 'function') {
      this.deliverToCallback(this.target, chunk);
    } else {
      this.deliverToWritable(this.target, chunk);
    }
  }

  private deliverToCallback(callback: ChunkCallback, chunk: Uint8Array): void {
    try {
      callback(chunk);
      this.countDelivered(chunk.length);
    } catch {
      this.stats.dropped += chunk.length;
    }
  }

  private deliverToWritable(stream: Writable, chunk: Uint8Array): void {
    if (stream.destroyed || stream.writableEnded) {
      this.stats.dropped += chunk.length;
      return;
    }
    let more: boolean;
    try {
      more = stream.write(chunk);
    } catch {
      this.stats.dropped += chunk.length;
      return;
    }
    this.countDelivered(chunk.length);
    if (!more) {
      // Hold further output here (bounded) instead of growing the stream's buffer without limit.
      this.waitingForDrain = true;
      stream.once('drain', () => {
        this.waitingForDrain = false;
        this.flush();
      });
    }
  }

  private countDelivered(length: number): void {
    this.stats.bytesOut += length;
    this.stats.flushes++;
  }

  private append(bytes: Uint8Array): void {
    const needed = this.pendingLength + bytes.length;
    if (needed > this.pending.length) this.grow(needed);
    this.pending.set(bytes, this.pendingLength);
    this.pendingLength = needed;
  }

  private grow(needed: number): void {
    const grown = new Uint8Array(Math.min(this.maxPending, Math.max(needed, this.pending.length * 2)));
    grown.set(this.pending.subarray(0, this.pendingLength));
    this.pending = grown;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.schedule(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }
}

/** Keeps the most recent `capacity` bytes of output. */
export class RingLog implements ByteSink {
  /** Every byte ever written, including those overwritten since. */
  totalBytes = 0;
  private readonly buffer: Uint8Array;
  private start = 0;
  private length = 0;

  constructor(readonly capacity = 64 * 1024) {
    positiveInt(capacity, 'capacity');
    this.buffer = new Uint8Array(capacity);
  }

  write(bytes: Uint8Array): void {
    this.totalBytes += bytes.length;
    // Only the tail can survive, so skip what would be overwritten anyway.
    const tail = bytes.length > this.capacity ? bytes.subarray(bytes.length - this.capacity) : bytes;
    for (const byte of tail) {
      const end = (this.start + this.length) % this.capacity;
      this.buffer[end] = byte;
      if (this.length < this.capacity) this.length++;
      else this.start = (this.start + 1) % this.capacity;
    }
  }

  /** The retained bytes, oldest first. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    const first = Math.min(this.length, this.capacity - this.start);
    out.set(this.buffer.subarray(this.start, this.start + first));
    out.set(this.buffer.subarray(0, this.length - first), first);
    return out;
  }

  /** The retained bytes decoded as UTF-8 (a character cut at the start shows as U+FFFD). */
  text(): string {
    return Buffer.from(this.bytes()).toString('utf8');
  }

  clear(): void {
    this.start = 0;
    this.length = 0;
  }
}

/** Writes every chunk to each sink in order; one failing sink does not starve the others. */
export class TeeSink implements ByteSink {
  failures = 0;
  private readonly sinks: readonly ByteSink[];

  constructor(...sinks: ByteSink[]) {
    this.sinks = sinks;
  }

  write(bytes: Uint8Array): void {
    for (const sink of this.sinks) {
      try {
        sink.write(bytes);
      } catch {
        this.failures++;
      }
    }
  }
}

function positiveInt(value: number, name: string): number {
  if (!Number.isInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}
