/**
 * POST-code port (0x80): records the last byte written and how many writes
 * arrived. Linux also writes here as its default I/O delay (io_delay=0x80),
 * so the write count is mostly delay traffic. Reads return all-ones, as a
 * write-only latch on a POST card leaves the bus floating.
 *
 * Threat model: the guest can write at any rate; each write costs two
 * assignments and an optional host callback, nothing grows.
 */

import { StateReader } from './device-state';
import type { IoDevice } from './types';

export interface DebugPortOptions {
  name?: string;
  /** Called with every byte written (for boot-progress tracing). */
  onCode?: (code: number) => void;
}

export interface DebugPortState {
  /** -1: nothing written yet. */
  lastCode: number;
  writes: number;
}

export class DebugPort implements IoDevice {
  readonly name: string;
  /** Last byte written, or undefined before the first write. */
  lastCode: number | undefined;
  writes = 0;
  private readonly onCode: ((code: number) => void) | undefined;

  constructor(options: DebugPortOptions = {}) {
    this.name = options.name ?? 'post';
    this.onCode = options.onCode;
  }

  /** The last code written (-1 before the first write) and the write count, as plain data. */
  snapshot(): DebugPortState {
    return { lastCode: this.lastCode ?? -1, writes: this.writes };
  }

  /** Take saved state, checking both fields (errors name `path` and the field). */
  restoreState(input: unknown, path: string = this.name): void {
    const r = new StateReader(path, input);
    const lastCode = r.int('lastCode', -1, 0xff);
    const writes = r.int('writes', 0, Number.MAX_SAFE_INTEGER);
    r.done();
    this.lastCode = lastCode < 0 ? undefined : lastCode;
    this.writes = writes;
  }

  read(_offset: number, size: number): number {
    return size >= 1 && size <= 4 ? 0xffffffff >>> (32 - 8 * size) : 0;
  }

  write(offset: number, _size: number, value: number): void {
    if (offset !== 0) return;
    this.lastCode = value & 0xff;
    this.writes++;
    if (!this.onCode) return;
    try {
      this.onCode(this.lastCode);
    } catch {
      // Tracing must never fail a guest I/O exit.
    }
  }
}
