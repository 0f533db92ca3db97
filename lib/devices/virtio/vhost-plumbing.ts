/**
 * What the two devices whose rings a backend outside this thread serves
 * (vhost-vsock in the kernel, vhost-user-fs in virtiofsd) share: the eventfds
 * registered for their kicks and interrupt, and their teardown. (Their
 * interrupts bypass the transport; InterruptStatus reports them through
 * `VirtioDevice.interruptsBypassTransport`.)
 */
import type { NotifyOps } from '../../hv/partition';

/** The eventfds of a running backend, so a reset undoes exactly what was set up. */
export interface VhostPlumbing {
  kicks: Array<{ index: number; fd: number; address: number; registered: boolean }>;
  call: { fd: number; gsi: number; registered: boolean } | undefined;
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
 * `address` and KVM signals the eventfd in the kernel.
 */
export function registerKick(run: VhostPlumbing, notifyOps: NotifyOps, index: number, address: number): number {
  const kick = { index, fd: notifyOps.eventfd(), address, registered: false };
  run.kicks.push(kick);
  notifyOps.ioeventfd(kick.fd, kick.address, 4, index, true);
  kick.registered = true;
  return kick.fd;
}

/** A kick that reached userspace (it raced the ioeventfd registration): forward it. False if `index` has no kick. */
export function forwardKick(run: VhostPlumbing | undefined, notifyOps: NotifyOps, index: number): boolean {
  const kick = run?.kicks.find((k) => k.index === index);
  if (!kick) return false;
  notifyOps.signal(kick.fd);
  return true;
}
