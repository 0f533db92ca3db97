/**
 * A fake virtio driver for unit tests: it lays out split virtqueues in guest
 * memory and brings a device up through the virtio-mmio registers exactly as
 * Linux's virtio_mmio driver does (reset, ACKNOWLEDGE, DRIVER, features,
 * FEATURES_OK, queue setup, DRIVER_OK).
 */
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { RecordingIrqLine } from '../../../lib/devices/types';
import { REG, STATUS, VirtioMmioTransport, type VirtioDevice, type VirtioMmioOptions } from '../../../lib/devices/virtio/mmio';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../../lib/devices/virtio/queue';

export const RAM = 0x10_0000; // 1 MiB of RAM at 0
export const DATA_BASE = 0x8_0000;

export interface FakeQueue {
  index: number;
  size: number;
  desc: number;
  avail: number;
  used: number;
  nextDesc: number;
  availIdx: number;
  usedSeen: number;
}

export interface Buf {
  gpa: number;
  len: number;
  write?: boolean;
}

export class FakeDriver {
  readonly mem: GuestMemory;
  readonly irq = new RecordingIrqLine();
  readonly t: VirtioMmioTransport;
  readonly queues: FakeQueue[] = [];
  private nextData = DATA_BASE;

  /** `mem` defaults to one RAM range of RAM bytes at 0; `device` may also be a transport someone else built on `mem`. */
  constructor(device: VirtioDevice | VirtioMmioTransport, opts: Pick<VirtioMmioOptions, 'slot' | 'trigger' | 'queueNotifier' | 'onHostError'> = {}, mem: GuestMemory = GuestMemory.anonymous([{ gpa: 0, size: RAM }])) {
    this.mem = mem;
    this.t = device instanceof VirtioMmioTransport ? device : new VirtioMmioTransport({ memory: this.mem, irq: this.irq, device, ...opts });
  }

  /**
   * The same driver after a restore: a copy of guest memory (what a snapshot's
   * memory file gives back) and of this driver's view of its queues, driving
   * `device` (a fresh one of the same kind) on a new transport.
   */
  cloneOnto(device: VirtioDevice | ((mem: GuestMemory) => VirtioDevice), opts: Pick<VirtioMmioOptions, 'slot' | 'trigger' | 'queueNotifier' | 'onHostError'> = {}): FakeDriver {
    const mem = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
    mem.write(0, this.mem.read(0, RAM));
    const d = new FakeDriver(typeof device === 'function' ? device(mem) : device, opts, mem);
    for (const q of this.queues) d.queues.push({ ...q });
    d.nextData = this.nextData;
    return d;
  }

  w(reg: number, v: number): void {
    this.t.write(reg, 4, v);
  }
  r(reg: number): number {
    return this.t.read(reg, 4);
  }

  /** Allocate `len` bytes of data buffer (16-byte aligned) and optionally fill it. */
  alloc(len: number, content?: Uint8Array): number {
    const gpa = this.nextData;
    this.nextData += Math.ceil(Math.max(len, 1) / 16) * 16;
    if (content) this.mem.write(gpa, content);
    return gpa;
  }

  /** Negotiate `features` (VERSION_1 added unless omitted) and set up `sizes.length` queues. */
  up(sizes: number[], opts: { features?: bigint; omitVersion1?: boolean } = {}): void {
    this.w(REG.status, 0);
    this.w(REG.status, STATUS.acknowledge);
    this.w(REG.status, STATUS.acknowledge | STATUS.driver);
    const f = (opts.features ?? 0n) | (opts.omitVersion1 ? 0n : 1n << 32n);
    this.w(REG.driverFeaturesSel, 0);
    this.w(REG.driverFeatures, Number(f & 0xffff_ffffn));
    this.w(REG.driverFeaturesSel, 1);
    this.w(REG.driverFeatures, Number(f >> 32n));
    this.w(REG.status, STATUS.acknowledge | STATUS.driver | STATUS.featuresOk);
    if (!(this.r(REG.status) & STATUS.featuresOk)) return;
    let at = 0x1_0000;
    sizes.forEach((size, index) => {
      const q: FakeQueue = { index, size, desc: at, avail: at + 16 * size, used: 0, nextDesc: 0, availIdx: 0, usedSeen: 0 };
      q.used = Math.ceil((q.avail + 6 + 2 * size) / 4096) * 4096;
      at = Math.ceil((q.used + 6 + 8 * size) / 4096) * 4096;
      this.mem.fill(q.desc, at - q.desc); // a driver allocates zeroed rings, as Linux does
      this.w(REG.queueSel, index);
      this.w(REG.queueNum, size);
      this.w(REG.queueDescLow, q.desc);
      this.w(REG.queueDescHigh, 0);
      this.w(REG.queueDriverLow, q.avail);
      this.w(REG.queueDriverHigh, 0);
      this.w(REG.queueDeviceLow, q.used);
      this.w(REG.queueDeviceHigh, 0);
      this.w(REG.queueReady, 1);
      this.queues.push(q);
    });
    this.w(REG.status, STATUS.acknowledge | STATUS.driver | STATUS.featuresOk | STATUS.driverOk);
  }

  writeDesc(q: FakeQueue, i: number, gpa: number | bigint, len: number, flags: number, next: number): void {
    const at = q.desc + 16 * i;
    this.mem.writeU64(at, BigInt(gpa));
    this.mem.writeU32(at + 8, len);
    this.mem.writeU16(at + 12, flags);
    this.mem.writeU16(at + 14, next);
  }

  /** Put a chain of buffers in the descriptor table; returns its head. */
  chain(q: FakeQueue, bufs: Buf[]): number {
    const head = q.nextDesc;
    bufs.forEach((b, k) => {
      const i = (head + k) % q.size;
      const last = k === bufs.length - 1;
      this.writeDesc(q, i, b.gpa, b.len, (b.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), last ? 0 : (i + 1) % q.size);
    });
    q.nextDesc = (head + bufs.length) % q.size;
    return head;
  }

  /** Make a head available (without kicking). */
  offer(q: FakeQueue, head: number): void {
    this.mem.writeU16(q.avail + 4 + 2 * (q.availIdx % q.size), head);
    q.availIdx = (q.availIdx + 1) & 0xffff;
    this.mem.writeU16(q.avail + 2, q.availIdx);
  }

  kick(q: FakeQueue): void {
    this.w(REG.queueNotify, q.index);
  }

  usedIdx(q: FakeQueue): number {
    return this.mem.readU16(q.used + 2);
  }

  /** Used elements published since the last call: [head, len]. */
  takeUsed(q: FakeQueue): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    const idx = this.usedIdx(q);
    while (q.usedSeen !== idx) {
      const at = q.used + 4 + 8 * (q.usedSeen % q.size);
      out.push([this.mem.readU32(at), this.mem.readU32(at + 4)]);
      q.usedSeen = (q.usedSeen + 1) & 0xffff;
    }
    return out;
  }
}
