import test from 'ava';
import { encodeGas, encodeSdt, GAS_SIZE, ioGas, SDT_HEADER_SIZE, checksum8, AccessSize } from '../../../lib/acpi/sdt';
import { FormatError } from '../../../lib/errors';

const sum = (b: Uint8Array): number => b.reduce((s, x) => (s + x) & 0xff, 0);
const ascii = (b: Uint8Array, at: number, n: number): string => String.fromCharCode(...b.subarray(at, at + n));

test('the SDT header is 36 bytes with the spec field offsets', (t) => {
  t.is(SDT_HEADER_SIZE, 36);
  const body = Uint8Array.of(1, 2, 3);
  const tbl = encodeSdt({ signature: 'TEST', revision: 7 }, body);
  const dv = new DataView(tbl.buffer);
  t.is(tbl.length, 39);
  t.is(ascii(tbl, 0, 4), 'TEST'); //          0 Signature
  t.is(dv.getUint32(4, true), 39); //         4 Length
  t.is(tbl[8], 7); //                         8 Revision
  t.is(ascii(tbl, 10, 6), 'NODVMM'); //      10 OEMID
  t.is(ascii(tbl, 16, 8), 'NVMMTEST'); //    16 OEM Table ID
  t.is(dv.getUint32(24, true), 1); //        24 OEM Revision
  t.is(ascii(tbl, 28, 4), 'NVMM'); //        28 Creator ID
  t.is(dv.getUint32(32, true), 1); //        32 Creator Revision
  t.deepEqual(tbl.subarray(36), body);
});

test('every SDT sums to zero whatever its body', (t) => {
  for (const len of [0, 1, 17, 255, 1000]) {
    const body = Uint8Array.from({ length: len }, (_, i) => (i * 37 + len) & 0xff);
    t.is(sum(encodeSdt({ signature: 'ABCD', revision: 1 }, body)), 0, `body ${len}`);
  }
});

test('checksum8 is the byte that brings the sum to zero', (t) => {
  t.is(checksum8(Uint8Array.of(0x01)), 0xff);
  t.is(checksum8(Uint8Array.of(0x80, 0x80)), 0x00);
  t.is(checksum8(new Uint8Array(0)), 0);
});

test('bad signatures, revisions and table IDs are FormatErrors', (t) => {
  for (const sig of ['ABC', 'ABCDE', 'abcd', 'AB D']) {
    t.throws(() => encodeSdt({ signature: sig, revision: 1 }, new Uint8Array(0)), { instanceOf: FormatError, code: 'ERR_ACPI_VALUE' });
  }
  t.throws(() => encodeSdt({ signature: 'ABCD', revision: 256 }, new Uint8Array(0)), { code: 'ERR_ACPI_VALUE' });
  t.throws(() => encodeSdt({ signature: 'ABCD', revision: 1, oemTableId: 'NINECHARS' }, new Uint8Array(0)), { code: 'ERR_ACPI_VALUE' });
});

test('a GAS is 12 bytes: space, width, offset, access size, 64-bit address', (t) => {
  t.is(GAS_SIZE, 12);
  t.deepEqual(
    encodeGas(ioGas(0x433, 8, AccessSize.Byte)),
    Uint8Array.of(
      0x01, //        Address_Space_ID: system I/O
      0x08, //        Register_Bit_Width
      0x00, //        Register_Bit_Offset
      0x01, //        Access_Size: byte
      0x33, 0x04, 0, 0, 0, 0, 0, 0, // Address
    ),
  );
  t.deepEqual(encodeGas({ space_id: 0, bit_width: 64, bit_offset: 0, access_size: 4, address: 0xfed00000_00n }).subarray(4), Uint8Array.of(0, 0, 0, 0xd0, 0xfe, 0, 0, 0));
  t.throws(() => encodeGas({ space_id: 0, bit_width: 256, bit_offset: 0, access_size: 0, address: 0 }), { code: 'ERR_ACPI_VALUE' });
  t.throws(() => encodeGas({ space_id: 0, bit_width: 8, bit_offset: 0, access_size: 0, address: -1 }), { code: 'ERR_ACPI_VALUE' });
});
