import test from 'ava';
import { ByteReader, ByteWriter } from '../../../lib/util/bytes';
import { FormatError } from '../../../lib/errors';

test('ByteWriter keeps every value when it grows past its initial capacity', (t) => {
  const w = new ByteWriter(4);
  for (let i = 0; i < 100; i++) w.u8(i).u16(i * 3).u32(i * 7).u64(BigInt(i) << 40n).bytes(Uint8Array.of(i, i)).zeros(1);
  const r = new ByteReader(w.finish(), 'test');
  let at = 0;
  for (let i = 0; i < 100; i++) {
    t.is(r.u8(at, 'a'), i);
    t.is(r.u16(at + 1, 'b'), i * 3);
    t.is(r.u32(at + 3, 'c'), i * 7);
    t.is(r.u64(at + 7, 'd'), BigInt(i) << 40n);
    t.is(r.u8(at + 15, 'e'), i);
    t.is(r.u8(at + 17, 'z'), 0);
    at += 18;
  }
  t.is(w.length, 1800);
});

test('ByteReader names the field and offset of a truncated read', (t) => {
  const r = new ByteReader(new Uint8Array(4), 'elf');
  const e = t.throws(() => r.u64(0, 'e_entry'), { instanceOf: FormatError });
  t.is(e?.code, 'ERR_ELF_TRUNCATED');
  t.regex(e!.message, /e_entry at offset 0x0/);
});
