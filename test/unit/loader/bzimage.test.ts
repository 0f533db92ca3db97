import test from 'ava';
import { FormatError } from '../../../lib/errors';
import { parseBzImage, looksLikeBzImage } from '../../../lib/loader/bzimage';
import { makeBzImage } from './fixtures';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof FormatError) return e.code;
    throw e;
  }
  return undefined;
}

test('decodes the setup header fields at their boot.rst offsets', (t) => {
  const bz = parseBzImage(makeBzImage({ initSize: 0x1234000, prefAddress: 0x1000000n, initrdAddrMax: 0x7fffffff, cmdlineSize: 2047, kernelAlignment: 0x200000 }));
  const h = bz.header;
  t.is(h.setup_sects, 1);
  t.is(h.boot_flag, 0xaa55);
  t.is(h.version, 0x020f);
  t.is(h.loadflags & 1, 1);
  t.is(h.xloadflags, 3);
  t.is(h.init_size, 0x1234000);
  t.is(h.pref_address, 0x1000000n);
  t.is(h.initrd_addr_max, 0x7fffffff);
  t.is(h.cmdline_size, 2047);
  t.is(h.kernel_alignment, 0x200000);
  t.is(h.relocatable_kernel, 1);
});

test('the payload starts at (setup_sects + 1) * 512 and is syssize * 16 bytes', (t) => {
  const bz = parseBzImage(makeBzImage({ setupSects: 3, payloadSize: 0x2000 }));
  t.is(bz.payloadOffset, 4 * 512);
  t.is(bz.payload.length, 0x2000);
  t.is(bz.payload[0x1ff], 0xff);
});

test('setup_sects 0 means 4', (t) => {
  const bz = parseBzImage(makeBzImage({ setupSects: 0 }));
  t.is(bz.header.setup_sects, 4);
  t.is(bz.payloadOffset, 5 * 512);
});

test('syssize 0 takes the rest of the file as the payload', (t) => {
  const bz = parseBzImage(makeBzImage({ syssize: 0, payloadSize: 1000 }));
  t.is(bz.payload.length, 1000);
});

test('the setup header copy runs from 0x1f1 to 0x202 + the jump byte', (t) => {
  const bytes = makeBzImage();
  const bz = parseBzImage(bytes);
  t.is(bz.setupHeader.length, 0x26c - 0x1f1);
  t.deepEqual(bz.setupHeader, bytes.subarray(0x1f1, 0x26c));
});

test('mutation: boot_flag and HdrS are both required', (t) => {
  const a = makeBzImage();
  a[0x1fe] = 0x54;
  t.is(codeOf(() => parseBzImage(a)), 'ERR_BZIMAGE_MAGIC');
  t.false(looksLikeBzImage(a));
  const b = makeBzImage();
  b[0x203] = 0;
  t.is(codeOf(() => parseBzImage(b)), 'ERR_BZIMAGE_MAGIC');
  t.false(looksLikeBzImage(b));
});

test('mutation: protocol 2.11 is too old and the message names both versions', (t) => {
  const err = t.throws(() => parseBzImage(makeBzImage({ version: 0x020b })), { instanceOf: FormatError });
  t.is(err.code, 'ERR_BZIMAGE_VERSION');
  t.regex(err.message, /2\.11 is older than 2\.12/);
});

test('protocol 2.12 exactly is accepted', (t) => {
  t.is(parseBzImage(makeBzImage({ version: 0x020c })).header.version, 0x020c);
});

test('mutation: a zImage without LOADED_HIGH is refused', (t) => {
  t.is(codeOf(() => parseBzImage(makeBzImage({ loadflags: 0x80 }))), 'ERR_BZIMAGE_LOADFLAGS');
});

test('mutation: an image without XLF_KERNEL_64 is refused as having no 64-bit entry', (t) => {
  const err = t.throws(() => parseBzImage(makeBzImage({ xloadflags: 0x02 })), { instanceOf: FormatError });
  t.is(err.code, 'ERR_BZIMAGE_NOT_64BIT');
  t.is(err.field, 'xloadflags');
});

test('a file shorter than syssize declares is truncated', (t) => {
  const bytes = makeBzImage({ payloadSize: 4096 });
  const err = t.throws(() => parseBzImage(bytes.subarray(0, bytes.length - 1)), { instanceOf: FormatError });
  t.is(err.code, 'ERR_BZIMAGE_TRUNCATED');
  t.regex(err.message, /place the payload end at/);
});

test('a file that ends inside the header is truncated', (t) => {
  t.is(codeOf(() => parseBzImage(makeBzImage().subarray(0, 0x210))), 'ERR_BZIMAGE_TRUNCATED');
  t.is(codeOf(() => parseBzImage(new Uint8Array(0))), 'ERR_BZIMAGE_TRUNCATED');
});

test('every truncation and header-byte flip fails only with FormatError', (t) => {
  const good = makeBzImage({ payloadSize: 512 });
  for (let len = 0; len <= good.length; len += 13) {
    const code = codeOf(() => parseBzImage(good.subarray(0, len)));
    t.truthy(code === undefined || code.startsWith('ERR_BZIMAGE_'), `length ${len}: ${code}`);
  }
  for (let at = 0x1f1; at < 0x26c; at++) {
    const copy = good.slice();
    copy[at] = 0xff;
    const code = codeOf(() => parseBzImage(copy));
    t.truthy(code === undefined || code.startsWith('ERR_BZIMAGE_'), `byte ${at}: ${code}`);
  }
});
