import test from 'ava';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { SplitQueue, VirtioQueueError, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../../lib/devices/virtio/queue';

const SIZE = 8;
const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;

function setup(features = { eventIdx: false, indirect: true }) {
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 0x10000 }]);
  const q = new SplitQueue(mem, { size: SIZE, descGpa: DESC, availGpa: AVAIL, usedGpa: USED }, features);
  let availIdx = 0;
  const desc = (i: number, gpa: number | bigint, len: number, flags: number, next = 0, table = DESC) => {
    mem.writeU64(table + 16 * i, BigInt(gpa));
    mem.writeU32(table + 16 * i + 8, len);
    mem.writeU16(table + 16 * i + 12, flags);
    mem.writeU16(table + 16 * i + 14, next);
  };
  const offer = (head: number) => {
    mem.writeU16(AVAIL + 4 + 2 * (availIdx % SIZE), head);
    availIdx = (availIdx + 1) & 0xffff;
    mem.writeU16(AVAIL + 2, availIdx);
  };
  return { mem, q, desc, offer };
}

test('a chain of readable then writable descriptors is returned in order with byte counts', (t) => {
  const { q, desc, offer } = setup();
  desc(0, 0x8000, 16, VIRTQ_DESC_F_NEXT, 3);
  desc(3, 0x8100, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 5);
  desc(5, 0x8400, 1, VIRTQ_DESC_F_WRITE);
  offer(0);
  const c = q.pop()!;
  t.is(c.head, 0);
  t.deepEqual(c.readable, [{ gpa: 0x8000, length: 16 }]);
  t.deepEqual(c.writable, [{ gpa: 0x8100, length: 512 }, { gpa: 0x8400, length: 1 }]);
  t.is(c.readableBytes, 16);
  t.is(c.writableBytes, 513);
  t.is(q.pop(), undefined);
});

test('pushUsed writes the element and advances the used index', (t) => {
  const { mem, q, desc, offer } = setup();
  desc(2, 0x8000, 4, VIRTQ_DESC_F_WRITE);
  offer(2);
  const c = q.pop()!;
  q.pushUsed(c.head, 4);
  t.is(mem.readU16(USED + 2), 1);
  t.is(mem.readU32(USED + 4), 2);
  t.is(mem.readU32(USED + 8), 4);
});

test('an indirect table is walked like a chain', (t) => {
  const { q, desc, offer } = setup();
  const table = 0x5000;
  desc(0, 0x8000, 10, VIRTQ_DESC_F_NEXT, 1, table);
  desc(1, 0x9000, 20, VIRTQ_DESC_F_WRITE, 0, table);
  desc(4, table, 32, VIRTQ_DESC_F_INDIRECT);
  offer(4);
  const c = q.pop()!;
  t.is(c.head, 4);
  t.deepEqual(c.readable, [{ gpa: 0x8000, length: 10 }]);
  t.deepEqual(c.writable, [{ gpa: 0x9000, length: 20 }]);
});

const bad: Array<[string, (s: ReturnType<typeof setup>) => void, RegExp]> = [
  ['a descriptor loop', (s) => { s.desc(0, 0x8000, 4, VIRTQ_DESC_F_NEXT, 1); s.desc(1, 0x8000, 4, VIRTQ_DESC_F_NEXT, 0); s.offer(0); }, /loop/],
  ['a self-referencing descriptor', (s) => { s.desc(0, 0x8000, 4, VIRTQ_DESC_F_NEXT, 0); s.offer(0); }, /loop/],
  ['a buffer outside guest ram', (s) => { s.desc(0, 0xf000, 0x2000, 0); s.offer(0); }, /outside guest ram/],
  ['an address whose length overflows', (s) => { s.desc(0, 0xffff_ffff_ffff_ff00n, 0x1000, 0); s.offer(0); }, /overflows/],
  ['a head outside the queue', (s) => { s.offer(SIZE); }, /outside a queue/],
  ['a next index outside the table', (s) => { s.desc(0, 0x8000, 4, VIRTQ_DESC_F_NEXT, 9); s.offer(0); }, /outside its table/],
  ['readable after writable', (s) => { s.desc(0, 0x8000, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1); s.desc(1, 0x8000, 4, 0); s.offer(0); }, /follows a device-writable/],
  ['an indirect table inside an indirect table', (s) => { s.desc(0, 0x5000, 16, VIRTQ_DESC_F_INDIRECT, 0, 0x5000); s.desc(1, 0x5000, 16, VIRTQ_DESC_F_INDIRECT); s.offer(1); }, /itself indirect/],
  ['an indirect length that is not a multiple of 16', (s) => { s.desc(0, 0x5000, 24, VIRTQ_DESC_F_INDIRECT); s.offer(0); }, /multiple of 16/],
  ['an indirect loop', (s) => { s.desc(0, 0x8000, 4, VIRTQ_DESC_F_NEXT, 1, 0x5000); s.desc(1, 0x8000, 4, VIRTQ_DESC_F_NEXT, 0, 0x5000); s.desc(0, 0x5000, 32, VIRTQ_DESC_F_INDIRECT); s.offer(0); }, /loop/],
  ['the available index running ahead by more than the queue size', (s) => { s.mem.writeU16(AVAIL + 2, SIZE + 1); }, /more than the queue size/],
];
for (const [what, arrange, msg] of bad) {
  test(`${what} is a VirtioQueueError, not a crash`, (t) => {
    const s = setup();
    arrange(s);
    const e = t.throws(() => s.q.pop(), { instanceOf: VirtioQueueError });
    t.regex(e!.message, msg);
    t.is(e!.code, 'ERR_VIRTIO_QUEUE');
  });
}

test('indirect descriptors are refused when the feature was not negotiated', (t) => {
  const s = setup({ eventIdx: false, indirect: false });
  s.desc(0, 0x5000, 16, VIRTQ_DESC_F_INDIRECT);
  s.offer(0);
  t.throws(() => s.q.pop(), { instanceOf: VirtioQueueError, message: /not negotiated/ });
});

test('queue sizes that are not powers of two and rings outside ram or misaligned are refused', (t) => {
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 0x10000 }]);
  const f = { eventIdx: false, indirect: false };
  t.throws(() => new SplitQueue(mem, { size: 6, descGpa: DESC, availGpa: AVAIL, usedGpa: USED }, f), { message: /power of two/ });
  t.throws(() => new SplitQueue(mem, { size: 0, descGpa: DESC, availGpa: AVAIL, usedGpa: USED }, f), { message: /power of two/ });
  t.throws(() => new SplitQueue(mem, { size: 8, descGpa: 0xfff0, availGpa: AVAIL, usedGpa: USED }, f), { message: /descriptor table .* outside guest ram/ });
  t.throws(() => new SplitQueue(mem, { size: 8, descGpa: DESC, availGpa: AVAIL, usedGpa: USED + 2 }, f), { message: /used ring .* not 4-byte aligned/ });
});

test('without event index, NO_INTERRUPT in avail.flags suppresses interrupts', (t) => {
  const { mem, q, desc, offer } = setup();
  desc(0, 0x8000, 4, VIRTQ_DESC_F_WRITE);
  offer(0);
  q.pushUsed(q.pop()!.head, 0);
  t.true(q.shouldInterrupt());
  t.false(q.shouldInterrupt(), 'nothing new was used');
  mem.writeU16(AVAIL, 1);
  offer(0);
  q.pushUsed(q.pop()!.head, 0);
  t.false(q.shouldInterrupt());
});

test('with event index, the driver is interrupted only when the used index passes used_event', (t) => {
  const { mem, q, desc, offer } = setup({ eventIdx: true, indirect: false });
  desc(0, 0x8000, 4, VIRTQ_DESC_F_WRITE);
  // used_event = 2: interrupt once the used index moves past 2 (i.e. reaches 3).
  mem.writeU16(AVAIL + 4 + 2 * SIZE, 2);
  const results: boolean[] = [];
  for (let i = 0; i < 4; i++) {
    offer(0);
    q.pushUsed(q.pop()!.head, 0);
    results.push(q.shouldInterrupt());
  }
  t.deepEqual(results, [false, false, true, false]);
});

test('with event index, setKicks publishes avail_event as the next slot the device reads', (t) => {
  const { mem, q, desc, offer } = setup({ eventIdx: true, indirect: false });
  desc(0, 0x8000, 4, VIRTQ_DESC_F_WRITE);
  offer(0);
  offer(0);
  q.pop();
  q.pop();
  q.setKicks(true);
  t.is(mem.readU16(USED + 4 + 8 * SIZE), 2);
});

test('without event index, setKicks toggles used.flags NO_NOTIFY', (t) => {
  const { mem, q } = setup();
  q.setKicks(false);
  t.is(mem.readU16(USED), 1);
  q.setKicks(true);
  t.is(mem.readU16(USED), 0);
});

test('readAt and writeAt cross segment boundaries', (t) => {
  const { mem, q, desc, offer } = setup();
  mem.write(0x8000, new Uint8Array([1, 2, 3]));
  mem.write(0x8100, new Uint8Array([4, 5, 6]));
  desc(0, 0x8000, 3, VIRTQ_DESC_F_NEXT, 1);
  desc(1, 0x8100, 3, VIRTQ_DESC_F_NEXT, 2);
  desc(2, 0x9000, 2, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3);
  desc(3, 0x9100, 2, VIRTQ_DESC_F_WRITE);
  offer(0);
  const c = q.pop()!;
  t.deepEqual([...q.readAt(c, 2, 3)], [3, 4, 5]);
  t.throws(() => q.readAt(c, 4, 3), { instanceOf: VirtioQueueError });
  t.is(q.writeAt(c, 1, new Uint8Array([9, 8, 7, 6])), 3, 'only 3 writable bytes remain after offset 1');
  t.deepEqual([...mem.read(0x9000, 2)], [0, 9]);
  t.deepEqual([...mem.read(0x9100, 2)], [8, 7]);
});

test('with event index, draining the ring publishes avail_event so the driver kicks for its next buffer', (t) => {
  const { mem, q, desc, offer } = setup({ eventIdx: true, indirect: false });
  desc(0, 0x8000, 4, VIRTQ_DESC_F_WRITE);
  for (let i = 0; i < 3; i++) {
    offer(0);
    while (q.pop());
    t.is(mem.readU16(USED + 4 + 8 * SIZE), i + 1);
  }
});

// --- walk bounds (issue 15 item 3) ------------------------------------------

test('an indirect table of more than 65536 entries is refused before it is walked', (t) => {
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 32 << 20 }]);
  const q = new SplitQueue(mem, { size: SIZE, descGpa: DESC, availGpa: AVAIL, usedGpa: USED }, { eventIdx: false, indirect: true });
  // 1 Mi entries of zero-length descriptors, each chained to the next: the
  // walk used to visit all of them (228 ms and 72 MiB of heap).
  const table = 0x10_0000;
  const entries = 1 << 20;
  const dv = new DataView(mem.view(table, 16 * entries)!.buffer, table, 16 * entries);
  for (let i = 0; i < entries - 1; i++) {
    dv.setUint16(16 * i + 12, VIRTQ_DESC_F_NEXT, true);
    dv.setUint16(16 * i + 14, (i + 1) & 0xffff, true);
  }
  mem.writeU64(DESC, BigInt(table));
  mem.writeU32(DESC + 8, 16 * entries);
  mem.writeU16(DESC + 12, VIRTQ_DESC_F_INDIRECT);
  mem.writeU16(AVAIL + 4, 0);
  mem.writeU16(AVAIL + 2, 1);
  t.throws(() => q.pop(), { instanceOf: VirtioQueueError, message: /1048576 entries, more than the 65536/ });
});

test('a chain through an indirect table may not be longer than the queue size', (t) => {
  const { q, desc, offer } = setup();
  const table = 0x5000;
  // SIZE + 1 descriptors chained inside a table of 16: no loop, but longer than the queue.
  for (let i = 0; i <= SIZE; i++) desc(i, 0x8000, 4, i < SIZE ? VIRTQ_DESC_F_NEXT : 0, i + 1, table);
  desc(0, table, 16 * 16, VIRTQ_DESC_F_INDIRECT);
  offer(0);
  t.throws(() => q.pop(), { instanceOf: VirtioQueueError, message: /longer than the queue size 8/ });
});

test('direct descriptors before an indirect table count toward the queue-size bound', (t) => {
  const { q, desc, offer } = setup();
  const table = 0x5000;
  // 2 direct + 7 in the table = 9 buffers > 8 (the descriptor pointing at the table is not a buffer).
  desc(0, 0x8000, 4, VIRTQ_DESC_F_NEXT, 1);
  desc(1, 0x8000, 4, VIRTQ_DESC_F_NEXT, 2);
  desc(2, table, 16 * 7, VIRTQ_DESC_F_INDIRECT);
  for (let i = 0; i < 7; i++) desc(i, 0x8000, 4, i < 6 ? VIRTQ_DESC_F_NEXT : 0, i + 1, table);
  offer(0);
  t.throws(() => q.pop(), { instanceOf: VirtioQueueError, message: /longer than the queue size/ });
  // One fewer in the table fits: 2 + 6 = 8.
  const s = setup();
  s.desc(0, 0x8000, 4, VIRTQ_DESC_F_NEXT, 1);
  s.desc(1, 0x8000, 4, VIRTQ_DESC_F_NEXT, 2);
  s.desc(2, table, 16 * 6, VIRTQ_DESC_F_INDIRECT);
  for (let i = 0; i < 6; i++) s.desc(i, 0x8000, 4, i < 5 ? VIRTQ_DESC_F_NEXT : 0, i + 1, table);
  s.offer(0);
  t.is(s.q.pop()!.readable.length, 8);
});

test('an indirect table of exactly the queue size is a whole chain (Linux virtio-blk sends seg_max + 2 = queue size entries)', (t) => {
  const { q, desc, offer } = setup();
  const table = 0x5000;
  for (let i = 0; i < SIZE; i++) desc(i, 0x8000 + 512 * i, 512, (i < SIZE - 1 ? VIRTQ_DESC_F_NEXT : 0) | (i > 0 ? VIRTQ_DESC_F_WRITE : 0), i + 1, table);
  desc(0, table, 16 * SIZE, VIRTQ_DESC_F_INDIRECT);
  offer(0);
  const c = q.pop()!;
  t.is(c.readable.length + c.writable.length, SIZE);
});

test('INDIRECT together with NEXT is refused', (t) => {
  const { q, desc, offer } = setup();
  desc(0, 0x5000, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
  desc(1, 0x8000, 4, 0);
  offer(0);
  t.throws(() => q.pop(), { instanceOf: VirtioQueueError, message: /both INDIRECT and NEXT/ });
});

test('zero-length descriptors are checked but make no segments', (t) => {
  const { q, desc, offer } = setup();
  desc(0, 0x8000, 0, VIRTQ_DESC_F_NEXT, 1);
  desc(1, 0x8000, 8, VIRTQ_DESC_F_NEXT, 2);
  desc(2, 0xffff_0000, 0, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3); // a zero-length buffer needs no RAM behind it
  desc(3, 0x9000, 4, VIRTQ_DESC_F_WRITE);
  offer(0);
  const c = q.pop()!;
  t.deepEqual(c.readable, [{ gpa: 0x8000, length: 8 }]);
  t.deepEqual(c.writable, [{ gpa: 0x9000, length: 4 }]);
  // Order still holds for zero-length ones: a readable after a zero-length writable is refused.
  const s = setup();
  s.desc(0, 0x8000, 0, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
  s.desc(1, 0x8000, 4, 0);
  s.offer(0);
  t.throws(() => s.q.pop(), { message: /follows a device-writable/ });
});
