import test from 'ava';
import { INT_CONFIG_CHANGE, INT_USED_BUFFER, REG, STATUS, VIRTIO_MMIO_MAGIC } from '../../../lib/devices/virtio/mmio';
import { VirtioRng } from '../../../lib/devices/virtio/rng';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../../lib/devices/virtio/queue';
import { FakeDriver } from './driver';
import { localWord } from '../../../lib/hv/io-bus';

test('identification registers: magic, version 2, device id, and VERSION_1 offered in the high feature word', (t) => {
  const d = new FakeDriver(new VirtioRng());
  t.is(d.r(REG.magic), VIRTIO_MMIO_MAGIC);
  t.is(d.r(REG.version), 2);
  t.is(d.r(REG.deviceId), 4);
  d.w(REG.deviceFeaturesSel, 1);
  t.is(d.r(REG.deviceFeatures) & 1, 1);
  d.w(REG.queueSel, 0);
  t.is(d.r(REG.queueNumMax), 64);
  d.w(REG.queueSel, 1);
  t.is(d.r(REG.queueNumMax), 0, 'a queue that does not exist has max size 0');
});

test('no shared memory regions: every SHMSel reads back length and base -1, which drivers take as absent (Linux virtio-fs failed its probe on 0)', (t) => {
  const d = new FakeDriver(new VirtioRng());
  for (const id of [0, 1, 5]) {
    d.w(REG.shmSel, id);
    t.is(d.r(REG.shmLenLow), 0xffff_ffff);
    t.is(d.r(REG.shmLenHigh), 0xffff_ffff);
    t.is(d.r(REG.shmBaseLow), 0xffff_ffff);
    t.is(d.r(REG.shmBaseHigh), 0xffff_ffff);
  }
});

test('FEATURES_OK does not stick when the driver leaves out VERSION_1 or asks for unoffered bits', (t) => {
  const a = new FakeDriver(new VirtioRng());
  a.up([8], { omitVersion1: true });
  t.is(a.r(REG.status) & STATUS.featuresOk, 0);
  const b = new FakeDriver(new VirtioRng());
  b.up([8], { features: 1n << 5n });
  t.is(b.r(REG.status) & STATUS.featuresOk, 0);
  const c = new FakeDriver(new VirtioRng());
  c.up([8]);
  t.is(c.r(REG.status), STATUS.acknowledge | STATUS.driver | STATUS.featuresOk | STATUS.driverOk);
});

test('a used buffer raises the level interrupt until the driver acknowledges it', (t) => {
  const d = new FakeDriver(new VirtioRng());
  d.up([8]);
  const q = d.queues[0]!;
  const buf = d.alloc(32);
  d.offer(q, d.chain(q, [{ gpa: buf, len: 32, write: true }]));
  d.kick(q);
  t.deepEqual(d.takeUsed(q), [[0, 32]]);
  t.true(d.irq.level);
  t.is(d.r(REG.interruptStatus), INT_USED_BUFFER);
  d.w(REG.interruptAck, INT_USED_BUFFER);
  t.false(d.irq.level);
  t.is(d.r(REG.interruptStatus), 0);
});

test('edge-triggered: a used buffer is a pulse unless the bit is still unACKed, and sets InterruptStatus in the shared word that native code reads and ACKs', (t) => {
  const d = new FakeDriver(new VirtioRng(), { trigger: 'edge' });
  const regs = d.t.interruptStatusRegisters;
  t.deepEqual(regs, { read: REG.interruptStatus, ack: REG.interruptAck });
  const word = localWord();
  d.t.shareInterruptStatus(word, localWord());
  d.up([8]);
  const q = d.queues[0]!;
  for (let i = 0; i < 2; i++) {
    d.offer(q, d.chain(q, [{ gpa: d.alloc(16), len: 16, write: true }]));
    d.kick(q);
  }
  t.is(d.takeUsed(q).length, 2);
  // The second used buffer came while the first edge's bit was still set (not ACKed): the
  // driver's handler, which ACKs before it looks at the rings, will see both; no second edge.
  t.is(d.irq.pulses, 1);
  t.false(d.irq.level);
  t.is(word.load(), INT_USED_BUFFER);
  // What the vCPU thread does with an ACK, and the JS path agree on the word.
  word.and(~INT_USED_BUFFER);
  t.is(d.r(REG.interruptStatus), 0);
  d.offer(q, d.chain(q, [{ gpa: d.alloc(16), len: 16, write: true }]));
  d.kick(q);
  // After the ACK the next used buffer is an edge again.
  t.is(d.irq.pulses, 2);
  t.is(d.r(REG.interruptStatus), INT_USED_BUFFER);
  d.w(REG.interruptAck, INT_USED_BUFFER);
  t.is(word.load(), 0);
  // A reset clears it.
  word.store(INT_CONFIG_CHANGE);
  d.w(REG.status, 0);
  t.is(word.load(), 0);
});

test('level-triggered transports keep InterruptStatus in JS', (t) => {
  const level = new FakeDriver(new VirtioRng());
  t.is(level.t.interruptStatusRegisters, undefined);
  t.throws(() => level.t.shareInterruptStatus(localWord(), localWord()), { message: /only an edge-triggered transport/ });
});

test('a descriptor loop puts the device in DEVICE_NEEDS_RESET with a config interrupt, and reset recovers it', (t) => {
  const rng = new VirtioRng();
  const d = new FakeDriver(rng);
  d.up([8]);
  const q = d.queues[0]!;
  d.writeDesc(q, 0, d.alloc(16), 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
  d.writeDesc(q, 1, d.alloc(16), 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
  d.offer(q, 0);
  t.notThrows(() => d.kick(q));
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.is(d.r(REG.interruptStatus) & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE);
  t.regex(d.t.lastError ?? '', /loop/);
  // Further kicks are ignored while broken.
  d.kick(q);
  t.is(d.usedIdx(q), 0);
  // The driver resets and starts over: the device works again.
  d.queues.length = 0;
  d.up([8]);
  t.is(d.r(REG.status) & STATUS.needsReset, 0);
  const q2 = d.queues[0]!;
  d.offer(q2, d.chain(q2, [{ gpa: d.alloc(8), len: 8, write: true }]));
  d.kick(q2);
  t.is(d.takeUsed(q2).length, 1);
});

test('queue rings placed outside guest ram at DRIVER_OK put the device in needs-reset', (t) => {
  const d = new FakeDriver(new VirtioRng());
  d.w(REG.status, STATUS.acknowledge | STATUS.driver);
  d.w(REG.driverFeaturesSel, 1);
  d.w(REG.driverFeatures, 1);
  d.w(REG.status, STATUS.acknowledge | STATUS.driver | STATUS.featuresOk);
  d.w(REG.queueSel, 0);
  d.w(REG.queueNum, 8);
  d.w(REG.queueDescLow, 0);
  d.w(REG.queueDescHigh, 0x10); // 64 GiB: no RAM there
  d.w(REG.queueDriverLow, 0x2000);
  d.w(REG.queueDeviceLow, 0x3000);
  d.w(REG.queueReady, 1);
  d.w(REG.status, STATUS.acknowledge | STATUS.driver | STATUS.featuresOk | STATUS.driverOk);
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.regex(d.t.lastError ?? '', /outside guest ram/);
});

test('a queue size that is not a power of two puts the device in needs-reset', (t) => {
  const d = new FakeDriver(new VirtioRng());
  d.up([6]);
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.regex(d.t.lastError ?? '', /power of two/);
});

test('writing 0 to Status resets queues, features and the interrupt', (t) => {
  const d = new FakeDriver(new VirtioRng());
  d.up([8]);
  const q = d.queues[0]!;
  d.offer(q, d.chain(q, [{ gpa: d.alloc(8), len: 8, write: true }]));
  d.kick(q);
  t.true(d.irq.level);
  d.w(REG.status, 0);
  t.false(d.irq.level);
  t.is(d.r(REG.status), 0);
  d.w(REG.queueSel, 0);
  t.is(d.r(REG.queueReady), 0);
});

test('rng fills a chain of two writable buffers with random bytes', (t) => {
  const d = new FakeDriver(new VirtioRng());
  d.up([8]);
  const q = d.queues[0]!;
  const a = d.alloc(64);
  const b = d.alloc(64);
  d.offer(q, d.chain(q, [{ gpa: a, len: 64, write: true }, { gpa: b, len: 64, write: true }]));
  d.kick(q);
  t.deepEqual(d.takeUsed(q), [[0, 128]]);
  t.false(d.mem.read(a, 64).every((x) => x === 0));
  t.false(d.mem.read(b, 64).every((x) => x === 0));
  t.notDeepEqual([...d.mem.read(a, 64)], [...d.mem.read(b, 64)]);
});

test('no descriptor flag trick lets a device write outside guest ram', (t) => {
  const d = new FakeDriver(new VirtioRng());
  d.up([8]);
  const q = d.queues[0]!;
  d.writeDesc(q, 0, 0xff000, 0x2000, VIRTQ_DESC_F_WRITE, 0); // ends past 1 MiB of RAM
  d.offer(q, 0);
  t.notThrows(() => d.kick(q));
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.is(d.usedIdx(q), 0);
});

test('an indirect table past what a 16-bit next reaches puts the device in needs-reset without walking it, and reset recovers', (t) => {
  const rng = new VirtioRng();
  const d = new FakeDriver(rng);
  d.up([8], { features: 1n << 28n });
  const q = d.queues[0]!;
  // 0x10_0000 bytes of RAM hold no such table: a length of 2^20 entries is refused before the RAM check.
  d.writeDesc(q, 0, 0x1000, 16 * (1 << 20), 4, 0);
  d.offer(q, 0);
  t.notThrows(() => d.kick(q));
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.is(d.r(REG.interruptStatus) & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE);
  t.regex(d.t.lastError ?? '', /more than the 65536/);
  d.queues.length = 0;
  d.up([8]);
  const q2 = d.queues[0]!;
  d.offer(q2, d.chain(q2, [{ gpa: d.alloc(8), len: 8, write: true }]));
  d.kick(q2);
  t.deepEqual(d.takeUsed(q2), [[0, 8]]);
});

test('a driver cannot clear status bits without a reset: DRIVER_OK written again does not activate the device twice (found by the fuzzer: vsock leaked its eventfds)', (t) => {
  let activations = 0;
  let resets = 0;
  class CountingRng extends VirtioRng {
    override activate(ctx: Parameters<VirtioRng['activate']>[0]): void {
      activations++;
      super.activate(ctx);
    }
    override reset(): void {
      resets++;
      super.reset();
    }
  }
  const d = new FakeDriver(new CountingRng());
  d.up([8]);
  t.is(activations, 1);
  const all = STATUS.acknowledge | STATUS.driver | STATUS.featuresOk | STATUS.driverOk;
  // §2.1.1: the driver MUST NOT clear a status bit; the device keeps them until reset.
  d.w(REG.status, STATUS.acknowledge | STATUS.driver | STATUS.featuresOk);
  t.is(d.r(REG.status), all);
  d.w(REG.status, all);
  t.is(activations, 1);
  // The queues still work, and a reset still resets.
  const q = d.queues[0]!;
  d.offer(q, d.chain(q, [{ gpa: d.alloc(8), len: 8, write: true }]));
  d.kick(q);
  t.is(d.takeUsed(q).length, 1);
  const before = resets;
  d.w(REG.status, 0);
  t.is(d.r(REG.status), 0);
  t.is(resets, before + 1);
});

test('a host bug in a device outside an exit dispatch (an ioeventfd kick, a deferred pass) goes to onHostError, not up the event loop', (t) => {
  class BrokenRng extends VirtioRng {
    broken = false;
    override notify(index: number): void {
      if (this.broken) throw new TypeError('a bug in the device model');
      super.notify(index);
    }
  }
  const kicks: Array<() => void> = [];
  const errors: Error[] = [];
  const rng = new BrokenRng();
  const d = new FakeDriver(rng, { queueNotifier: (_i, onNotify) => (kicks.push(onNotify), () => undefined), onHostError: (e) => errors.push(e) });
  d.up([8]);
  rng.broken = true;
  t.is(kicks.length, 1);
  t.notThrows(() => kicks[0]!());
  t.is(errors.length, 1);
  t.regex(errors[0]!.message, /a bug in the device model/);
  // Without a handler the transport rethrows, as inside a dispatch, where the partition stops the VM.
  const bareRng = new BrokenRng();
  const bare = new FakeDriver(bareRng, { queueNotifier: (_i, onNotify) => (kicks.push(onNotify), () => undefined) });
  bare.up([8]);
  bareRng.broken = true;
  t.throws(() => kicks[1]!(), { instanceOf: TypeError });
});
