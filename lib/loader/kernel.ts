/**
 * x86_64 kernel loading: sniff the format (ELF vmlinux or bzImage), choose the
 * entry protocol, copy the image into guest memory and report the entry point
 * and the memory the kernel needs. It does not build the zero page, page
 * tables or registers (lib/arch/x86_64) and does not decompress anything.
 * Spec: Linux boot.rst "64-bit Boot Protocol" and "Loading The Rest of The
 * Kernel"; Xen docs/misc/pvh.pandoc for the PVH entry note.
 */
import { FormatError, GuestMemoryError } from '../errors';
import type { GuestMemory } from '../memory/guest-memory';
import { hex } from '../util/bytes';
import { BZIMAGE_ENTRY_OFFSET, BZIMAGE_LOAD_START, FOUR_GIB, HIGH_MEMORY_START } from '../arch/x86_64/layout';
import { looksLikeBzImage, parseBzImage, type BzImageHeader } from './bzimage';
import { isLinuxElf, parseElf64, type Elf64Segment } from './elf';
import { formatSize } from './format-size';

export type KernelFormat = 'elf' | 'bzimage' | 'arm64-image' | 'unknown';
export type X86BootProtocol = 'linux64' | 'pvh';

export interface KernelFormatGuess {
  format: KernelFormat;
  /** For 'unknown' (and arm64): what the bytes look like and what to do about it. */
  hint?: string;
}

const COMPRESSED_MAGICS: [number[], string][] = [
  [[0x1f, 0x8b], 'gzip'],
  [[0x28, 0xb5, 0x2f, 0xfd], 'zstd'],
  [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 'xz'],
  [[0x42, 0x5a, 0x68], 'bzip2'],
  [[0x04, 0x22, 0x4d, 0x18], 'lz4'],
];

export function detectKernelFormat(bytes: Uint8Array): KernelFormatGuess {
  if (bytes.length >= 4 && bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46) return { format: 'elf' };
  // The arm64 Image magic "ARM\x64" at 0x38; checked before the bzImage magic because both may start with an EFI "MZ" stub.
  if (bytes.length >= 0x40 && bytes[0x38] === 0x41 && bytes[0x39] === 0x52 && bytes[0x3a] === 0x4d && bytes[0x3b] === 0x64) {
    return { format: 'arm64-image', hint: 'this is an arm64 Image, which boots only on an aarch64 vm' };
  }
  if (looksLikeBzImage(bytes)) return { format: 'bzimage' };
  for (const [magic, name] of COMPRESSED_MAGICS) {
    if (bytes.length >= magic.length && magic.every((b, i) => bytes[i] === b)) {
      return {
        format: 'unknown',
        hint: `this is ${name}-compressed data (an arm64 Image.gz or a compressed vmlinux); decompress it first, or use the distribution's bzImage (vmlinuz)`,
      };
    }
  }
  return { format: 'unknown', hint: 'expected an ELF vmlinux or a bzImage (boot_flag 0xaa55 at 0x1fe and "HdrS" at 0x202)' };
}

export interface X86KernelLoadOptions {
  /**
   * 'auto' chooses per image. A bzImage, and an ELF that is a Linux kernel
   * (isLinuxElf), enter at their 64-bit entry ('linux64'): OpenVMM's path, no
   * 32-bit code runs, and a Linux vmlinux supports it whether or not it also
   * carries the PVH note. Any other ELF with the Xen PHYS32_ENTRY note (a
   * unikernel, a test kernel) enters through PVH, as QEMU, Firecracker and
   * Cloud Hypervisor do: its e_entry need not be a 64-bit entry at all. An
   * ELF with neither enters at e_entry. docs/linux-direct.md.
   */
  protocol: 'auto' | X86BootProtocol;
}

/**
 * A kernel image left in its file, opened for each load: an ELF vmlinux's PT_LOAD segments
 * are read from it straight into guest RAM (one copy, and no buffer of the image's size kept
 * for reboots). Any other format is read whole and loaded as bytes.
 */
export interface KernelFile {
  open(): KernelFileHandle;
}

export interface KernelFileHandle {
  /** The file's size when it was opened. */
  readonly size: number;
  /** Fill all of `target` from the file at `position`; throws when the file ends first. */
  readInto(position: number, target: Uint8Array): void;
  close(): void;
}

/** Header bytes read to find the format and, for an ELF, its program headers. */
const KERNEL_FILE_HEAD = 64 * 1024;
/** PT_NOTE bytes read from a kernel file at most: Linux's notes are a few hundred bytes. */
const KERNEL_FILE_NOTES_MAX = 1024 * 1024;

export interface X86KernelLoadResult {
  format: 'elf' | 'bzimage';
  protocol: X86BootProtocol;
  /** Where the BSP starts: the 64-bit entry, or the PVH 32-bit entry. */
  entry: number;
  kernelStart: number;
  /** One past the last byte the kernel needs; for a bzImage max(load, pref_address) + init_size. */
  kernelEnd: number;
  /** bzImage only: the setup header bytes from 0x1F1, to seed the zero page. */
  setupHeader?: Uint8Array;
  /** bzImage only: the decoded header (cmdline_size, initrd_addr_max, ...). */
  bzImageHeader?: BzImageHeader;
  /** ELF only, when the image has the Xen PHYS32_ENTRY note. */
  pvhEntry?: number;
}

/** Load an x86_64 kernel image into `mem`; throws FormatError or GuestMemoryError with a specific code. */
export function loadX86Kernel(mem: GuestMemory, kernel: Uint8Array | KernelFile, opts: X86KernelLoadOptions): X86KernelLoadResult {
  if (!(kernel instanceof Uint8Array)) return loadX86KernelFile(mem, kernel, opts);
  const bytes = kernel;
  const guess = detectKernelFormat(bytes);
  if (guess.format === 'elf') return loadElf(mem, bytes, opts, (seg) => mem.write(seg.p_paddr, bytes.subarray(seg.p_offset, seg.p_offset + seg.p_filesz)));
  if (guess.format === 'bzimage') return loadBzImage(mem, bytes, opts);
  throw new FormatError('ERR_KERNEL_FORMAT', `kernel is not an x86_64 ELF or bzImage: ${guess.hint ?? 'unrecognised format'}`, {
    format: 'kernel',
    offset: 0,
    expected: 'elf or bzimage',
    actual: guess.format,
  });
}

function loadX86KernelFile(mem: GuestMemory, file: KernelFile, opts: X86KernelLoadOptions): X86KernelLoadResult {
  const h = file.open();
  try {
    const head = new Uint8Array(Math.min(h.size, KERNEL_FILE_HEAD));
    h.readInto(0, head);
    if (detectKernelFormat(head).format !== 'elf') {
      const bytes = new Uint8Array(h.size);
      h.readInto(0, bytes);
      return loadX86Kernel(mem, bytes, opts);
    }
    // parseElf64 checks every offset against the file's size, so it gets an array of that size
    // (zero pages the OS maps on demand) holding only what it reads: the header, the program
    // headers and the notes.
    const sparse = new Uint8Array(h.size);
    sparse.set(head);
    const dv = new DataView(head.buffer);
    if (head.length >= 64) {
      const phoff = Number(dv.getBigUint64(32, true));
      const phnum = dv.getUint16(56, true);
      const fill = (at: number, len: number) => {
        if (len > 0 && at + len <= h.size && at + len > head.length) h.readInto(at, sparse.subarray(at, at + len));
      };
      fill(phoff, phnum * 56);
      let notes = 0;
      for (let i = 0; i < phnum; i++) {
        const at = phoff + i * 56;
        if (at + 56 > h.size) break;
        const ph = new DataView(sparse.buffer, at, 56);
        if (ph.getUint32(0, true) !== 4) continue; // PT_NOTE
        const off = Number(ph.getBigUint64(8, true));
        const len = Number(ph.getBigUint64(32, true));
        if (notes + len > KERNEL_FILE_NOTES_MAX) continue; // left as zeros: parseElf64 then finds no such note
        notes += len;
        fill(off, len);
      }
    }
    return loadElf(mem, sparse, opts, (seg) => mem.writeFrom(seg.p_paddr, seg.p_filesz, (target, done) => h.readInto(seg.p_offset + done, target)));
  } finally {
    h.close();
  }
}

function loadElf(mem: GuestMemory, bytes: Uint8Array, opts: X86KernelLoadOptions, copy: (seg: Elf64Segment) => void): X86KernelLoadResult {
  const elf = parseElf64(bytes);
  let kernelStart = Number.MAX_SAFE_INTEGER;
  let kernelEnd = 0;
  for (const seg of elf.loads) {
    if (seg.p_memsz === 0) continue;
    const end = seg.p_paddr + seg.p_memsz;
    // Below 1 MiB live the GDT, zero page, cmdline and page tables; above 4 GiB is outside the boot identity map.
    if (seg.p_paddr < HIGH_MEMORY_START || end > FOUR_GIB) {
      throw new GuestMemoryError(
        `kernel elf segment ${seg.index} [${hex(seg.p_paddr)}, ${hex(end)}) must lie between 1 MiB and 4 GiB`,
        seg.p_paddr,
        seg.p_memsz,
        'ERR_KERNEL_LOAD_ADDRESS',
      );
    }
    requireRam(mem, `kernel elf segment ${seg.index}`, seg.p_paddr, seg.p_memsz);
    kernelStart = Math.min(kernelStart, seg.p_paddr);
    kernelEnd = Math.max(kernelEnd, end);
  }
  if (kernelEnd === 0) throw new FormatError('ERR_ELF_NO_LOAD', 'elf: every PT_LOAD segment is empty', { format: 'elf', field: 'p_memsz' });

  const protocol: X86BootProtocol = opts.protocol === 'auto' ? (elf.pvhEntry !== undefined && !isLinuxElf(elf.notes) ? 'pvh' : 'linux64') : opts.protocol;
  let entry: number;
  if (protocol === 'pvh') {
    if (elf.pvhEntry === undefined) {
      throw new FormatError('ERR_KERNEL_NO_PVH_NOTE', 'kernel elf has no Xen PHYS32_ENTRY note (type 18), so it cannot boot with protocol pvh; build it with CONFIG_PVH or use protocol linux64', {
        format: 'elf',
        field: 'PT_NOTE',
        expected: 'Xen note type 18',
        actual: 'absent',
      });
    }
    entry = elf.pvhEntry;
  } else {
    // vmlinux's e_entry is the physical address of startup_64 (the linker script says ENTRY(phys_startup_64)).
    entry = Number(elf.e_entry);
  }
  if (entry < kernelStart || entry >= kernelEnd) {
    throw new FormatError('ERR_ELF_ENTRY', `elf: ${protocol} entry ${hex(entry)} lies outside the loaded segments [${hex(kernelStart)}, ${hex(kernelEnd)})`, {
      format: 'elf',
      field: protocol === 'pvh' ? 'XEN_ELFNOTE_PHYS32_ENTRY' : 'e_entry',
      offset: protocol === 'pvh' ? undefined : 24,
      expected: `[${hex(kernelStart)}, ${hex(kernelEnd)})`,
      actual: hex(entry),
    });
  }

  for (const seg of elf.loads) {
    if (seg.p_memsz === 0) continue;
    copy(seg);
    // The bss (and whatever the RAM held before a reset) must read as zeros.
    if (seg.p_memsz > seg.p_filesz) mem.fill(seg.p_paddr + seg.p_filesz, seg.p_memsz - seg.p_filesz, 0);
  }
  return {
    format: 'elf',
    protocol,
    entry,
    kernelStart,
    kernelEnd,
    ...(elf.pvhEntry !== undefined ? { pvhEntry: elf.pvhEntry } : {}),
  };
}

function loadBzImage(mem: GuestMemory, bytes: Uint8Array, opts: X86KernelLoadOptions): X86KernelLoadResult {
  const bz = parseBzImage(bytes);
  if (opts.protocol === 'pvh') {
    throw new FormatError('ERR_KERNEL_NO_PVH_NOTE', 'kernel is a bzImage, which has no PVH entry; use protocol linux64 or boot the ELF vmlinux', {
      format: 'bzimage',
      expected: 'elf with Xen note type 18',
      actual: 'bzimage',
    });
  }
  const h = bz.header;
  const payloadEnd = BZIMAGE_LOAD_START + bz.payload.length;
  // The decompressor runs in place and writes its output at max(load, pref_address), init_size bytes long.
  const pref = h.pref_address > BigInt(FOUR_GIB) ? FOUR_GIB : Number(h.pref_address);
  const kernelEnd = Math.max(payloadEnd, Math.max(BZIMAGE_LOAD_START, pref) + h.init_size);
  requireRam(mem, `bzImage (payload ${formatSize(bz.payload.length)}, init_size ${formatSize(h.init_size)})`, BZIMAGE_LOAD_START, kernelEnd - BZIMAGE_LOAD_START);
  mem.write(BZIMAGE_LOAD_START, bz.payload);
  return {
    format: 'bzimage',
    protocol: 'linux64',
    entry: BZIMAGE_LOAD_START + BZIMAGE_ENTRY_OFFSET,
    kernelStart: BZIMAGE_LOAD_START,
    kernelEnd,
    setupHeader: bz.setupHeader,
    bzImageHeader: h,
  };
}

function requireRam(mem: GuestMemory, what: string, gpa: number, size: number): void {
  if (mem.isRam(gpa, size)) return;
  const ram = mem.ranges().reduce((s, r) => s + r.size, 0);
  throw new GuestMemoryError(
    `${what} needs [${hex(gpa)}, ${hex(gpa + size)}) but that is not all guest ram (${formatSize(ram)} of ram)`,
    gpa,
    size,
    'ERR_KERNEL_OUTSIDE_RAM',
  );
}
