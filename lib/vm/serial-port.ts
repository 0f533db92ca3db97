/**
 * A VM's serial port as a Node Duplex stream: reading gives guest output,
 * writing types into the guest (with backpressure from the UART's RX FIFO).
 * It outlives guest reboots: the VM re-attaches each new UART model to it.
 * Every byte of output is also kept in a bounded log, which `expect()`
 * searches so tests can wait for a pattern without racing the stream.
 */
import { Duplex } from 'node:stream';
import { NodevmmError } from '../errors';

export interface ExpectOptions {
  timeoutMs?: number;
  /**
   * The longest match a RegExp pattern may have, in bytes (default 64 KiB).
   * Each delivery of output is searched from this many bytes before its
   * start on, so matching costs the new output plus this window, not all the
   * output since the last expect(): a match longer than this can be missed.
   * String patterns need no window (their own length bounds the match).
   */
  maxMatchBytes?: number;
}

/** A match and where it lies in all output ever (byte offsets). */
export interface ExpectMatch {
  match: RegExpExecArray;
  start: number;
  end: number;
}

/** Default longest RegExp match for expect() (see ExpectOptions.maxMatchBytes). */
export const DEFAULT_MAX_MATCH_BYTES = 64 * 1024;

/** Where guest input goes; the UART implements it. */
export interface SerialInputTarget {
  enqueue(bytes: Uint8Array): number;
}

export class SerialPort extends Duplex {
  readonly portName: string;
  private readonly limit: number;
  /**
   * The log: sealed blocks, then the deliveries since the last seal. A guest
   * writes a few bytes per delivery; sealing them into blocks keeps a long
   * log from costing a Buffer object per write and keeps log() cheap.
   */
  private chunks: Buffer[] = [];
  private recent: Buffer[] = [];
  private recentBytes = 0;
  private logged = 0;
  /** Bytes dropped from the front of the log to stay under the limit. */
  private dropped = 0;
  /** Absolute offset (in all output ever) where the next expect() starts. */
  private cursor = 0;
  private waiters = new Set<() => void>();
  private target: SerialInputTarget | undefined;
  private pendingInput: { bytes: Uint8Array; cb: (e?: Error | null) => void } | undefined;
  /** pumpInput() is on the stack; a room report meanwhile sets pumpAgain instead of re-entering. */
  private pumping = false;
  private pumpAgain = false;
  totalBytes = 0;
  /** Characters expect() has handed to the pattern matcher, in all (a work counter for tests). */
  expectScannedChars = 0;

  constructor(portName: string, logLimit: number) {
    super({ allowHalfOpen: true });
    this.portName = portName;
    this.limit = logLimit;
  }

  /** Guest output arrives here (called by the VM, not by users). */
  deliver(bytes: Uint8Array): void {
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const copy = Buffer.from(b);
    this.recent.push(copy);
    this.recentBytes += copy.length;
    this.logged += copy.length;
    this.totalBytes += copy.length;
    if (this.recent.length >= 256 || this.recentBytes >= 64 * 1024 || this.logged > this.limit) this.seal();
    while (this.logged > this.limit && this.chunks.length > 1) {
      const first = this.chunks.shift()!;
      this.logged -= first.length;
      this.dropped += first.length;
    }
    // Only feed the readable side once someone consumes it; otherwise the
    // log is the record and nothing piles up in stream buffers.
    if (this.readableFlowing) this.push(copy);
    for (const w of [...this.waiters]) w();
    this.emit('output', copy);
  }

  private seal(): void {
    if (this.recent.length === 0) return;
    this.chunks.push(this.recent.length === 1 ? this.recent[0]! : Buffer.concat(this.recent, this.recentBytes));
    this.recent = [];
    this.recentBytes = 0;
  }

  /** Connect (or disconnect) the UART that receives what is written to this stream. */
  attach(target: SerialInputTarget | undefined): void {
    this.target = target;
    if (target) this.pumpInput();
  }

  /** Called by the VM when the UART has room again. */
  rxSpace(): void {
    this.pumpInput();
  }

  private pumpInput(): void {
    // A target may report room from inside enqueue() (the virtio console
    // hands bytes to the guest's buffers at once and says so): that call
    // must not enqueue the same bytes again nor complete the write twice.
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        const p = this.pendingInput;
        if (!p || !this.target) return;
        const n = this.target.enqueue(p.bytes);
        if (n === p.bytes.length) {
          this.pendingInput = undefined;
          p.cb();
          return;
        }
        p.bytes = p.bytes.subarray(n);
      } while (this.pumpAgain);
    } finally {
      this.pumping = false;
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.pendingInput = { bytes: new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength), cb };
    this.pumpInput();
  }

  override _read(): void {
    // Output is pushed by deliver(); nothing to pull.
  }

  /** The whole retained log (latin1, so offsets are byte offsets). */
  log(): string {
    return this.logFrom(0);
  }

  /**
   * The retained log from byte `offset` of it on (latin1): only the bytes
   * from `offset` on are copied, found by walking back from the newest block,
   * so a caller that asks for the tail pays for the tail.
   */
  private logFrom(offset: number): string {
    const parts = this.recent.length ? [...this.chunks, ...this.recent] : this.chunks;
    let at = this.logged;
    let i = parts.length;
    while (i > 0 && at > offset) at -= parts[--i]!.length;
    if (at >= this.logged) return '';
    const first = parts[i]!.subarray(Math.max(0, offset - at));
    return i + 1 === parts.length ? first.toString('latin1') : Buffer.concat([first, ...parts.slice(i + 1)]).toString('latin1');
  }

  /**
   * The output between absolute offsets `from` and `to` (latin1), or
   * undefined when part of it has already been dropped from the log.
   */
  text(from: number, to: number): string | undefined {
    if (from < this.dropped || to < from || to > this.totalBytes) return undefined;
    return this.logFrom(from - this.dropped).slice(0, to - from);
  }

  /** The last `n` lines of output, for error messages. */
  tail(n = 30): string {
    const lines = this.log().split(/\r?\n/);
    return lines.slice(-n).join('\n');
  }

  /**
   * Wait until `pattern` appears in output not yet consumed by an earlier
   * expect(); resolves with the match and moves past it. Rejects after
   * `timeoutMs` with the last lines seen. A RegExp match may be at most
   * `maxMatchBytes` long (see ExpectOptions).
   */
  async expect(pattern: RegExp | string, opts: ExpectOptions = {}): Promise<RegExpExecArray> {
    return (await this.expectAt(pattern, opts)).match;
  }

  /**
   * expect(), also saying where the match lies in all output ever, so a
   * caller can take the text between two matches with text().
   *
   * Matching is incremental: the first check searches everything not yet
   * consumed; after that each delivery is searched from `window` bytes
   * before the end of what was already searched, where `window` is the
   * pattern's length - 1 for a string and maxMatchBytes for a RegExp. One
   * more byte before that is kept as context, with the search starting after
   * it, so `^`, `\b` and one-character look-behinds see the real preceding
   * byte instead of a start of input.
   */
  expectAt(pattern: RegExp | string, opts: ExpectOptions = {}): Promise<ExpectMatch> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const isString = typeof pattern === 'string';
    const re = isString ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'g') : new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, '') + 'g');
    const shown = isString ? new RegExp(re.source) : new RegExp(pattern.source, pattern.flags.replace('g', ''));
    const window = isString ? Math.max(0, pattern.length - 1) : Math.max(0, opts.maxMatchBytes ?? DEFAULT_MAX_MATCH_BYTES);
    /** Absolute offset up to which output has been searched without a match. */
    let searched = -1;
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const begin = Math.max(this.cursor, this.dropped);
        const from = searched < 0 ? begin : Math.max(begin, searched - window);
        if (searched >= this.totalBytes) return false;
        const context = from > begin ? 1 : 0;
        const text = this.logFrom(from - context - this.dropped);
        this.expectScannedChars += text.length;
        searched = this.totalBytes;
        re.lastIndex = context;
        const m = re.exec(text);
        if (!m) return false;
        const start = from - context + m.index;
        const end = start + m[0].length;
        this.cursor = end;
        done();
        // As before incremental matching: the index counts from where this search could start.
        m.index = start - begin;
        resolve({ match: m, start, end });
        return true;
      };
      const timer = setTimeout(() => {
        done();
        reject(new NodevmmError('ERR_SERIAL_TIMEOUT', `${this.portName}: ${shown} did not appear within ${timeoutMs} ms; last lines:\n${this.tail(30)}`));
      }, timeoutMs);
      const onClose = (why?: string) => {
        if (check()) return;
        done();
        reject(new NodevmmError('ERR_SERIAL_CLOSED', `${this.portName}: the vm stopped (${why ?? 'unknown reason'}) before ${shown} appeared; last lines:\n${this.tail(30)}`));
      };
      const waiter = () => void check();
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        this.off('vm-stopped', onClose);
      };
      if (check()) return;
      this.waiters.add(waiter);
      this.once('vm-stopped', onClose);
    });
  }
}
