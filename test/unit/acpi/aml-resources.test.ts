import test from 'ava';
import * as res from '../../../lib/acpi/aml-resources';
import { FormatError } from '../../../lib/errors';

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);
const sum = (b: Uint8Array): number => b.reduce((s, x) => (s + x) & 0xff, 0);

test('IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08) is the 8-byte small item 0x47', (t) => {
  t.deepEqual(
    res.io({ min: 0x3f8, length: 8 }),
    bytes(
      0x47, //       tag: small item 0x08, length 7
      0x01, //       Decode16
      0xf8, 0x03, // range minimum
      0xf8, 0x03, // range maximum
      0x01, //       alignment
      0x08, //       length
    ),
  );
  t.is(res.io({ min: 0x60, max: 0x64, alignment: 4, length: 1, decode16: false })[1], 0x00);
});

test('IO rejects ports beyond 16 bits and a maximum below the minimum', (t) => {
  t.throws(() => res.io({ min: 0x10000, length: 1 }), { instanceOf: FormatError, code: 'ERR_ACPI_VALUE' });
  t.throws(() => res.io({ min: 0x3f8, length: 256 }), { code: 'ERR_ACPI_VALUE' });
  t.throws(() => res.io({ min: 0x3f8, max: 0x3f0, length: 8 }), { code: 'ERR_AML_RESOURCE' });
});

test('FixedIO (0x0060, 0x01) is the 4-byte small item 0x4B and needs a 10-bit base', (t) => {
  t.deepEqual(res.fixedIo(0x60, 1), bytes(0x4b, 0x60, 0x00, 0x01));
  t.throws(() => res.fixedIo(0x400, 1), { code: 'ERR_ACPI_VALUE' });
});

test('IRQNoFlags () {3,4} is a 16-bit mask after tag 0x22', (t) => {
  t.deepEqual(res.irqNoFlags([4]), bytes(0x22, 0x10, 0x00));
  t.deepEqual(res.irqNoFlags([3, 4]), bytes(0x22, 0x18, 0x00));
  t.deepEqual(res.irqNoFlags([8]), bytes(0x22, 0x00, 0x01));
});

test('IRQ (Level, ActiveLow, Shared) {9} carries the information byte', (t) => {
  // info: bit0 mode 0 = level, bit3 polarity 1 = low, bit4 shared
  t.deepEqual(res.irq([9], { edge: false, activeLow: true, shared: true }), bytes(0x23, 0x00, 0x02, 0x18));
  t.deepEqual(res.irq([4], { edge: true }), bytes(0x23, 0x10, 0x00, 0x01));
});

test('ISA IRQ descriptors reject IRQs above 15 and empty lists', (t) => {
  t.throws(() => res.irqNoFlags([16]), { code: 'ERR_AML_RESOURCE' });
  t.throws(() => res.irqNoFlags([]), { code: 'ERR_AML_RESOURCE' });
  t.throws(() => res.irq([-1], { edge: true }), { code: 'ERR_AML_RESOURCE' });
});

test('Memory32Fixed (ReadWrite, 0xFEB00000, 0x1000) is the 12-byte large item 0x86', (t) => {
  t.deepEqual(
    res.memory32Fixed(0xfeb00000, 0x1000),
    bytes(
      0x86, 0x09, 0x00, //       tag, length 9
      0x01, //                   ReadWrite
      0x00, 0x00, 0xb0, 0xfe, // base
      0x00, 0x10, 0x00, 0x00, // length
    ),
  );
  t.is(res.memory32Fixed(0, 0x1000, false)[3], 0);
  t.throws(() => res.memory32Fixed(0xfffff000, 0x2000), { code: 'ERR_AML_RESOURCE' });
});

test('Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {5} is the large item 0x89', (t) => {
  t.deepEqual(
    res.extendedInterrupt([5], { edge: true }),
    bytes(
      0x89, 0x06, 0x00, //       tag, length 6
      0x03, //                   consumer | edge
      0x01, //                   table length
      0x05, 0x00, 0x00, 0x00, // GSI 5
    ),
  );
  t.deepEqual(
    res.extendedInterrupt([17, 18], { edge: false, activeLow: true, shared: true }),
    bytes(0x89, 0x0a, 0x00, 0x0d, 0x02, 0x11, 0x00, 0x00, 0x00, 0x12, 0x00, 0x00, 0x00),
  );
  t.throws(() => res.extendedInterrupt([], { edge: true }), { code: 'ERR_AML_RESOURCE' });
});

test('a resource template ends with an End Tag whose checksum zeroes the template', (t) => {
  const tpl = res.resourceTemplate([res.io({ min: 0x70, length: 2 }), res.irqNoFlags([8])]);
  // Buffer: 11 PkgLength BufferSize(0A n) then the descriptors
  t.is(tpl[0], 0x11);
  const n = tpl[3]!;
  const body = tpl.subarray(tpl.length - n);
  t.is(body[body.length - 2], 0x79);
  t.is(sum(body), 0);
  t.not(body[body.length - 1], 0);
});

test('a resource template can carry a zero checksum, which means "valid"', (t) => {
  const tpl = res.resourceTemplate([res.irqNoFlags([8])], { checksum: false });
  t.deepEqual(tpl, bytes(0x11, 0x08 /* 2 + 5 + itself */, 0x0a, 0x05, 0x22, 0x00, 0x01, 0x79, 0x00));
});
