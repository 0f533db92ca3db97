import test from 'ava';
import * as aml from '../../../lib/acpi/aml';
import { io, irqNoFlags, resourceTemplate } from '../../../lib/acpi/aml-resources';
import { FormatError } from '../../../lib/errors';

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);

/** An independent PkgLength decoder written from §20.2.4, to check the encoder against. */
function decodePkgLength(b: Uint8Array): { value: number; size: number } {
  const lead = b[0]!;
  const follow = lead >> 6;
  if (follow === 0) return { value: lead & 0x3f, size: 1 };
  let value = lead & 0x0f;
  for (let k = 0; k < follow; k++) value |= b[1 + k]! << (4 + 8 * k);
  return { value, size: 1 + follow };
}

test('PkgLength uses one byte up to 63 and two bytes from 64', (t) => {
  t.deepEqual(aml.encodePkgLength(0), bytes(0x00));
  t.deepEqual(aml.encodePkgLength(63), bytes(0x3f));
  // 64 = 0x040: lead byte 0b01 (one ByteData follows) | low nybble 0x0, then 0x04.
  t.deepEqual(aml.encodePkgLength(64), bytes(0x40, 0x04));
});

test('PkgLength switches to three bytes at 4096 and four bytes at 2^20', (t) => {
  t.deepEqual(aml.encodePkgLength(4095), bytes(0x4f, 0xff));
  t.deepEqual(aml.encodePkgLength(4096), bytes(0x80, 0x00, 0x01));
  t.deepEqual(aml.encodePkgLength(0xfffff), bytes(0x8f, 0xff, 0xff));
  t.deepEqual(aml.encodePkgLength(0x100000), bytes(0xc0, 0x00, 0x00, 0x01));
  t.deepEqual(aml.encodePkgLength(aml.PKG_LENGTH_MAX), bytes(0xcf, 0xff, 0xff, 0xff));
});

test('PkgLength rejects 2^28 and negative or fractional lengths with ERR_AML_VALUE', (t) => {
  for (const v of [2 ** 28, -1, 1.5, Number.NaN]) {
    const e = t.throws(() => aml.encodePkgLength(v), { instanceOf: FormatError });
    t.is(e?.code, 'ERR_AML_VALUE');
  }
});

test('pkgLengthFor counts its own bytes at every boundary', (t) => {
  // content 62 -> total 63 fits one byte; content 63 -> total 65 needs two.
  t.deepEqual(aml.pkgLengthFor(62), bytes(0x3f));
  t.deepEqual(aml.pkgLengthFor(63), bytes(0x41, 0x04));
  // content 4093 -> total 4095 still two bytes; content 4094 -> 4097 needs three.
  t.deepEqual(aml.pkgLengthFor(4093), bytes(0x4f, 0xff));
  t.deepEqual(aml.pkgLengthFor(4094), bytes(0x81, 0x00, 0x01));
  for (const content of [0, 1, 61, 62, 63, 64, 4092, 4093, 4094, 4095, 0xffffc, 0xffffd, 0xffffe, 0xfffff, 0x100000]) {
    const enc = aml.pkgLengthFor(content);
    const dec = decodePkgLength(enc);
    t.is(dec.size, enc.length, `content ${content}`);
    t.is(dec.value, content + enc.length, `content ${content}`);
  }
  t.throws(() => aml.pkgLengthFor(aml.PKG_LENGTH_MAX), { code: 'ERR_AML_VALUE' });
});

test('integers take the shortest encoding from Zero/One to QWord', (t) => {
  t.deepEqual(aml.integer(0), bytes(0x00)); // ZeroOp
  t.deepEqual(aml.integer(1), bytes(0x01)); // OneOp
  t.deepEqual(aml.integer(2), bytes(0x0a, 0x02)); // BytePrefix
  t.deepEqual(aml.integer(0xff), bytes(0x0a, 0xff));
  t.deepEqual(aml.integer(0x100), bytes(0x0b, 0x00, 0x01)); // WordPrefix
  t.deepEqual(aml.integer(0xffff), bytes(0x0b, 0xff, 0xff));
  t.deepEqual(aml.integer(0x10000), bytes(0x0c, 0x00, 0x00, 0x01, 0x00)); // DWordPrefix
  t.deepEqual(aml.integer(0xffffffff), bytes(0x0c, 0xff, 0xff, 0xff, 0xff));
  t.deepEqual(aml.integer(0x100000000), bytes(0x0e, 0, 0, 0, 0, 1, 0, 0, 0)); // QWordPrefix
  t.deepEqual(aml.integer(2n ** 64n - 1n), bytes(0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
});

test('integers outside 0..2^64-1 are rejected, not truncated', (t) => {
  for (const v of [-1, 2n ** 64n, 0.5, Number.POSITIVE_INFINITY]) {
    t.throws(() => aml.integer(v), { instanceOf: FormatError, code: 'ERR_ACPI_VALUE' });
  }
});

test('strings are NUL-terminated ascii and reject non-ascii and NUL', (t) => {
  // "COM1" -> StringPrefix 'C' 'O' 'M' '1' NUL
  t.deepEqual(aml.string('COM1'), bytes(0x0d, 0x43, 0x4f, 0x4d, 0x31, 0x00));
  t.deepEqual(aml.string(''), bytes(0x0d, 0x00));
  t.throws(() => aml.string('caf\u00e9'), { code: 'ERR_AML_VALUE' });
  t.throws(() => aml.string('a\0b'), { code: 'ERR_AML_VALUE' });
});

test('name segments are padded with underscores like ASL does', (t) => {
  t.deepEqual(aml.nameSeg('_SB'), bytes(0x5f, 0x53, 0x42, 0x5f));
  t.deepEqual(aml.nameSeg('COM1'), bytes(0x43, 0x4f, 0x4d, 0x31));
});

test('bad name segments throw ERR_AML_NAME naming the segment', (t) => {
  for (const bad of ['', 'com1', '1ABC', 'TOOLONG', 'A-B', 'AB C']) {
    const e = t.throws(() => aml.nameSeg(bad), { instanceOf: FormatError });
    t.is(e?.code, 'ERR_AML_NAME');
    t.true(e!.message.includes(JSON.stringify(bad).slice(1, -1)), e!.message);
  }
});

test('name paths encode root, parent, dual and multi prefixes', (t) => {
  t.deepEqual(aml.nameString('_S5'), bytes(0x5f, 0x53, 0x35, 0x5f));
  t.deepEqual(aml.nameString('\\'), bytes(0x5c, 0x00)); // RootChar NullName
  // \_SB.COM1: RootChar DualNamePrefix "_SB_" "COM1"
  t.deepEqual(aml.nameString('\\_SB.COM1'), bytes(0x5c, 0x2e, 0x5f, 0x53, 0x42, 0x5f, 0x43, 0x4f, 0x4d, 0x31));
  // ^^FOO: two ParentPrefixChars then "FOO_"
  t.deepEqual(aml.nameString('^^FOO'), bytes(0x5e, 0x5e, 0x46, 0x4f, 0x4f, 0x5f));
  // A.B.C: MultiNamePrefix SegCount=3 then three segments
  t.deepEqual(
    aml.nameString('A.B.C'),
    bytes(0x2f, 0x03, 0x41, 0x5f, 0x5f, 0x5f, 0x42, 0x5f, 0x5f, 0x5f, 0x43, 0x5f, 0x5f, 0x5f),
  );
});

test('bad name paths throw ERR_AML_NAME instead of asserting', (t) => {
  for (const bad of ['', '^', 'A..B', '\\_SB.', '.A', '\\^A', '^\\A', '_SB.com1']) {
    t.throws(() => aml.nameString(bad), { instanceOf: FormatError, code: 'ERR_AML_NAME' }, JSON.stringify(bad));
  }
});

test('EISAID compresses PNP0501 and PNP0B00 to the DWords iasl emits', (t) => {
  // EisaId ("PNP0501") == 0x0105D041
  t.deepEqual(aml.eisaId('PNP0501'), bytes(0x0c, 0x41, 0xd0, 0x05, 0x01));
  // EisaId ("PNP0B00") == 0x000BD041
  t.deepEqual(aml.eisaId('PNP0B00'), bytes(0x0c, 0x41, 0xd0, 0x0b, 0x00));
  for (const bad of ['PNP050', 'pnp0501', 'PNP05G1', 'ACPI0007']) {
    t.throws(() => aml.eisaId(bad), { instanceOf: FormatError, code: 'ERR_AML_EISAID' });
  }
});

test('Name (_HID, EisaId ("PNP0501")) encodes as a NameOp with a DWord', (t) => {
  t.deepEqual(
    aml.hid('PNP0501'),
    bytes(
      0x08, //                   NameOp
      0x5f, 0x48, 0x49, 0x44, // "_HID"
      0x0c, //                   DWordPrefix
      0x41, 0xd0, 0x05, 0x01, // 0x0105D041
    ),
  );
});

test('Name (_HID, "ACPI0007") keeps a string id as a string', (t) => {
  t.deepEqual(aml.hid('ACPI0007'), bytes(0x08, 0x5f, 0x48, 0x49, 0x44, 0x0d, 0x41, 0x43, 0x50, 0x49, 0x30, 0x30, 0x30, 0x37, 0x00));
});

test('Name (_S5, Package (0x02) {Zero, Zero}) encodes with a one-byte PkgLength', (t) => {
  t.deepEqual(
    aml.name('_S5', aml.pkg([0, 0])),
    bytes(
      0x08, //                   NameOp
      0x5f, 0x53, 0x35, 0x5f, // "_S5_"
      0x12, //                   PackageOp
      0x04, //                   PkgLength: NumElements + 2 elements + itself
      0x02, //                   NumElements
      0x00, 0x00, //             Zero, Zero
    ),
  );
});

test('Method (_STA, 0, NotSerialized) {Return (0x0F)} encodes flags 0', (t) => {
  t.deepEqual(
    aml.sta(),
    bytes(
      0x14, //                   MethodOp
      0x09, //                   PkgLength
      0x5f, 0x53, 0x54, 0x41, // "_STA"
      0x00, //                   MethodFlags: 0 args, NotSerialized, SyncLevel 0
      0xa4, 0x0a, 0x0f, //       Return (0x0F)
    ),
  );
});

test('Method (M1, 2, Serialized, 3) {Return (One)} packs args, serialize bit and sync level', (t) => {
  t.deepEqual(
    aml.method('M1', { args: 2, serialized: true, syncLevel: 3 }, [aml.ret(1)]),
    bytes(0x14, 0x08, 0x4d, 0x31, 0x5f, 0x5f, 0x3a /* 2 | 1<<3 | 3<<4 */, 0xa4, 0x01),
  );
  t.throws(() => aml.method('M1', { args: 8 }, []), { code: 'ERR_AML_VALUE' });
  t.throws(() => aml.method('M1', { syncLevel: 16 }, []), { code: 'ERR_AML_VALUE' });
});

test('Scope (\\_SB) {} keeps the root prefix', (t) => {
  t.deepEqual(aml.scope('\\_SB', []), bytes(0x10, 0x06, 0x5c, 0x5f, 0x53, 0x42, 0x5f));
});

test('Buffer and Package of 64 bytes of content take a two-byte PkgLength', (t) => {
  const data = new Uint8Array(62).fill(0xaa);
  // BufferSize 0x3E encodes as 0A 3E, so content = 2 + 62 = 64 -> PkgLength 66 = 0x42 -> 42 04
  const b = aml.buffer(data);
  t.deepEqual(b.subarray(0, 5), bytes(0x11, 0x42, 0x04, 0x0a, 0x3e));
  t.is(b.length, 1 + 2 + 2 + 62);
});

test('packages above 255 elements are rejected', (t) => {
  t.throws(() => aml.pkg(new Array(256).fill(0)), { code: 'ERR_AML_VALUE' });
});

/*
 * Device (COM1)
 * {
 *     Name (_HID, EisaId ("PNP0501") /* 16550A-compatible COM Serial Port *\/)
 *     Name (_CRS, ResourceTemplate ()
 *     {
 *         IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08, )
 *         IRQNoFlags () {4}
 *     })
 * }
 */
test('a COM1 device with _HID and _CRS encodes as iasl compiles it, plus the end-tag checksum', (t) => {
  const dev = aml.device('COM1', [
    aml.hid('PNP0501'),
    aml.crs(resourceTemplate([io({ min: 0x3f8, length: 8 }), irqNoFlags([4])])),
  ]);
  t.deepEqual(
    dev,
    bytes(
      0x5b, 0x82, //             DeviceOp
      0x25, //                   PkgLength 37
      0x43, 0x4f, 0x4d, 0x31, // "COM1"
      0x08, 0x5f, 0x48, 0x49, 0x44, 0x0c, 0x41, 0xd0, 0x05, 0x01, // Name (_HID, EisaId ("PNP0501"))
      0x08, 0x5f, 0x43, 0x52, 0x53, // Name (_CRS,
      0x11, 0x10, 0x0a, 0x0d, //       Buffer, PkgLength 16, BufferSize 13
      0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, // IO (Decode16, 0x3F8, 0x3F8, 1, 8)
      0x22, 0x10, 0x00, //       IRQNoFlags () {4}
      0x79, 0x0e, //             EndTag; 0x0E makes the 13 template bytes sum to 0
    ),
  );
});
