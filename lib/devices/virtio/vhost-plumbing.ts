/**
 * What the two devices whose rings a backend outside this thread serves
 * (vhost-vsock in the kernel, vhost-user-fs in virtiofsd) share: the eventfds
 * registered for their kicks and interrupt, how InterruptStatus learns of
 * interrupts that bypass the transport, and the teardown of those eventfds.
 */
import { INT_USED_BUFFER, type VirtioActivation } from './mmio';
import type { NotifyOps } from '../../hv/partition';

/** The eventfds and used-ring positions of a running backend, so a reset undoes exactly what was set up. */
export interface VhostPlumbing {
  kicks: Array<{ index: number; fd: number; address: number; registered: boolean }>;
  call: { fd: number; gsi: number; registered: boolean } | undefined;
  /** Used-ring index of each queue when the driver last read InterruptStatus. */
  usedSeen: Map<number, number>;
  usedIdxGpa: Map<number, number>;
  memory: VirtioActivation['memory'];
}

/**
 * The backend's interrupts bypass the transport, so InterruptStatus learns of
 * them here: a used ring whose index moved since the driver last looked means
 * the backend used buffers (and signalled, unless the driver suppressed it).
 */
export function usedRingInterrupts(run: VhostPlumbing): number {
  let bits = 0;
  for (const [index, gpa] of run.usedIdxGpa) {
    const idx = run.memory.readU16(gpa);
    if (idx !== run.usedSeen.get(index)) bits = INT_USED_BUFFER;
    run.usedSeen.set(index, idx);
  }
  return bits;
}

/** Runs each step of a teardown even when an earlier one throws; `done()` throws the first error. */
export function teardownSteps(): { attempt(step: () => void): void; done(): void } {
  const errors: unknown[] = [];
  return {
    attempt(step) {
      try {
        step();
      } catch (e) {
        errors.push(e);
      }
    },
    done() {
      if (errors.length) throw errors[0];
    },
  };
}

/** Unregister and close the kick and call eventfds (after the backend stopped using them). */
export function closeVhostEventfds(run: VhostPlumbing, notifyOps: NotifyOps, attempt: (step: () => void) => void): void {
  for (const k of run.kicks) {
    if (k.registered) attempt(() => notifyOps.ioeventfd(k.fd, k.address, 4, k.index, false));
    notifyOps.close(k.fd);
  }
  if (run.call) {
    const c = run.call;
    if (c.registered) attempt(() => notifyOps.irqfd(c.fd, c.gsi, false));
    notifyOps.close(c.fd);
  }
}

/** One call eventfd for all rings, routed to the slot's interrupt: the guest's handler looks at every ring anyway. */
export function registerCall(run: VhostPlumbing, notifyOps: NotifyOps, gsi: number): number {
  const fd = notifyOps.eventfd();
  run.call = { fd, gsi, registered: false };
  notifyOps.irqfd(fd, gsi, true);
  run.call.registered = true;
  return fd;
}

/**
 * The kick eventfd of ring `index`: the guest writes the queue index to QueueNotify at
 * `address` and KVM signals the eventfd in the kernel. Also starts watching the ring's used
 * index (at `usedGpa + 2`) for usedRingInterrupts.
 */
export function registerKick(run: VhostPlumbing, notifyOps: NotifyOps, index: number, address: number, usedGpa: number): number {
  const kick = { index, fd: notifyOps.eventfd(), address, registered: false };
  run.kicks.push(kick);
  notifyOps.ioeventfd(kick.fd, kick.address, 4, index, true);
  kick.registered = true;
  run.usedIdxGpa.set(index, usedGpa + 2);
  run.usedSeen.set(index, run.memory.readU16(usedGpa + 2));
  return kick.fd;
}

/** A kick that reached userspace (it raced the ioeventfd registration): forward it. False if `index` has no kick. */
export function forwardKick(run: VhostPlumbing | undefined, notifyOps: NotifyOps, index: number): boolean {
  const kick = run?.kicks.find((k) => k.index === index);
  if (!kick) return false;
  notifyOps.signal(kick.fd);
  return true;
}
