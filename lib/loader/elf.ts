/**
 * ELF64 parser for kernel images: the file header, the PT_LOAD segments and
 * the notes carried in PT_NOTE segments (the PVH entry note among them).
 * It validates only what a loader relies on (class, byte order, machine,
 * segment bounds and overlap); it does not load, relocate or read sections.
 * Spec: System V gABI "ELF-64 Object File Format" §§ 3-5, PT_NOTE layout
 * from the gABI "Note Section"; the PVH note from Xen `public/elfnote.h`.
 */
import { FormatError } from '../errors';
import { ByteReader, hex } from '../util/bytes';

export const EM_386 = 3;
export const EM_ARM = 40;
export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;
export const EM_RISCV = 243;

export const PT_LOAD = 1;
export const PT_NOTE = 4;

/** Xen's note type for the 32-bit physical PVH entry point (`public/elfnote.h`). */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
/** Xen's note type naming the guest OS, "linux" in a Linux vmlinux (`public/elfnote.h`). */
export const XEN_ELFNOTE_GUEST_OS = 6;

/**
 * Whether the ELF says it is a Linux kernel: a note owned by "Linux" (the
 * kernel's own ELFNOTE()s, e.g. LINUX_ELFNOTE_BUILD_SALT, in every vmlinux
 * since 4.18) or a Xen GUEST_OS note reading "linux" (every vmlinux built
 * with Xen or PVH support).
 */
export function isLinuxElf(notes: readonly Elf64Note[]): boolean {
  return notes.some(
    (n) => n.name === 'Linux' || (n.name === 'Xen' && n.type === XEN_ELFNOTE_GUEST_OS && new TextDecoder().decode(n.desc).replace(/\0+$/, '') === 'linux'),
  );
}

const ELF_HEADER_SIZE = 64;
const PHDR_SIZE = 56;
const ELFCLASS32 = 1;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ELFDATA2MSB = 2;

const MACHINE_NAMES: Record<number, string> = {
  [EM_386]: 'i386',
  [EM_ARM]: 'arm',
  [EM_X86_64]: 'x86_64',
  [EM_AARCH64]: 'aarch64',
  [EM_RISCV]: 'riscv',
  8: 'mips',
  20: 'powerpc',
  21: 'powerpc64',
  22: 's390',
  258: 'loongarch',
};

export function elfMachineName(machine: number): string {
  return MACHINE_NAMES[machine] ?? `machine ${machine}`;
}

export interface Elf64Segment {
  /** Index in the program header table (for error messages). */
  index: number;
  p_type: number;
  p_flags: number;
  p_offset: number;
  /** Kernel virtual addresses are above 2^53, so this one stays a bigint. */
  p_vaddr: bigint;
  p_paddr: number;
  p_filesz: number;
  p_memsz: number;
  p_align: bigint;
}

export interface Elf64Note {
  name: string;
  type: number;
  desc: Uint8Array;
  /** File offset of the note header. */
  offset: number;
}

export interface Elf64Image {
  e_type: number;
  e_machine: number;
  e_entry: bigint;
  e_phoff: number;
  e_phnum: number;
  /** PT_LOAD segments in program-header order. */
  loads: Elf64Segment[];
  notes: Elf64Note[];
  /** 32-bit PVH entry from the Xen PHYS32_ENTRY note, when present. */
  pvhEntry: number | undefined;
}

function fail(code: string, message: string, field: string, offset: number, expected?: string, actual?: string): never {
  throw new FormatError(code, message, { format: 'elf', field, offset, ...(expected !== undefined ? { expected } : {}), ...(actual !== undefined ? { actual } : {}) });
}

/**
 * Parse an ELF64 little-endian image for `machine` (x86_64 by default).
 * Throws FormatError with ERR_ELF_* codes; never a TypeError or RangeError.
 */
export function parseElf64(bytes: Uint8Array, machine: number = EM_X86_64): Elf64Image {
  const r = new ByteReader(bytes, 'elf');
  if (bytes.length < 4 || bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46) {
    fail('ERR_ELF_MAGIC', 'elf: e_ident does not start with 0x7f "ELF"; this is not an ELF file', 'e_ident', 0, '7f454c46', hexBytes(bytes.subarray(0, 4)));
  }
  const cls = r.u8(4, 'e_ident[EI_CLASS]');
  if (cls === ELFCLASS32) {
    fail('ERR_ELF_CLASS', 'elf: e_ident[EI_CLASS] is 1 (ELFCLASS32), a 32-bit ELF; an x86_64 kernel is ELFCLASS64', 'e_ident[EI_CLASS]', 4, '2', '1');
  }
  if (cls !== ELFCLASS64) fail('ERR_ELF_CLASS', `elf: e_ident[EI_CLASS] is ${cls}, expected 2 (ELFCLASS64)`, 'e_ident[EI_CLASS]', 4, '2', String(cls));
  const data = r.u8(5, 'e_ident[EI_DATA]');
  if (data === ELFDATA2MSB) {
    fail('ERR_ELF_ENDIAN', 'elf: e_ident[EI_DATA] is 2 (big-endian); only little-endian images are supported', 'e_ident[EI_DATA]', 5, '1', '2');
  }
  if (data !== ELFDATA2LSB) fail('ERR_ELF_ENDIAN', `elf: e_ident[EI_DATA] is ${data}, expected 1 (little-endian)`, 'e_ident[EI_DATA]', 5, '1', String(data));
  r.need(0, ELF_HEADER_SIZE, 'elf header');

  const e_machine = r.u16(18, 'e_machine');
  if (e_machine !== machine) {
    fail(
      'ERR_ELF_MACHINE',
      `elf: e_machine is ${e_machine} (${elfMachineName(e_machine)}), expected ${machine} (${elfMachineName(machine)})`,
      'e_machine',
      18,
      String(machine),
      String(e_machine),
    );
  }
  const e_type = r.u16(16, 'e_type');
  const e_entry = r.u64(24, 'e_entry');
  const e_phoff = r.u64n(32, 'e_phoff');
  const e_phentsize = r.u16(54, 'e_phentsize');
  const e_phnum = r.u16(56, 'e_phnum');
  if (e_phnum > 0 && e_phentsize !== PHDR_SIZE) {
    fail('ERR_ELF_PHENTSIZE', `elf: e_phentsize is ${e_phentsize}, expected ${PHDR_SIZE}`, 'e_phentsize', 54, String(PHDR_SIZE), String(e_phentsize));
  }
  r.need(e_phoff, e_phnum * PHDR_SIZE, 'program header table');

  const loads: Elf64Segment[] = [];
  const noteSegments: Elf64Segment[] = [];
  for (let i = 0; i < e_phnum; i++) {
    const seg = readSegment(r, e_phoff + i * PHDR_SIZE, i);
    if (seg.p_type === PT_LOAD) loads.push(seg);
    else if (seg.p_type === PT_NOTE) noteSegments.push(seg);
  }
  if (loads.length === 0) fail('ERR_ELF_NO_LOAD', 'elf: the image has no PT_LOAD segment', 'e_phnum', 56, '>= 1 PT_LOAD', '0');
  checkOverlap(loads, e_phoff);

  const notes = noteSegments.flatMap((s) => readNotes(r, s));
  return { e_type, e_machine, e_entry, e_phoff, e_phnum, loads, notes, pvhEntry: findPvhEntry(notes) };
}

function readSegment(r: ByteReader, at: number, index: number): Elf64Segment {
  const seg: Elf64Segment = {
    index,
    p_type: r.u32(at, `phdr[${index}].p_type`),
    p_flags: r.u32(at + 4, `phdr[${index}].p_flags`),
    p_offset: r.u64n(at + 8, `phdr[${index}].p_offset`),
    p_vaddr: r.u64(at + 16, `phdr[${index}].p_vaddr`),
    p_paddr: r.u64n(at + 24, `phdr[${index}].p_paddr`),
    p_filesz: r.u64n(at + 32, `phdr[${index}].p_filesz`),
    p_memsz: r.u64n(at + 40, `phdr[${index}].p_memsz`),
    p_align: r.u64(at + 48, `phdr[${index}].p_align`),
  };
  if (seg.p_type !== PT_LOAD && seg.p_type !== PT_NOTE) return seg;
  if (seg.p_type === PT_LOAD && seg.p_filesz > seg.p_memsz) {
    fail(
      'ERR_ELF_SEGMENT_SIZE',
      `elf: segment ${index} has p_filesz ${hex(seg.p_filesz)} larger than p_memsz ${hex(seg.p_memsz)}`,
      `phdr[${index}].p_filesz`,
      at + 32,
      `<= ${hex(seg.p_memsz)}`,
      hex(seg.p_filesz),
    );
  }
  if (seg.p_offset + seg.p_filesz > r.length) {
    fail(
      'ERR_ELF_SEGMENT_RANGE',
      `elf: segment ${index} file range [${hex(seg.p_offset)}, ${hex(seg.p_offset + seg.p_filesz)}) lies beyond the end of the ${r.length}-byte file`,
      `phdr[${index}].p_offset`,
      at + 8,
      `<= ${hex(r.length)}`,
      hex(seg.p_offset + seg.p_filesz),
    );
  }
  return seg;
}

/** Two PT_LOADs sharing physical memory would silently overwrite each other when loaded. */
function checkOverlap(loads: Elf64Segment[], phoff: number): void {
  const sorted = [...loads].filter((s) => s.p_memsz > 0).sort((a, b) => a.p_paddr - b.p_paddr);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.p_paddr < prev.p_paddr + prev.p_memsz) {
      fail(
        'ERR_ELF_SEGMENT_OVERLAP',
        `elf: segment ${cur.index} at p_paddr ${hex(cur.p_paddr)} overlaps segment ${prev.index} [${hex(prev.p_paddr)}, ${hex(prev.p_paddr + prev.p_memsz)})`,
        `phdr[${cur.index}].p_paddr`,
        phoff + cur.index * PHDR_SIZE + 24,
        `>= ${hex(prev.p_paddr + prev.p_memsz)}`,
        hex(cur.p_paddr),
      );
    }
  }
}

/** Notes are {namesz, descsz, type, name, desc}, name and desc each padded to 4 bytes. */
function readNotes(r: ByteReader, seg: Elf64Segment): Elf64Note[] {
  const notes: Elf64Note[] = [];
  const end = seg.p_offset + seg.p_filesz;
  let at = seg.p_offset;
  while (at + 12 <= end) {
    const namesz = r.u32(at, 'note.namesz');
    const descsz = r.u32(at + 4, 'note.descsz');
    const type = r.u32(at + 8, 'note.type');
    const nameAt = at + 12;
    const descAt = nameAt + pad4(namesz);
    const next = descAt + pad4(descsz);
    if (next > end) {
      fail('ERR_ELF_NOTE', `elf: note at offset ${hex(at)} (namesz ${namesz}, descsz ${descsz}) runs past its PT_NOTE segment ending at ${hex(end)}`, 'note.descsz', at + 4, `<= ${hex(end)}`, hex(next));
    }
    const rawName = r.slice(nameAt, namesz, 'note.name');
    const nul = rawName.indexOf(0);
    const name = String.fromCharCode(...(nul >= 0 ? rawName.subarray(0, nul) : rawName));
    notes.push({ name, type, desc: r.slice(descAt, descsz, 'note.desc'), offset: at });
    at = next;
  }
  return notes;
}

function findPvhEntry(notes: Elf64Note[]): number | undefined {
  const note = notes.find((n) => n.name === 'Xen' && n.type === XEN_ELFNOTE_PHYS32_ENTRY);
  if (!note) return undefined;
  // Linux emits the entry with _ASM_PTR, i.e. 8 bytes on x86_64; other kernels use 4.
  const dv = new DataView(note.desc.buffer, note.desc.byteOffset, note.desc.byteLength);
  if (note.desc.length === 4) return dv.getUint32(0, true);
  if (note.desc.length === 8) {
    const v = dv.getBigUint64(0, true);
    if (v <= 0xffffffffn) return Number(v);
    fail('ERR_ELF_PVH_NOTE', `elf: the Xen PHYS32_ENTRY note holds ${hex(v)}, which is not a 32-bit address`, 'note.desc', note.offset + 12, '<= 0xffffffff', hex(v));
  }
  return fail('ERR_ELF_PVH_NOTE', `elf: the Xen PHYS32_ENTRY note has a ${note.desc.length}-byte descriptor, expected 4 or 8`, 'note.descsz', note.offset + 4, '4 or 8', String(note.desc.length));
}

function pad4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

function hexBytes(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
