/**
 * Virtqueue notifications through ioeventfds. KVM completes the guest's
 * QueueNotify write inside the kernel and signals an eventfd, so the vCPU
 * goes on at once instead of waiting for the event loop to answer an MMIO
 * exit; the loop learns of the kick from a readability watcher on the
 * eventfd and runs the device there. One eventfd per (slot, queue), matched
 * on the queue index the driver writes (VIRTIO 1.2 §4.2.3.3).
 *
 * A device that throws here is not inside an exit dispatch (where the
 * partition turns a throw into a `host-error` stop): the callback runs from
 * a libuv poll watcher, and an exception escaping it would end the process.
 * So it goes to `onError`, which stops the VM the same way.
 */
import type { NotifyOps } from '../hv/partition';

/** A `queueNotifier` for the transport of the slot whose registers start at `base`. */
export function ioeventfdQueueNotifier(ops: NotifyOps, base: number, onError: (error: Error) => void): (index: number, onNotify: () => void) => () => void {
  // The transport's model loads with the first virtio device, not with every VM (CLI start-up time).
  const address = base + (require('../devices/virtio/mmio') as typeof import('../devices/virtio/mmio')).REG.queueNotify;
  return (index, onNotify) => {
    const fd = ops.eventfd();
    try {
      ops.ioeventfd(fd, address, 4, index, true);
    } catch (e) {
      ops.close(fd);
      throw e;
    }
    // Several kicks before the loop looks are one read (the counter adds up): one drain is enough.
    const watcher = ops.watch(fd, () => {
      try {
        if (ops.drain(fd) > 0) onNotify();
      } catch (e) {
        onError(e instanceof Error ? e : new Error(String(e)));
      }
    });
    return () => {
      watcher.close();
      try {
        ops.ioeventfd(fd, address, 4, index, false);
      } catch {
        // The VM (and with it every ioeventfd) may already be gone.
      }
      ops.close(fd);
    };
  };
}
