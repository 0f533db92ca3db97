import test from 'ava';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { REG, STATUS } from '../../../lib/devices/virtio/mmio';
import { MAX_TX_CHAIN_BYTES, VirtioConsole } from '../../../lib/devices/virtio/console';
import { FakeDriver } from './driver';

function setup(mem?: GuestMemory) {
  const out: Uint8Array[] = [];
  const con = new VirtioConsole({ sink: { write: (b) => out.push(b) } });
  const d = new FakeDriver(con, {}, mem);
  d.up([64, 64]);
  return { out, con, d, rx: d.queues[0]!, tx: d.queues[1]! };
}

test('guest output reaches the sink and host input reaches the guest', (t) => {
  const { out, con, d, rx, tx } = setup();
  const text = new TextEncoder().encode('hello from hvc0\n');
  d.offer(tx, d.chain(tx, [{ gpa: d.alloc(text.length, text), len: text.length }]));
  d.kick(tx);
  t.deepEqual(Buffer.concat(out), Buffer.from(text));
  t.deepEqual(d.takeUsed(tx), [[0, 0]]);
  const buf = d.alloc(64);
  d.offer(rx, d.chain(rx, [{ gpa: buf, len: 64, write: true }]));
  d.kick(rx);
  t.is(con.enqueue(Uint8Array.of(1, 2, 3)), 3);
  t.deepEqual(d.takeUsed(rx), [[0, 3]]);
  t.deepEqual(d.mem.read(buf, 3), Uint8Array.of(1, 2, 3));
});

test('a transmit chain of 63 aliased 16 MiB descriptors in a 32 MiB guest hands the sink at most 64 KiB (it raised host RSS to 1128 MiB)', (t) => {
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 32 << 20 }]);
  const { out, con, d, tx } = setup(mem);
  const alias = 16 << 20;
  mem.fill(alias, 16, 0x41);
  const bufs = Array.from({ length: 63 }, () => ({ gpa: alias, len: 16 << 20 }));
  d.offer(tx, d.chain(tx, bufs));
  const before = process.memoryUsage().arrayBuffers;
  d.kick(tx);
  const grown = process.memoryUsage().arrayBuffers - before;
  const handed = out.reduce((n, b) => n + b.length, 0);
  t.is(handed, MAX_TX_CHAIN_BYTES);
  t.is(out[0]![0], 0x41);
  t.is(con.txDroppedBytes, 63 * (16 << 20) - MAX_TX_CHAIN_BYTES);
  // What the kick made the host allocate: the kept 64 KiB and slack, not 1 GiB.
  t.true(grown < 8 << 20, `array buffers grew by ${grown} bytes`);
  t.deepEqual(d.takeUsed(tx), [[0, 0]]);
  t.is(d.r(REG.status) & STATUS.needsReset, 0);
});
