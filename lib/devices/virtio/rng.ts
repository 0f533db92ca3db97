/**
 * virtio-rng (VIRTIO 1.2 §5.4): one request queue whose writable buffers the
 * device fills with bytes from the host's CSPRNG (crypto.randomFillSync),
 * in place through guest-memory views where a buffer lies in one mapping.
 * The guest sees it as /dev/hwrng. No config space, no feature bits.
 */
import { randomFillSync } from 'node:crypto';
import type { VirtioActivation, VirtioDevice } from './mmio';
import { DeferredPass } from './queue';
import { StateReader } from '../device-state';

export const VIRTIO_ID_ENTROPY = 4;
/** A guest asking for more than this per buffer gets a short answer: it asks again. */
const MAX_BYTES_PER_REQUEST = 64 * 1024;

export class VirtioRng implements VirtioDevice {
  readonly name = 'rng';
  readonly deviceId = VIRTIO_ID_ENTROPY;
  readonly features = 0n;
  readonly queueMaxSizes: readonly number[] = [64];
  private ctx: VirtioActivation | undefined;
  /** Bytes handed to the guest so far. */
  bytesServed = 0;
  private readonly pass = new DeferredPass(() => {
    const ctx = this.ctx;
    if (!ctx) return;
    try {
      this.notify(0);
    } catch (e) {
      ctx.fail(e);
    }
  });

  readConfig(): number {
    return 0;
  }

  activate(ctx: VirtioActivation): void {
    this.ctx = ctx;
    this.notify(0);
  }

  reset(): void {
    this.ctx = undefined;
  }

  /** Nothing beyond the queues: every request completes before notify() returns. */
  saveState(_active: boolean): Record<string, unknown> {
    return {};
  }

  restoreState(state: unknown, path: string, _active: boolean): void {
    new StateReader(path, state).done();
  }

  notify(index: number): void {
    const ctx = this.ctx;
    const q = ctx?.queues[index];
    if (!ctx || !q) return;
    let taken = 0;
    for (; taken < q.size; taken++) {
      const chain = q.pop();
      if (!chain) break;
      let budget = MAX_BYTES_PER_REQUEST;
      let written = 0;
      for (const s of chain.writable) {
        const n = Math.min(s.length, budget);
        if (n === 0) break;
        const view = ctx.memory.view(s.gpa, n);
        if (view) randomFillSync(view);
        else ctx.memory.write(s.gpa, randomFillSync(new Uint8Array(n)));
        written += n;
        budget -= n;
      }
      q.pushUsed(chain.head, written);
      this.bytesServed += written;
    }
    if (taken) ctx.usedBuffers(index);
    // At most a queue's worth per pass (see DeferredPass).
    if (taken === q.size && q.pending()) this.pass.schedule();
  }
}
