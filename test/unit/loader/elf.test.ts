import test from 'ava';
import { FormatError } from '../../../lib/errors';
import { EM_AARCH64, parseElf64 } from '../../../lib/loader/elf';
import { PHDR_OFFSET, makeElf, makeVmlinux, pattern, u64le } from './fixtures';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof FormatError) return e.code;
    throw e;
  }
  return undefined;
}

function mutate(bytes: Uint8Array, at: number, value: number): Uint8Array {
  const copy = bytes.slice();
  copy[at] = value;
  return copy;
}

test('reads PT_LOAD segments with physical and virtual addresses and sizes', (t) => {
  const elf = parseElf64(makeVmlinux());
  t.is(elf.e_machine, 62);
  t.is(elf.e_entry, 0x1000000n);
  t.is(elf.loads.length, 2);
  const [text, data] = elf.loads;
  t.is(text!.p_paddr, 0x1000000);
  t.is(text!.p_vaddr, 0xffffffff81000000n);
  t.is(text!.p_filesz, 0x3000);
  t.is(text!.p_memsz, 0x3000);
  t.is(text!.p_flags, 5);
  t.is(data!.p_paddr, 0x1200000);
  t.is(data!.p_filesz, 0x1000);
  t.is(data!.p_memsz, 0x5000);
  t.is(data!.p_offset, text!.p_offset + 0x3000);
});

test('finds the PVH entry in an 8-byte Xen PHYS32_ENTRY note (Linux uses _ASM_PTR)', (t) => {
  const elf = parseElf64(makeVmlinux({ pvhDescBytes: 8 }));
  t.is(elf.pvhEntry, 0x1000400);
  t.deepEqual(elf.notes.map((n) => [n.name, n.type]), [['Xen', 18]]);
});

test('finds the PVH entry in a 4-byte note', (t) => {
  t.is(parseElf64(makeVmlinux({ pvhDescBytes: 4 })).pvhEntry, 0x1000400);
});

test('reports no PVH entry when the note is absent or has another owner', (t) => {
  t.is(parseElf64(makeVmlinux({ pvh: false })).pvhEntry, undefined);
  const gnu = makeElf({ segments: [{ paddr: 0x100000, data: pattern(16, 0) }], notes: [{ name: 'GNU', type: 18, desc: u64le(0x100000n) }] });
  t.is(parseElf64(gnu).pvhEntry, undefined);
});

test('rejects a PVH note whose entry does not fit 32 bits or has an odd size', (t) => {
  const big = makeElf({ segments: [{ paddr: 0x100000, data: pattern(16, 0) }], notes: [{ name: 'Xen', type: 18, desc: u64le(0x1_0000_0000n) }] });
  t.is(codeOf(() => parseElf64(big)), 'ERR_ELF_PVH_NOTE');
  const odd = makeElf({ segments: [{ paddr: 0x100000, data: pattern(16, 0) }], notes: [{ name: 'Xen', type: 18, desc: new Uint8Array(2) }] });
  t.is(codeOf(() => parseElf64(odd)), 'ERR_ELF_PVH_NOTE');
});

test('mutation: a wrong magic byte is "not an ELF file"', (t) => {
  const err = t.throws(() => parseElf64(mutate(makeVmlinux(), 1, 0x46)), { instanceOf: FormatError });
  t.is(err.code, 'ERR_ELF_MAGIC');
  t.regex(err.message, /not an ELF file/);
});

test('mutation: ELFCLASS32 is named as a 32-bit ELF', (t) => {
  const err = t.throws(() => parseElf64(mutate(makeVmlinux(), 4, 1)), { instanceOf: FormatError });
  t.is(err.code, 'ERR_ELF_CLASS');
  t.regex(err.message, /32-bit/);
  t.is(err.offset, 4);
});

test('mutation: big-endian EI_DATA is refused', (t) => {
  const err = t.throws(() => parseElf64(mutate(makeVmlinux(), 5, 2)), { instanceOf: FormatError });
  t.is(err.code, 'ERR_ELF_ENDIAN');
  t.regex(err.message, /big-endian/);
});

test('mutation: an aarch64 e_machine is named in the error', (t) => {
  const err = t.throws(() => parseElf64(mutate(makeVmlinux(), 18, EM_AARCH64)), { instanceOf: FormatError });
  t.is(err.code, 'ERR_ELF_MACHINE');
  t.regex(err.message, /183 \(aarch64\), expected 62 \(x86_64\)/);
  t.is(err.field, 'e_machine');
});

test('mutation: p_filesz larger than p_memsz is refused', (t) => {
  const bytes = makeVmlinux();
  // Segment 1 has filesz 0x1000 and memsz 0x5000; make memsz 0x0800.
  const dv = new DataView(bytes.buffer);
  dv.setBigUint64(PHDR_OFFSET + 56 + 40, 0x800n, true);
  const err = t.throws(() => parseElf64(bytes), { instanceOf: FormatError });
  t.is(err.code, 'ERR_ELF_SEGMENT_SIZE');
  t.regex(err.message, /segment 1/);
});

test('mutation: a segment whose file range runs past the end of the file is refused', (t) => {
  const bytes = makeVmlinux();
  bytes[PHDR_OFFSET + 8 + 2] = 0x10; // p_offset of segment 0 += 0x100000
  t.is(codeOf(() => parseElf64(bytes)), 'ERR_ELF_SEGMENT_RANGE');
});

test('mutation: overlapping PT_LOAD physical ranges are refused', (t) => {
  const bytes = makeVmlinux();
  // Move segment 1 from 0x1200000 to 0x1002000, inside segment 0's [0x1000000, 0x1003000).
  new DataView(bytes.buffer).setBigUint64(PHDR_OFFSET + 56 + 24, 0x1002000n, true);
  const err = t.throws(() => parseElf64(bytes), { instanceOf: FormatError });
  t.is(err.code, 'ERR_ELF_SEGMENT_OVERLAP');
  t.regex(err.message, /segment 1 .* overlaps segment 0/);
});

test('segments that only touch do not overlap', (t) => {
  const bytes = makeElf({ segments: [{ paddr: 0x100000, data: pattern(0x1000, 0) }, { paddr: 0x101000, data: pattern(0x1000, 1) }] });
  t.is(parseElf64(bytes).loads.length, 2);
});

test('a program header table past the end of the file is a truncation error', (t) => {
  const bytes = makeVmlinux();
  new DataView(bytes.buffer).setUint16(56, 0xffff, true); // e_phnum: 65535 * 56 bytes
  t.is(codeOf(() => parseElf64(bytes)), 'ERR_ELF_TRUNCATED');
});

test('an image without PT_LOAD is refused', (t) => {
  const bytes = makeVmlinux();
  new DataView(bytes.buffer).setUint16(56, 0, true);
  t.is(codeOf(() => parseElf64(bytes)), 'ERR_ELF_NO_LOAD');
});

test('every truncation and every single-byte flip of the headers fails only with FormatError', (t) => {
  const good = makeVmlinux();
  for (let len = 0; len < good.length; len += 7) {
    const code = codeOf(() => parseElf64(good.subarray(0, len)));
    t.truthy(code === undefined || code.startsWith('ERR_ELF_'), `length ${len}: ${code}`);
  }
  const headerEnd = PHDR_OFFSET + 3 * 56;
  for (let at = 0; at < headerEnd; at++) {
    for (const v of [0x00, 0xff, 0x80]) {
      const code = codeOf(() => parseElf64(mutate(good, at, v)));
      t.truthy(code === undefined || code.startsWith('ERR_ELF_'), `byte ${at} = ${v}: ${code}`);
    }
  }
});
