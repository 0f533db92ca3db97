/**
 * virtio-console (VIRTIO 1.2 §5.3) with a single port and no MULTIPORT: the
 * guest's hvc0. Queue 0 (receiveq) carries host input into the guest, queue
 * 1 (transmitq) guest output to a ByteSink. Input that finds no guest buffer
 * waits in a bounded queue until the driver adds buffers. Not here: multiple
 * ports, control queues, emergency write, console resize.
 *
 * A transmit chain's bytes are counted by its descriptors, not by the guest
 * memory behind them: 63 descriptors of 16 MiB over the same pages make a
 * 1 GiB chain in a 32 MiB guest. The device copies at most
 * MAX_TX_CHAIN_BYTES of a chain and drops the rest (counted), as a line
 * drops what overruns it; Linux sends at most a page per chain from hvc0
 * (its output buffer) and 32 KiB from a port device's write().
 */
import type { ByteSink } from '../types';
import type { VirtioActivation, VirtioDevice } from './mmio';
import { readConfigBytes } from './mmio';
import { DeferredPass } from './queue';
import { StateReader, toBase64 } from '../device-state';

export const VIRTIO_ID_CONSOLE = 3;
const RX = 0;
const TX = 1;
/** Bytes of one transmit chain handed to the sink; the rest of the chain is dropped and counted. */
export const MAX_TX_CHAIN_BYTES = 64 * 1024;

export interface VirtioConsoleOptions {
  sink: ByteSink;
  /** Called when pending input drained into the guest (room for more). */
  onRxSpace?: () => void;
  /** Bytes of host input kept while the guest has no buffers. Default 64 KiB. */
  inputLimit?: number;
}

export class VirtioConsole implements VirtioDevice {
  readonly name = 'console';
  readonly deviceId = VIRTIO_ID_CONSOLE;
  readonly features = 0n;
  readonly queueMaxSizes: readonly number[] = [64, 64];
  private readonly sink: ByteSink;
  private readonly onRxSpace: (() => void) | undefined;
  private readonly inputLimit: number;
  /** config: cols, rows, max_nr_ports, emerg_wr (only meaningful with feature bits we do not offer). */
  private readonly config = new Uint8Array(12);
  private ctx: VirtioActivation | undefined;
  private input: Uint8Array[] = [];
  private inputBytes = 0;
  /** Guest output bytes dropped because a transmit chain held more than MAX_TX_CHAIN_BYTES. */
  txDroppedBytes = 0;
  private readonly passes = [new DeferredPass(() => this.deferred(RX)), new DeferredPass(() => this.deferred(TX))];

  constructor(opts: VirtioConsoleOptions) {
    this.sink = opts.sink;
    this.onRxSpace = opts.onRxSpace;
    this.inputLimit = opts.inputLimit ?? 64 * 1024;
    new DataView(this.config.buffer).setUint32(4, 1, true);
  }

  readConfig(offset: number, size: number): number {
    return readConfigBytes(this.config, offset, size);
  }

  activate(ctx: VirtioActivation): void {
    this.ctx = ctx;
    this.notify(TX);
    this.notify(RX);
  }

  reset(): void {
    this.ctx = undefined;
  }

  /** Host input still waiting for guest buffers (base64): it reaches the guest after a restore. */
  saveState(_active: boolean): Record<string, unknown> {
    const pending = new Uint8Array(this.inputBytes);
    let at = 0;
    for (const chunk of this.input) {
      pending.set(chunk, at);
      at += chunk.length;
    }
    return { input: toBase64(pending) };
  }

  restoreState(state: unknown, path: string, _active: boolean): void {
    const r = new StateReader(path, state);
    const input = r.bytes('input', this.inputLimit);
    r.done();
    this.input = input.length ? [input] : [];
    this.inputBytes = input.length;
  }

  /** Host input for the guest; returns how many bytes were accepted (0 when the queue is full). */
  enqueue(bytes: Uint8Array): number {
    const n = Math.min(bytes.length, this.inputLimit - this.inputBytes);
    if (n <= 0) return 0;
    this.input.push(bytes.slice(0, n));
    this.inputBytes += n;
    try {
      this.fillRx();
    } catch (e) {
      this.ctx?.fail(e);
    }
    return n;
  }

  notify(index: number): void {
    if (index === TX) this.drainTx();
    else if (index === RX) this.fillRx();
  }

  /** A pass that stopped at the queue-size bound goes on here, on a later turn of the event loop. */
  private deferred(index: number): void {
    const ctx = this.ctx;
    if (!ctx) return;
    try {
      this.notify(index);
    } catch (e) {
      ctx.fail(e);
    }
  }

  private drainTx(): void {
    const ctx = this.ctx;
    const q = ctx?.queues[TX];
    if (!ctx || !q) return;
    let taken = 0;
    for (; taken < q.size; taken++) {
      const chain = q.pop();
      if (!chain) break;
      if (chain.readableBytes) this.sink.write(q.readAll(chain, MAX_TX_CHAIN_BYTES));
      this.txDroppedBytes += Math.max(0, chain.readableBytes - MAX_TX_CHAIN_BYTES);
      q.pushUsed(chain.head, 0);
    }
    if (taken) ctx.usedBuffers(TX);
    if (taken === q.size && q.pending()) this.passes[TX]!.schedule();
  }

  private fillRx(): void {
    const ctx = this.ctx;
    const q = ctx?.queues[RX];
    if (!ctx || !q || this.inputBytes === 0) return;
    let any = false;
    let taken = 0;
    while (this.inputBytes > 0) {
      if (taken++ === q.size) {
        this.passes[RX]!.schedule();
        break;
      }
      const chain = q.pop();
      if (!chain) break;
      let written = 0;
      while (this.input.length && written < chain.writableBytes) {
        const head = this.input[0]!;
        const n = q.writeAt(chain, written, head.subarray(0, chain.writableBytes - written));
        written += n;
        this.inputBytes -= n;
        if (n === head.length) this.input.shift();
        else this.input[0] = head.subarray(n);
      }
      q.pushUsed(chain.head, written);
      any = true;
    }
    if (any) {
      ctx.usedBuffers(RX);
      this.onRxSpace?.();
    }
  }
}
