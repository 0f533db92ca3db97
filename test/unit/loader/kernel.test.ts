import test from 'ava';
import { FormatError, GuestMemoryError } from '../../../lib/errors';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { detectKernelFormat, loadX86Kernel, type KernelFile } from '../../../lib/loader/kernel';
import { makeBzImage, makeElf, makeVmlinux, pattern } from './fixtures';
import { tinyPvhKernel } from '../../../lib/testing/tiny-pvh';

const MiB = 1024 * 1024;

function ram(size: number): GuestMemory {
  return GuestMemory.anonymous([{ gpa: 0, size }]);
}

test('detects ELF, bzImage and arm64 Image by their magic numbers', (t) => {
  t.is(detectKernelFormat(makeVmlinux()).format, 'elf');
  t.is(detectKernelFormat(makeBzImage()).format, 'bzimage');
  const arm = new Uint8Array(0x40);
  arm.set([0x41, 0x52, 0x4d, 0x64], 0x38);
  const g = detectKernelFormat(arm);
  t.is(g.format, 'arm64-image');
  t.regex(g.hint ?? '', /aarch64/);
});

test('a gzip file is unknown, with a hint to decompress it', (t) => {
  const g = detectKernelFormat(Uint8Array.from([0x1f, 0x8b, 8, 0, 0, 0]));
  t.is(g.format, 'unknown');
  t.regex(g.hint ?? '', /gzip-compressed .*Image\.gz.*decompress/);
});

test('loading an unknown format fails with ERR_KERNEL_FORMAT carrying the hint', (t) => {
  const err = t.throws(() => loadX86Kernel(ram(64 * MiB), Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0]), { protocol: 'auto' }), { instanceOf: FormatError });
  t.is(err.code, 'ERR_KERNEL_FORMAT');
  t.regex(err.message, /zstd/);
});

/** A KernelFile over bytes that records what the loader read. */
function fileOf(bytes: Uint8Array): { file: KernelFile; reads: Array<[number, number]>; closed: () => number } {
  const reads: Array<[number, number]> = [];
  let closed = 0;
  const file: KernelFile = {
    open: () => ({
      size: bytes.length,
      readInto: (position, target) => {
        if (position + target.length > bytes.length) throw new Error('past the end');
        target.set(bytes.subarray(position, position + target.length));
        reads.push([position, target.length]);
      },
      close: () => void closed++,
    }),
  };
  return { file, reads, closed: () => closed };
}

test('an ELF given as its file loads what its bytes load, segments read straight into guest RAM across views', (t) => {
  // 200 KiB of text puts the PVH note past the 64 KiB the loader reads first.
  const elf = makeElf({
    entry: 0x1000000n,
    segments: [
      { paddr: 0x1000000, data: pattern(200 * 1024, 1) },
      { paddr: 0x1200000, data: pattern(0x1000, 2), memsz: 0x5000, flags: 6 },
    ],
    notes: [{ name: 'Xen', type: 18, desc: new Uint8Array([0x00, 0x04, 0x00, 0x01, 0, 0, 0, 0]) }],
  });
  // Two views that split the text segment, as guest RAM's 32 MiB views can.
  const split = () => {
    const m = new GuestMemory();
    m.addRegion({ gpa: 0, size: 64 * MiB, views: [{ gpa: 0, buffer: new ArrayBuffer(0x1010000) }, { gpa: 0x1010000, buffer: new ArrayBuffer(64 * MiB - 0x1010000) }] });
    return m;
  };
  const fromBytes = split();
  const a = loadX86Kernel(fromBytes, elf, { protocol: 'pvh' });
  const fromFile = split();
  fromFile.fill(0x1201000, 0x4000, 0xaa); // stale bytes where the bss goes
  const f = fileOf(elf);
  const b = loadX86Kernel(fromFile, f.file, { protocol: 'pvh' });
  t.deepEqual(b, a);
  t.is(b.pvhEntry, 0x1000400);
  t.deepEqual(fromFile.read(0x1000000, 200 * 1024), fromBytes.read(0x1000000, 200 * 1024));
  t.deepEqual(fromFile.read(0x1200000, 0x5000), fromBytes.read(0x1200000, 0x5000));
  t.is(f.closed(), 1);
  // The header once, the note, each segment (the text in two pieces, one per view): never the whole file.
  const read = f.reads.reduce((n, [, len]) => n + len, 0);
  t.true(read < 64 * 1024 + 200 * 1024 + 0x1000 + 0x100, `read ${read} bytes of a ${elf.length}-byte file`);
});

test('a kernel file that is not an ELF is read whole and loads as its bytes do; a broken ELF file fails as the bytes do', (t) => {
  const bz = makeBzImage();
  const a = loadX86Kernel(ram(64 * MiB), bz, { protocol: 'auto' });
  const b = loadX86Kernel(ram(64 * MiB), fileOf(bz).file, { protocol: 'auto' });
  t.deepEqual(b, a);
  const elf = makeElf({ segments: [{ paddr: 0x100000, data: pattern(0x100, 0) }] });
  const cut = elf.subarray(0, elf.length - 0x80);
  const e1 = t.throws(() => loadX86Kernel(ram(64 * MiB), cut, { protocol: 'auto' }), { instanceOf: FormatError });
  const e2 = t.throws(() => loadX86Kernel(ram(64 * MiB), fileOf(cut).file, { protocol: 'auto' }), { instanceOf: FormatError });
  t.is(e2.code, e1.code);
  t.is(e2.message, e1.message);
});

test('an ELF loads each segment at p_paddr and zeroes the bss', (t) => {
  const mem = ram(64 * MiB);
  mem.fill(0x1200000, 0x5000, 0xaa); // stale bytes where the bss goes
  const r = loadX86Kernel(mem, makeVmlinux(), { protocol: 'auto' });
  t.deepEqual(mem.read(0x1000000, 0x3000), pattern(0x3000, 1));
  t.deepEqual(mem.read(0x1200000, 0x1000), pattern(0x1000, 2));
  t.true(mem.read(0x1201000, 0x4000).every((b) => b === 0));
  t.is(r.format, 'elf');
  t.is(r.kernelStart, 0x1000000);
  t.is(r.kernelEnd, 0x1205000);
});

test('auto boots a Linux vmlinux through its 64-bit e_entry even when it has a PVH note', (t) => {
  for (const linuxNote of ['Linux', 'xen-guest-os'] as const) {
    const r = loadX86Kernel(ram(64 * MiB), makeVmlinux({ linuxNote }), { protocol: 'auto' });
    t.is(r.protocol, 'linux64', linuxNote);
    t.is(r.entry, 0x1000000);
    t.is(r.pvhEntry, 0x1000400);
  }
});

test('auto boots an ELF that is not Linux but has the PVH note through PVH (as QEMU, Firecracker, Cloud Hypervisor do)', (t) => {
  const r = loadX86Kernel(ram(64 * MiB), makeVmlinux(), { protocol: 'auto' });
  t.is(r.protocol, 'pvh');
  t.is(r.entry, 0x1000400);
  // The tiny PVH guest the kvm tier boots: a real non-Linux PVH kernel, whose e_entry is 32-bit code.
  const tiny = loadX86Kernel(ram(64 * MiB), tinyPvhKernel('X\n'), { protocol: 'auto' });
  t.is(tiny.protocol, 'pvh');
  t.is(tiny.entry, tiny.pvhEntry!);
});

test('auto boots an ELF without the PVH note at e_entry, Linux or not', (t) => {
  for (const linuxNote of [undefined, 'Linux'] as const) {
    const r = loadX86Kernel(ram(64 * MiB), makeVmlinux({ pvh: false, ...(linuxNote ? { linuxNote } : {}) }), { protocol: 'auto' });
    t.is(r.protocol, 'linux64');
    t.is(r.entry, 0x1000000);
  }
});

test('an explicit protocol linux64 enters a non-Linux PVH ELF at e_entry', (t) => {
  t.is(loadX86Kernel(ram(64 * MiB), makeVmlinux(), { protocol: 'linux64' }).protocol, 'linux64');
});

test('protocol pvh enters at the note entry', (t) => {
  const r = loadX86Kernel(ram(64 * MiB), makeVmlinux(), { protocol: 'pvh' });
  t.is(r.protocol, 'pvh');
  t.is(r.entry, 0x1000400);
});

test('protocol pvh without the note is a clear error', (t) => {
  const err = t.throws(() => loadX86Kernel(ram(64 * MiB), makeVmlinux({ pvh: false }), { protocol: 'pvh' }), { instanceOf: FormatError });
  t.is(err.code, 'ERR_KERNEL_NO_PVH_NOTE');
  t.regex(err.message, /CONFIG_PVH/);
});

test('protocol pvh with a bzImage is refused', (t) => {
  t.is(t.throws(() => loadX86Kernel(ram(64 * MiB), makeBzImage(), { protocol: 'pvh' }), { instanceOf: FormatError }).code, 'ERR_KERNEL_NO_PVH_NOTE');
});

test('an ELF segment beyond guest RAM names the segment and the RAM size', (t) => {
  const err = t.throws(() => loadX86Kernel(ram(16 * MiB), makeVmlinux(), { protocol: 'auto' }), { instanceOf: GuestMemoryError });
  t.is(err.code, 'ERR_KERNEL_OUTSIDE_RAM');
  t.regex(err.message, /segment 0 .*16 MiB of ram/);
});

test('an ELF segment below 1 MiB would overwrite the boot structures and is refused', (t) => {
  const elf = makeElf({ segments: [{ paddr: 0x2000, data: pattern(0x100, 0) }] });
  t.is(t.throws(() => loadX86Kernel(ram(16 * MiB), elf, { protocol: 'auto' }), { instanceOf: GuestMemoryError }).code, 'ERR_KERNEL_LOAD_ADDRESS');
});

test('an e_entry outside every segment is refused', (t) => {
  const elf = makeElf({ entry: 0xffffffff81000000n, segments: [{ paddr: 0x100000, data: pattern(0x100, 0) }] });
  t.is(t.throws(() => loadX86Kernel(ram(16 * MiB), elf, { protocol: 'auto' }), { instanceOf: FormatError }).code, 'ERR_ELF_ENTRY');
});

test('a bzImage payload goes to 1 MiB and the entry is 0x100200', (t) => {
  const mem = ram(64 * MiB);
  const bytes = makeBzImage({ payloadSize: 0x3000 });
  const r = loadX86Kernel(mem, bytes, { protocol: 'auto' });
  t.is(r.format, 'bzimage');
  t.is(r.protocol, 'linux64');
  t.is(r.entry, 0x100200);
  t.deepEqual(mem.read(0x100000, 0x3000), bytes.subarray(1024));
  t.deepEqual(r.setupHeader, bytes.subarray(0x1f1, 0x26c));
});

test('a bzImage needs memory up to max(1 MiB, pref_address) + init_size', (t) => {
  t.is(loadX86Kernel(ram(64 * MiB), makeBzImage({ prefAddress: 0x1000000n, initSize: 0x2000000 }), { protocol: 'auto' }).kernelEnd, 0x3000000);
  t.is(loadX86Kernel(ram(64 * MiB), makeBzImage({ prefAddress: 0n, initSize: 0x800000 }), { protocol: 'auto' }).kernelEnd, 0x900000);
});

test('a bzImage whose init_size does not fit in RAM is refused before anything is written', (t) => {
  const mem = ram(32 * MiB);
  const err = t.throws(() => loadX86Kernel(mem, makeBzImage({ prefAddress: 0x1000000n, initSize: 0x1800000 }), { protocol: 'auto' }), { instanceOf: GuestMemoryError });
  t.is(err.code, 'ERR_KERNEL_OUTSIDE_RAM');
  t.regex(err.message, /init_size 24 MiB.*32 MiB of ram/);
  t.is(mem.readU32(0x100000), 0);
});
