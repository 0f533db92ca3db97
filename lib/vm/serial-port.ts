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
}

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
  totalBytes = 0;

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
    const p = this.pendingInput;
    if (!p || !this.target) return;
    const n = this.target.enqueue(p.bytes);
    if (n === p.bytes.length) {
      this.pendingInput = undefined;
      p.cb();
    } else {
      p.bytes = p.bytes.subarray(n);
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
   * The retained log from byte `offset` of it on (latin1): only the blocks
   * that reach past `offset` are copied, so expect() costs what it has not
   * consumed yet, not the whole log, on each delivery.
   */
  private logFrom(offset: number): string {
    const parts = this.recent.length ? [...this.chunks, ...this.recent] : this.chunks;
    let at = 0;
    let i = 0;
    while (i < parts.length && at + parts[i]!.length <= offset) at += parts[i++]!.length;
    if (i === parts.length) return '';
    const tail = i === 0 ? parts : parts.slice(i);
    return Buffer.concat(tail).toString('latin1', offset - at);
  }

  /** The last `n` lines of output, for error messages. */
  tail(n = 30): string {
    const lines = this.log().split(/\r?\n/);
    return lines.slice(-n).join('\n');
  }

  /**
   * Wait until `pattern` appears in output not yet consumed by an earlier
   * expect(); resolves with the match and moves past it. Rejects after
   * `timeoutMs` with the last lines seen.
   */
  expect(pattern: RegExp | string, opts: ExpectOptions = {}): Promise<RegExpExecArray> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : new RegExp(pattern.source, pattern.flags.replace('g', ''));
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const start = Math.max(0, this.cursor - this.dropped);
        const text = this.logFrom(start);
        const m = re.exec(text);
        if (!m) return false;
        this.cursor = this.dropped + start + m.index + m[0].length;
        done();
        resolve(m);
        return true;
      };
      const timer = setTimeout(() => {
        done();
        reject(new NodevmmError('ERR_SERIAL_TIMEOUT', `${this.portName}: ${re} did not appear within ${timeoutMs} ms; last lines:\n${this.tail(30)}`));
      }, timeoutMs);
      const onClose = (why?: string) => {
        if (check()) return;
        done();
        reject(new NodevmmError('ERR_SERIAL_CLOSED', `${this.portName}: the vm stopped (${why ?? 'unknown reason'}) before ${re} appeared; last lines:\n${this.tail(30)}`));
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
