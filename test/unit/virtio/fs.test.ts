/**
 * lib/devices/virtio/fs.ts driven through the transport with a recording
 * vhost-user backend: config space, the order rings are handed over, what a
 * reset undoes, and what a failing backend or a ring outside RAM leads to.
 */
import test from 'ava';
import { REG, STATUS, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1 } from '../../../lib/devices/virtio/mmio';
import { encodeFsTag, VirtioFs, type SharedRamMapping, type VhostUserDeviceOps } from '../../../lib/devices/virtio/fs';
import { VhostUserError } from '../../../lib/devices/virtio/vhost-user';
import type { NotifyOps } from '../../../lib/hv/partition';
import { FakeDriver, RAM } from './driver';

const RING_FEATURES = (1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_F_RING_INDIRECT_DESC) | (1n << VIRTIO_F_RING_EVENT_IDX);
const SLOT = { base: 0xfeb0_2000, gsi: 18 };
const HOST_BASE = 0x7f00_0000_0000n;
const RAM_FD = 77;

class Fakes {
  readonly log: string[] = [];
  readonly open = new Set<number>();
  readonly registered = new Set<number>();
  readonly signalled: number[] = [];
  failOn: string | undefined;
  private nextFd = 100;

  private rec(entry: string): void {
    this.log.push(entry);
    if (this.failOn && entry.startsWith(this.failOn)) throw new VhostUserError(`virtiofsd for "t": the peer closed the socket (in ${entry})`);
  }

  backend(features = RING_FEATURES): VhostUserDeviceOps {
    return {
      features,
      setFeatures: (x) => this.rec(`setFeatures ${x.toString(16)}`),
      setMemTable: (r) => this.rec(`setMemTable ${r.map((m) => `${m.gpa.toString(16)}+${m.size.toString(16)}@${m.userAddr.toString(16)} fd ${m.fd} off ${m.mmapOffset}`).join(',')}`),
      setVringNum: (i, n) => this.rec(`setVringNum ${i} ${n}`),
      setVringBase: (i, n) => this.rec(`setVringBase ${i} ${n}`),
      setVringAddr: (i, a) => this.rec(`setVringAddr ${i} ${a.desc.toString(16)} ${a.avail.toString(16)} ${a.used.toString(16)}`),
      getVringBase: (i) => {
        this.rec(`getVringBase ${i}`);
        return 0;
      },
      setVringKick: (i, fd) => this.rec(`setVringKick ${i} ${fd}`),
      setVringCall: (i, fd) => this.rec(`setVringCall ${i} ${fd}`),
      setVringEnable: (i, on) => this.rec(`setVringEnable ${i} ${on}`),
    };
  }

  notify(): NotifyOps {
    return {
      eventfd: () => {
        const fd = this.nextFd++;
        this.open.add(fd);
        return fd;
      },
      signal: (fd) => void this.signalled.push(fd),
      // The device hands its eventfds to the backend; it never reads or watches them itself.
      drain: () => 0,
      watch: () => ({ close() {} }),
      close: (fd) => {
        if (!this.open.delete(fd)) throw new Error(`double close of fd ${fd}`);
      },
      ioeventfd: (fd, address, _len, datamatch, assign) => {
        this.log.push(`ioeventfd ${assign ? 'assign' : 'deassign'} ${fd} ${address.toString(16)} ${datamatch}`);
        if (assign) this.registered.add(fd);
        else this.registered.delete(fd);
      },
      irqfd: (fd, gsi, assign) => {
        this.log.push(`irqfd ${assign ? 'assign' : 'deassign'} ${fd} ${gsi}`);
        if (assign) this.registered.add(fd);
        else this.registered.delete(fd);
      },
    };
  }
}

function setup(opts: { ram?: SharedRamMapping[]; tag?: string } = {}) {
  const f = new Fakes();
  const ram = opts.ram ?? [{ gpa: 0, size: RAM, hostAddress: HOST_BASE, fd: RAM_FD }];
  const dev = new VirtioFs({ tag: opts.tag ?? 'hostshare', backend: f.backend(), notify: f.notify(), ram: () => ram });
  const d = new FakeDriver(dev, { slot: SLOT, trigger: 'edge' });
  return { f, dev, d };
}

test('device ID 26; config space is the tag NUL-padded to 36 bytes, then num_request_queues = 1', (t) => {
  const { d } = setup({ tag: 'hostshare' });
  t.is(d.r(REG.deviceId), 26);
  const bytes = Array.from({ length: 40 }, (_, i) => d.t.read(0x100 + i, 1));
  t.is(Buffer.from(bytes.slice(0, 9)).toString(), 'hostshare');
  t.deepEqual(bytes.slice(9, 36), new Array(27).fill(0));
  t.is(d.t.read(0x100 + 36, 4), 1);
  // A 36-byte tag fills the field with no NUL.
  const { d: d36 } = setup({ tag: 'x'.repeat(36) });
  t.is(d36.t.read(0x100 + 35, 1), 0x78);
  t.is(d36.t.read(0x100 + 36, 4), 1);
});

test('tags are 1 to 36 bytes of UTF-8 without NUL', (t) => {
  t.is(encodeFsTag('é').length, 2);
  for (const bad of ['', 'x'.repeat(37), 'a\0b', 'é'.repeat(19)]) t.throws(() => encodeFsTag(bad), { message: /must be 1 to 36 bytes of UTF-8 without NUL/ });
});

test('a backend without the ring features the transport offers is refused', (t) => {
  const f = new Fakes();
  t.throws(() => new VirtioFs({ tag: 't', backend: f.backend(1n << VIRTIO_F_VERSION_1), notify: f.notify(), ram: () => [] }), { code: 'ERR_VHOST_USER', message: /lacks ring features/ });
});

test('DRIVER_OK hands both rings over: features, memory table with the memfd, per ring size, base, host addresses, kick, call, then enable; early kicks are replayed', (t) => {
  const { f, dev, d } = setup();
  d.up([64, 256], { features: 1n << VIRTIO_F_RING_EVENT_IDX });
  t.is(d.r(REG.status) & STATUS.needsReset, 0, d.t.lastError);
  t.true(dev.backendRunning);
  const [hi, req] = d.queues;
  const ua = (gpa: number) => (HOST_BASE + BigInt(gpa)).toString(16);
  const call = f.log.find((l) => l.startsWith('irqfd assign'))!.split(' ')[2];
  const kick = (i: number) => f.log.find((l) => l.startsWith('ioeventfd assign') && l.endsWith(` feb02050 ${i}`))!.split(' ')[2];
  t.deepEqual(f.log, [
    `setFeatures ${((1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_F_RING_EVENT_IDX)).toString(16)}`,
    `setMemTable 0+${RAM.toString(16)}@${HOST_BASE.toString(16)} fd ${RAM_FD} off 0`,
    `irqfd assign ${call} 18`,
    'setVringNum 0 64',
    'setVringBase 0 0',
    `setVringAddr 0 ${ua(hi!.desc)} ${ua(hi!.avail)} ${ua(hi!.used)}`,
    `ioeventfd assign ${kick(0)} feb02050 0`,
    `setVringKick 0 ${kick(0)}`,
    `setVringCall 0 ${call}`,
    'setVringNum 1 256',
    'setVringBase 1 0',
    `setVringAddr 1 ${ua(req!.desc)} ${ua(req!.avail)} ${ua(req!.used)}`,
    `ioeventfd assign ${kick(1)} feb02050 1`,
    `setVringKick 1 ${kick(1)}`,
    `setVringCall 1 ${call}`,
    'setVringEnable 0 true',
    'setVringEnable 1 true',
  ]);
  t.deepEqual(f.signalled.map(String), [kick(0), kick(1)]);
});

test('reset disables and stops each ring (GET_VRING_BASE), then unregisters and closes every eventfd; it comes back on the next probe', (t) => {
  const { f, dev, d } = setup();
  d.up([64, 256]);
  const before = f.log.length;
  d.w(REG.status, 0);
  const teardown = f.log.slice(before);
  t.deepEqual(teardown.slice(0, 4), ['setVringEnable 0 false', 'getVringBase 0', 'setVringEnable 1 false', 'getVringBase 1']);
  t.true(teardown.slice(4).every((l) => /^(ioeventfd|irqfd) deassign/.test(l)));
  t.is(f.open.size, 0);
  t.is(f.registered.size, 0);
  t.false(dev.backendRunning);
  d.queues.length = 0;
  d.up([128, 128]);
  t.true(dev.backendRunning);
  t.is(f.open.size, 3);
});

test('a backend that fails half-way (the daemon died) puts the device in needs-reset with nothing left registered, and never stops a ring it did not start', (t) => {
  const { f, dev, d } = setup();
  f.failOn = 'setVringAddr 1';
  d.up([64, 256]);
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.regex(d.t.lastError ?? '', /virtiofsd for "t": the peer closed the socket/);
  t.false(dev.backendRunning);
  t.is(f.open.size, 0);
  t.is(f.registered.size, 0);
  // Ring 0 had its kick (started) and is stopped; ring 1 never started: QEMU's virtiofsd asserts on stopping such a ring.
  t.true(f.log.includes('getVringBase 0'));
  t.false(f.log.includes('getVringBase 1'));
});

test('a ring outside one RAM region is a guest error (needs-reset) and nothing reaches the backend', (t) => {
  const { f, d } = setup({ ram: [{ gpa: 0, size: 0x1_0400, hostAddress: HOST_BASE, fd: 5 }, { gpa: 0x1_0400, size: RAM - 0x1_0400, hostAddress: HOST_BASE + 0x100_0000n, fd: 6 }] });
  d.up([128, 256]);
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.regex(d.t.lastError ?? '', /virtio-fs queue 0 descriptor table at gpa 0x10000 .* is not inside one guest RAM region/);
  t.is(f.log.length, 0);
  t.is(f.open.size, 0);
});

test('guest RAM without an fd (not added shared) cannot go to virtiofsd: needs-reset naming the region, nothing reaches the backend', (t) => {
  const { f, d } = setup({ ram: [{ gpa: 0, size: RAM, hostAddress: HOST_BASE, fd: -1 }] });
  d.up([128, 256]);
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.regex(d.t.lastError ?? '', /virtio-fs needs guest ram another process can map, and the region at gpa 0x0 has no fd/);
  t.is(f.log.length, 0);
  t.is(f.open.size, 0);
});

test('a driver that leaves the request queue disabled gets needs-reset, not a half-started backend', (t) => {
  const { f, d } = setup();
  d.up([64]);
  t.truthy(d.r(REG.status) & STATUS.needsReset);
  t.regex(d.t.lastError ?? '', /virtio-fs queue 1 was not enabled before DRIVER_OK/);
  t.is(f.log.length, 0);
});
