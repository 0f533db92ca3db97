/**
 * GuestMemory pieces given as `load` callbacks (how RamSlots hands it guest
 * RAM): each buffer is made on the first access to its piece and only then;
 * asking whether bytes are RAM makes none; a callback that returns a buffer
 * of the wrong size is a GuestMemoryError, not a silent short view.
 */
import test from 'ava';
import { GuestMemory } from '../../../lib/memory/guest-memory';

const PIECE = 4096;

function lazyMemory(pieces: number, size = PIECE): { mem: GuestMemory; made: number[] } {
  const made: number[] = [];
  const mem = new GuestMemory();
  mem.addRegion({
    gpa: 0x10000,
    size: pieces * PIECE,
    name: 'lazy',
    views: Array.from({ length: pieces }, (_, i) => ({ gpa: 0x10000 + i * PIECE, size: PIECE, load: () => (made.push(i), new ArrayBuffer(size)) })),
  });
  return { mem, made };
}

test('a lazy piece gets its buffer on its first access only', (t) => {
  const { mem, made } = lazyMemory(4);
  t.true(mem.isRam(0x10000, 4 * PIECE));
  t.false(mem.isRam(0x10000, 4 * PIECE + 1));
  t.deepEqual(made, [], 'isRam made no buffer');
  mem.writeU32(0x10000 + 2 * PIECE + 8, 0x12345678);
  t.is(mem.readU32(0x10000 + 2 * PIECE + 8), 0x12345678);
  t.deepEqual(made, [2]);
  // An access across pieces 0 and 1 makes both, once.
  mem.write(0x10000 + PIECE - 2, Uint8Array.of(1, 2, 3, 4));
  t.deepEqual([...mem.read(0x10000 + PIECE - 2, 4)], [1, 2, 3, 4]);
  mem.readU8(0x10000);
  t.deepEqual(made, [2, 0, 1]);
});

test('a lazy piece whose buffer has the wrong size is refused with its address', (t) => {
  const { mem } = lazyMemory(2, PIECE / 2);
  t.throws(() => mem.readU8(0x10000 + PIECE), { name: 'GuestMemoryError', message: /view at 0x11000 is 2048 bytes, 4096 were promised/ });
});
