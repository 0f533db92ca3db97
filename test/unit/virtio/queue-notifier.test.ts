/**
 * Kicks without MMIO exits: the transport registers a notifier per live queue
 * at DRIVER_OK and undoes it on reset, on needs-reset and on dispose; the
 * ioeventfd notifier drains its eventfd on the event loop (a real eventfd and
 * watcher here; the KVM registration is recorded by a fake).
 */
import test from 'ava';
import { REG, STATUS } from '../../../lib/devices/virtio/mmio';
import { VirtioRng } from '../../../lib/devices/virtio/rng';
import { VIRTQ_DESC_F_NEXT } from '../../../lib/devices/virtio/queue';
import type { NotifyOps } from '../../../lib/hv/partition';
import { nativeBinding, watchReadable } from '../../../lib/hv/native';
import { ioeventfdQueueNotifier } from '../../../lib/vm/queue-notifier';
import { FakeDriver } from './driver';

function recordingNotifier() {
  const live = new Map<number, () => void>();
  const log: string[] = [];
  const notifier = (index: number, onNotify: () => void) => {
    log.push(`+${index}`);
    live.set(index, onNotify);
    return () => {
      log.push(`-${index}`);
      live.delete(index);
    };
  };
  return { notifier, live, log };
}

test('a notifier per live queue at DRIVER_OK delivers kicks; reset undoes it', (t) => {
  const n = recordingNotifier();
  const d = new FakeDriver(new VirtioRng(), { queueNotifier: n.notifier });
  t.deepEqual(n.log, []);
  d.up([8]);
  t.deepEqual(n.log, ['+0']);
  const q = d.queues[0]!;
  const buf = d.alloc(16);
  d.offer(q, d.chain(q, [{ gpa: buf, len: 16, write: true }]));
  n.live.get(0)!();
  t.deepEqual(d.takeUsed(q), [[0, 16]], 'the notifier ran the queue without a QueueNotify write');
  d.w(REG.status, 0);
  t.deepEqual(n.log, ['+0', '-0']);
});

test('needs-reset and dispose undo the notifiers; a notifier that cannot register leaves kicks on MMIO writes', (t) => {
  const n = recordingNotifier();
  const d = new FakeDriver(new VirtioRng(), { queueNotifier: n.notifier });
  d.up([8]);
  const q = d.queues[0]!;
  d.writeDesc(q, 0, d.alloc(16), 16, VIRTQ_DESC_F_NEXT, 0); // a loop
  d.offer(q, 0);
  n.live.get(0)!();
  t.true((d.r(REG.status) & STATUS.needsReset) !== 0);
  t.deepEqual(n.log, ['+0', '-0']);
  const e = new FakeDriver(new VirtioRng(), { queueNotifier: n.notifier });
  e.up([8]);
  e.t.dispose();
  t.deepEqual(n.log.slice(2), ['+0', '-0']);

  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.message);
  process.on('warning', onWarning);
  const f = new FakeDriver(new VirtioRng(), {
    queueNotifier: () => {
      throw new Error('EEXIST');
    },
  });
  f.up([8]);
  const fq = f.queues[0]!;
  f.offer(fq, f.chain(fq, [{ gpa: f.alloc(8), len: 8, write: true }]));
  f.kick(fq);
  t.deepEqual(f.takeUsed(fq), [[0, 8]]);
  return new Promise<void>((resolve) =>
    setImmediate(() => {
      process.off('warning', onWarning);
      t.true(warnings.some((w) => /queue 0 notifications stay on MMIO exits: EEXIST/.test(w)), warnings.join('\n'));
      resolve();
    }),
  );
});

/** NotifyOps over real eventfds (no KVM): `calls` records closes and (de)registrations, `fds` the eventfds made. */
function eventfdOps(t: import('ava').ExecutionContext): { ops: NotifyOps; calls: string[]; fds: number[] } {
  const b = nativeBinding();
  const calls: string[] = [];
  const fds: number[] = [];
  const ops: NotifyOps = {
    eventfd: () => {
      const fd = b.eventfd(0);
      fds.push(fd);
      return fd;
    },
    signal: (fd) => b.eventfdWrite(fd, 1),
    close: (fd) => {
      calls.push(`close ${fds.indexOf(fd)}`);
      b.closeFd(fd);
    },
    ioeventfd: (_fd, address, length, datamatch, assign) => {
      calls.push(`${assign ? 'assign' : 'deassign'} 0x${address.toString(16)} ${length} ${datamatch}`);
    },
    irqfd: () => t.fail('no irqfd for kicks'),
    drain: (fd) => b.eventfdRead(fd),
    watch: watchReadable,
  };
  return { ops, calls, fds };
}

test('ioeventfd notifier: registers on QueueNotify with the queue index, drains the eventfd on the loop, and undoes everything', async (t) => {
  const b = nativeBinding();
  const { ops, calls, fds } = eventfdOps(t);
  const notify = ioeventfdQueueNotifier(ops, 0xfeb0_1000, (e) => t.fail(e.message));
  let kicks = 0;
  const undo = notify(1, () => kicks++);
  t.deepEqual(calls, ['assign 0xfeb01050 4 1']);
  // Three kicks before the loop looks: one drain, one call.
  b.eventfdWrite(fds[0]!, 1);
  b.eventfdWrite(fds[0]!, 1);
  b.eventfdWrite(fds[0]!, 1);
  await new Promise((r) => setTimeout(r, 50));
  t.is(kicks, 1);
  b.eventfdWrite(fds[0]!, 1);
  await new Promise((r) => setTimeout(r, 50));
  t.is(kicks, 2);
  undo();
  t.deepEqual(calls, ['assign 0xfeb01050 4 1', 'deassign 0xfeb01050 4 1', 'close 0']);
});

test('ioeventfd notifier: a device that throws on a kick reaches onError, not the process (which would end)', async (t) => {
  const b = nativeBinding();
  const { ops, fds } = eventfdOps(t);
  const errors: string[] = [];
  const notify = ioeventfdQueueNotifier(ops, 0xfeb0_1000, (e) => errors.push(e.message));
  let kicks = 0;
  const undo = notify(0, () => {
    kicks++;
    throw new Error('device fault on a kick');
  });
  b.eventfdWrite(fds[0]!, 1);
  await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(errors, ['device fault on a kick']);
  // The watcher lives on: the owner decides (a VM stops with host-error and undoes its notifiers).
  b.eventfdWrite(fds[0]!, 1);
  await new Promise((r) => setTimeout(r, 50));
  t.is(kicks, 2);
  t.deepEqual(errors, ['device fault on a kick', 'device fault on a kick']);
  undo();
});
