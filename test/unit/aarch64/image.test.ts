import test from 'ava';
import { checkArm64ImageBootable, parseArm64Image } from '../../../lib/arch/aarch64/image';
import { FormatError } from '../../../lib/errors';
import { MODERN_FLAGS, syntheticImage } from './synthetic-image';

function code(t: import('ava').ExecutionContext, fn: () => unknown, expected: string): FormatError | undefined {
  const e = t.throws(fn, { instanceOf: FormatError });
  t.is(e?.code, expected);
  t.is(e?.format, 'arm64-image');
  return e;
}

const bootable = (b: Uint8Array) => checkArm64ImageBootable(parseArm64Image(b));

test('a modern header decodes: text_offset, image_size and each flag', (t) => {
  const h = parseArm64Image(syntheticImage({ textOffset: 0x80000n, imageSize: 0x1234000n }));
  t.is(h.text_offset, 0x80000);
  t.is(h.image_size, 0x1234000);
  t.is(h.code1, 0x14000000);
  t.false(h.bigEndian);
  t.is(h.pageSize, 4096);
  t.true(h.physAnywhere);
  t.notThrows(() => checkArm64ImageBootable(h));
});

test('page size field 0 (unspecified) is accepted as 4K', (t) => {
  const h = parseArm64Image(syntheticImage({ flags: 1n << 3n }));
  t.is(h.pageSize, undefined);
  t.notThrows(() => checkArm64ImageBootable(h));
});

test('Image.gz is refused with a hint to gunzip it', (t) => {
  const gz = new Uint8Array([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0]);
  const e = code(t, () => parseArm64Image(gz), 'ERR_ARM64_IMAGE_GZIP');
  t.regex(e?.message ?? '', /Image\.gz; decompress it \(gunzip\) first/);
});

test('a wrong magic byte is refused', (t) => {
  const b = syntheticImage();
  b[0x3b] = 0x65;
  code(t, () => parseArm64Image(b), 'ERR_ARM64_IMAGE_MAGIC');
});

test('an input shorter than the header is refused, not a RangeError', (t) => {
  code(t, () => parseArm64Image(syntheticImage().subarray(0, 0x3c)), 'ERR_ARM64_IMAGE_TRUNCATED');
  code(t, () => parseArm64Image(new Uint8Array(0)), 'ERR_ARM64_IMAGE_TRUNCATED');
});

test('a big-endian kernel is refused', (t) => {
  code(t, () => bootable(syntheticImage({ flags: MODERN_FLAGS | 1n })), 'ERR_ARM64_IMAGE_BIG_ENDIAN');
});

test('16K and 64K page kernels are refused, naming the page size', (t) => {
  const e16 = code(t, () => bootable(syntheticImage({ flags: (2n << 1n) | (1n << 3n) })), 'ERR_ARM64_IMAGE_PAGE_SIZE');
  t.regex(e16?.message ?? '', /16K/);
  const e64 = code(t, () => bootable(syntheticImage({ flags: (3n << 1n) | (1n << 3n) })), 'ERR_ARM64_IMAGE_PAGE_SIZE');
  t.regex(e64?.message ?? '', /64K/);
});

test('a kernel without the place-anywhere flag (bit 3) is refused', (t) => {
  code(t, () => bootable(syntheticImage({ flags: 1n << 1n })), 'ERR_ARM64_IMAGE_PLACEMENT');
});

test('a text_offset of 2 MiB or more is refused', (t) => {
  code(t, () => bootable(syntheticImage({ textOffset: 0x200000n })), 'ERR_ARM64_IMAGE_TEXT_OFFSET');
  code(t, () => bootable(syntheticImage({ textOffset: 0x80010n })), 'ERR_ARM64_IMAGE_TEXT_OFFSET');
});

test('an image_size beyond 2^53 is a FormatError', (t) => {
  const e = t.throws(() => parseArm64Image(syntheticImage({ imageSize: 1n << 60n })), { instanceOf: FormatError });
  t.is(e?.field, 'image_size');
});
