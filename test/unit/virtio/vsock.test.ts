import test from 'ava';
import { INT_CONFIG_CHANGE, INT_USED_BUFFER, REG, STATUS, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1 } from '../../../lib/devices/virtio/mmio';
import { VirtioVsock, VIRTIO_VSOCK_F_SEQPACKET, type HostRamMapping, type VhostVsockOps } from '../../../lib/devices/virtio/vsock';
import type { NotifyOps } from '../../../lib/hv/partition';
import { localWord } from '../../../lib/hv/io-bus';
import { FakeDriver, RAM } from './driver';

const RING_FEATURES = (1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_F_RING_INDIRECT_DESC) | (1n << VIRTIO_F_RING_EVENT_IDX);
const SLOT = { base: 0xfeb0_1000, gsi: 17 };
const HOST_BASE = 0x7f00_0000_0000n;

/** Records every vhost ioctl and KVM registration in order; tracks which eventfds are open and registered. */
class Fakes {
  readonly log: string[] = [];
  readonly open = new Set<number>();
  readonly ioeventfds = new Map<number, string>();
  readonly irqfds = new Map<number, number>();
  readonly signalled: number[] = [];
  failOn: string | undefined;
  private nextFd = 100;
  vhostFeatures = RING_FEATURES | (1n << VIRTIO_VSOCK_F_SEQPACKET);

  private rec(entry: string): void {
    this.log.push(entry);
    if (this.failOn && entry.startsWith(this.failOn)) throw new Error(`fake failure in ${entry}`);
  }

  vhost(): VhostVsockOps {
    const f = this;
    return {
      get features() {
        return f.vhostFeatures;
      },
      setFeatures: (x) => f.rec(`setFeatures ${x.toString(16)}`),
      setMemTable: (r) => f.rec(`setMemTable ${r.map((m) => `${m.gpa.toString(16)}+${m.size.toString(16)}@${m.userAddr.toString(16)}`).join(',')}`),
      setVringNum: (i, n) => f.rec(`setVringNum ${i} ${n}`),
      setVringBase: (i, n) => f.rec(`setVringBase ${i} ${n}`),
      setVringAddr: (i, a) => f.rec(`setVringAddr ${i} ${a.desc.toString(16)} ${a.avail.toString(16)} ${a.used.toString(16)}`),
      getVringBase: (i) => {
        f.rec(`getVringBase ${i}`);
        return 0;
      },
      setVringKick: (i, fd) => f.rec(`setVringKick ${i} ${fd}`),
      setVringCall: (i, fd) => f.rec(`setVringCall ${i} ${fd}`),
      setRunning: (r) => f.rec(`setRunning ${r}`),
    };
  }

  notify(): NotifyOps {
    return {
      eventfd: () => {
        const fd = this.nextFd++;
        this.open.add(fd);
        return fd;
      },
      signal: (fd) => {
        if (!this.open.has(fd)) throw new Error(`signal of closed fd ${fd}`);
        this.signalled.push(fd);
      },
      close: (fd) => {
        if (!this.open.delete(fd)) throw new Error(`double close of fd ${fd}`);
      },
      ioeventfd: (fd, address, length, datamatch, assign) => {
        this.rec(`ioeventfd ${assign ? 'assign' : 'deassign'} ${fd} ${address.toString(16)} ${length} ${datamatch}`);
        if (assign) this.ioeventfds.set(fd, `${address.toString(16)}/${datamatch}`);
        else this.ioeventfds.delete(fd);
      },
      irqfd: (fd, gsi, assign) => {
        this.rec(`irqfd ${assign ? 'assign' : 'deassign'} ${fd} ${gsi}`);
        if (assign) this.irqfds.set(fd, gsi);
        else this.irqfds.delete(fd);
      },
      drain: () => {
        throw new Error('vhost drains its own kicks');
      },
      watch: () => {
        throw new Error('vhost watches its own kicks');
      },
    };
  }
}

function setup(opts: { ram?: HostRamMapping[]; features?: bigint } = {}) {
  const f = new Fakes();
  const ram = opts.ram ?? [{ gpa: 0, size: RAM, hostAddress: HOST_BASE }];
  const dev = new VirtioVsock({ cid: 42, vhost: f.vhost(), notify: f.notify(), ram: () => ram });
  const d = new FakeDriver(dev, { slot: SLOT, trigger: 'edge' });
  return { f, dev, d };
}

test('device ID 19 and guest_cid as le64 in config space, through the transport', (t) => {
  const { d } = setup();
  t.is(d.r(REG.deviceId), 19);
  t.is(d.t.read(0x100, 4), 42);
  t.is(d.t.read(0x104, 4), 0);
  t.is(d.t.read(0x100, 8), 42);
  t.is(d.t.read(0x100, 1), 42);
  // Read-only: a write changes nothing.
  d.t.write(0x100, 4, 7);
  t.is(d.t.read(0x100, 4), 42);
});

test('the guest is offered SEQPACKET only when vhost has it; vhost without the ring features is refused', (t) => {
  const { d } = setup();
  d.w(REG.deviceFeaturesSel, 0);
  t.is(d.r(REG.deviceFeatures) & 0b11, 0b10);
  const f = new Fakes();
  f.vhostFeatures = RING_FEATURES;
  t.is(new VirtioVsock({ cid: 3, vhost: f.vhost(), notify: f.notify(), ram: () => [] }).features, 0n);
  f.vhostFeatures = 1n << VIRTIO_F_VERSION_1;
  t.throws(() => new VirtioVsock({ cid: 3, vhost: f.vhost(), notify: f.notify(), ram: () => [] }), { message: /lacks ring features/ });
});

test('DRIVER_OK hands rx and tx to vhost: features, memory table, rings at host addresses, ioeventfds on QueueNotify, one irqfd, then running', (t) => {
  const { f, dev, d } = setup();
  d.up([128, 128, 64], { features: (1n << VIRTIO_F_RING_EVENT_IDX) | (1n << VIRTIO_VSOCK_F_SEQPACKET) });
  t.is(d.r(REG.status) & STATUS.needsReset, 0, d.t.lastError);
  t.true(dev.vhostRunning);
  const [rx, tx] = d.queues;
  const ua = (gpa: number) => (HOST_BASE + BigInt(gpa)).toString(16);
  const call = [...f.irqfds.keys()][0]!;
  const kicks = [...f.ioeventfds.keys()];
  t.deepEqual(f.log.slice(0, 2), [`setFeatures ${((1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_F_RING_EVENT_IDX) | (1n << VIRTIO_VSOCK_F_SEQPACKET)).toString(16)}`, `setMemTable 0+${RAM.toString(16)}@${HOST_BASE.toString(16)}`]);
  t.deepEqual(f.log.slice(2), [
    `irqfd assign ${call} 17`,
    'setVringNum 0 128',
    'setVringBase 0 0',
    `setVringAddr 0 ${ua(rx!.desc)} ${ua(rx!.avail)} ${ua(rx!.used)}`,
    `ioeventfd assign ${kicks[0]} feb01050 4 0`,
    `setVringKick 0 ${kicks[0]}`,
    `setVringCall 0 ${call}`,
    'setVringNum 1 128',
    'setVringBase 1 0',
    `setVringAddr 1 ${ua(tx!.desc)} ${ua(tx!.avail)} ${ua(tx!.used)}`,
    `ioeventfd assign ${kicks[1]} feb01050 4 1`,
    `setVringKick 1 ${kicks[1]}`,
    `setVringCall 1 ${call}`,
    'setRunning true',
  ]);
  // Kicks the driver made before the registrations were live are replayed once.
  t.deepEqual(f.signalled, kicks);
  t.is(f.open.size, 3);
});

test('reset stops vhost before anything else, detaches the rings, unregisters and closes every eventfd; a second reset does nothing', (t) => {
  const { f, dev, d } = setup();
  d.up([128, 128, 64]);
  const before = f.log.length;
  d.w(REG.status, 0);
  const teardown = f.log.slice(before);
  t.is(teardown[0], 'setRunning false');
  t.deepEqual(teardown.slice(1, 7), ['getVringBase 0', 'setVringKick 0 -1', 'setVringCall 0 -1', 'getVringBase 1', 'setVringKick 1 -1', 'setVringCall 1 -1']);
  t.true(teardown.slice(7).every((l) => l.startsWith('ioeventfd deassign') || l.startsWith('irqfd deassign')));
  t.is(f.open.size, 0);
  t.is(f.ioeventfds.size, 0);
  t.is(f.irqfds.size, 0);
  t.false(dev.vhostRunning);
  const n = f.log.length;
  dev.reset();
  t.is(f.log.length, n);
  // And it comes back: a second probe hands the rings over again.
  d.queues.length = 0;
  d.up([64, 64, 64]);
  t.true(dev.vhostRunning);
  t.is(f.open.size, 3);
});

test('a vhost failure half-way through activation undoes what was done and leaves no eventfd open or registered', (t) => {
  const { f, dev, d } = setup();
  f.failOn = 'setVringAddr 1';
  t.throws(() => d.up([128, 128, 64]), { message: /fake failure in setVringAddr 1/ });
  t.false(dev.vhostRunning);
  t.is(f.open.size, 0);
  t.is(f.ioeventfds.size, 0);
  t.is(f.irqfds.size, 0);
  t.false(f.log.includes('setRunning true'));
  t.true(f.log.includes('setVringKick 0 -1'));
});

test('a ring that straddles two RAM mappings is a guest error (needs-reset), not handed to vhost', (t) => {
  // Same GPAs, but the host mapping breaks at 0x1_0400: inside queue 0's descriptor table.
  const { f, d } = setup({ ram: [{ gpa: 0, size: 0x1_0400, hostAddress: HOST_BASE }, { gpa: 0x1_0400, size: RAM - 0x1_0400, hostAddress: HOST_BASE + 0x100_0000n }] });
  d.up([128, 128, 64]);
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.regex(d.t.lastError ?? '', /queue 0 descriptor table at gpa 0x10000 .* is not inside one guest RAM region/);
  t.false(f.log.some((l) => l.startsWith('setVringAddr')));
  t.is(f.open.size, 0);
});

test('while vhost owns the rings, InterruptStatus reports a used buffer from the words the vCPU threads answer, and an ACK leaves it', (t) => {
  const { d } = setup();
  // Answered natively: the transport offers the register pair although vhost interrupts by irqfd.
  t.deepEqual(d.t.interruptStatusRegisters, { read: REG.interruptStatus, ack: REG.interruptAck });
  const word = localWord();
  const held = localWord();
  d.t.shareInterruptStatus(word, held);
  t.is(d.r(REG.interruptStatus), 0);
  d.up([128, 128, 64]);
  // What a vCPU thread answers: word | held, before vhost moved any used index.
  t.is(word.load() | held.load(), INT_USED_BUFFER);
  t.is(d.r(REG.interruptStatus), INT_USED_BUFFER);
  // The vCPU thread's ACK clears bits in `word` only.
  word.and(~INT_USED_BUFFER);
  d.w(REG.interruptAck, INT_USED_BUFFER);
  t.is(d.r(REG.interruptStatus), INT_USED_BUFFER);
  // A config change comes on top of it and is ACKed away.
  d.t.configChanged();
  t.is(d.r(REG.interruptStatus), INT_USED_BUFFER | INT_CONFIG_CHANGE);
  d.w(REG.interruptAck, INT_CONFIG_CHANGE);
  t.is(d.r(REG.interruptStatus), INT_USED_BUFFER);
  // Not while vhost does not own the rings.
  d.w(REG.status, 0);
  t.is(held.load(), 0);
  t.is(d.r(REG.interruptStatus), 0);
});

test('an edge-triggered slot pulses its line per interrupt and never holds it high', (t) => {
  const { d } = setup();
  d.up([128, 128, 64]);
  d.t.configChanged();
  t.is(d.irq.pulses, 1);
  t.false(d.irq.level);
  t.is(d.r(REG.interruptStatus), INT_CONFIG_CHANGE | INT_USED_BUFFER);
  d.w(REG.interruptAck, INT_CONFIG_CHANGE);
  t.is(d.r(REG.interruptStatus), INT_USED_BUFFER);
  t.false(d.irq.history.includes('high'));
});

test('kicks that reach userspace go to vhost for rx/tx and are ignored for the event queue', (t) => {
  const { f, d } = setup();
  d.up([128, 128, 64]);
  const kicks = [...f.ioeventfds.keys()];
  f.signalled.length = 0;
  d.kick(d.queues[1]!);
  d.kick(d.queues[2]!);
  d.kick(d.queues[0]!);
  t.deepEqual(f.signalled, [kicks[1], kicks[0]]);
  t.is(d.r(REG.status) & STATUS.needsReset, 0);
});

test('DRIVER_OK without the tx queue enabled is needs-reset and wires nothing', (t) => {
  const { f, d } = setup();
  d.up([128]);
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.regex(d.t.lastError ?? '', /vsock queue 1 was not enabled/);
  t.is(f.log.length, 0);
});
