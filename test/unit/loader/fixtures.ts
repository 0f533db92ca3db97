/**
 * Synthetic kernel images for unit tests, built field by field from the specs
 * (boot.rst for the bzImage setup header, the ELF-64 gABI for vmlinux) so the
 * loaders can be tested without a real kernel.
 */

export interface BzImageSpec {
  setupSects?: number;
  version?: number;
  loadflags?: number;
  xloadflags?: number;
  payloadSize?: number;
  /** Paragraphs (16 bytes); defaults to payloadSize / 16. */
  syssize?: number;
  initSize?: number;
  prefAddress?: bigint;
  initrdAddrMax?: number;
  cmdlineSize?: number;
  kernelAlignment?: number;
}

export function makeBzImage(spec: BzImageSpec = {}): Uint8Array {
  const setupSects = spec.setupSects ?? 1;
  const realSects = setupSects === 0 ? 4 : setupSects;
  const payloadSize = spec.payloadSize ?? 4096;
  const out = new Uint8Array((realSects + 1) * 512 + payloadSize);
  const dv = new DataView(out.buffer);
  out[0x1f1] = setupSects; // setup_sects
  dv.setUint32(0x1f4, spec.syssize ?? Math.ceil(payloadSize / 16), true); // syssize
  dv.setUint16(0x1fe, 0xaa55, true); // boot_flag
  out[0x200] = 0xeb; // jump: short jmp ...
  out[0x201] = 0x6a; // ... to 0x26c, the end of a 2.15 header
  dv.setUint32(0x202, 0x53726448, true); // header "HdrS"
  dv.setUint16(0x206, spec.version ?? 0x020f, true); // version
  out[0x211] = spec.loadflags ?? 0x01; // loadflags: LOADED_HIGH
  dv.setUint32(0x22c, spec.initrdAddrMax ?? 0x7fffffff, true); // initrd_addr_max
  dv.setUint32(0x230, spec.kernelAlignment ?? 0x200000, true); // kernel_alignment
  out[0x234] = 1; // relocatable_kernel
  dv.setUint16(0x236, spec.xloadflags ?? 0x03, true); // xloadflags: KERNEL_64 | CAN_BE_LOADED_ABOVE_4G
  dv.setUint32(0x238, spec.cmdlineSize ?? 2047, true); // cmdline_size
  dv.setBigUint64(0x258, spec.prefAddress ?? 0x1000000n, true); // pref_address
  dv.setUint32(0x260, spec.initSize ?? 0x800000, true); // init_size
  // A recognisable payload: byte i = i & 0xff.
  const payload = out.subarray((realSects + 1) * 512);
  for (let i = 0; i < payload.length; i++) payload[i] = i & 0xff;
  return out;
}

export interface ElfSegmentSpec {
  paddr: number;
  vaddr?: bigint;
  data: Uint8Array;
  memsz?: number;
  flags?: number;
}

export interface ElfSpec {
  segments: ElfSegmentSpec[];
  entry?: bigint;
  machine?: number;
  /** Notes in one PT_NOTE segment. */
  notes?: { name: string; type: number; desc: Uint8Array }[];
}

export const PHDR_OFFSET = 64;

/** ELF64 LE: header, program headers (PT_LOADs then an optional PT_NOTE), then segment data. */
export function makeElf(spec: ElfSpec): Uint8Array {
  const noteBlob = spec.notes ? encodeNotes(spec.notes) : undefined;
  const phnum = spec.segments.length + (noteBlob ? 1 : 0);
  let dataAt = PHDR_OFFSET + phnum * 56;
  const placed = spec.segments.map((s) => {
    const at = dataAt;
    dataAt += s.data.length;
    return at;
  });
  const noteAt = dataAt;
  const total = dataAt + (noteBlob?.length ?? 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0); // magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT
  dv.setUint16(16, 2, true); // e_type ET_EXEC
  dv.setUint16(18, spec.machine ?? 62, true); // e_machine
  dv.setUint32(20, 1, true); // e_version
  dv.setBigUint64(24, spec.entry ?? BigInt(spec.segments[0]?.paddr ?? 0), true); // e_entry
  dv.setBigUint64(32, BigInt(PHDR_OFFSET), true); // e_phoff
  dv.setUint16(52, 64, true); // e_ehsize
  dv.setUint16(54, 56, true); // e_phentsize
  dv.setUint16(56, phnum, true); // e_phnum
  spec.segments.forEach((s, i) => {
    const ph = PHDR_OFFSET + i * 56;
    dv.setUint32(ph, 1, true); // PT_LOAD
    dv.setUint32(ph + 4, s.flags ?? 5, true); // p_flags R|X
    dv.setBigUint64(ph + 8, BigInt(placed[i]!), true); // p_offset
    dv.setBigUint64(ph + 16, s.vaddr ?? 0xffffffff80000000n + BigInt(s.paddr), true); // p_vaddr
    dv.setBigUint64(ph + 24, BigInt(s.paddr), true); // p_paddr
    dv.setBigUint64(ph + 32, BigInt(s.data.length), true); // p_filesz
    dv.setBigUint64(ph + 40, BigInt(s.memsz ?? s.data.length), true); // p_memsz
    dv.setBigUint64(ph + 48, 0x200000n, true); // p_align
    out.set(s.data, placed[i]!);
  });
  if (noteBlob) {
    const ph = PHDR_OFFSET + spec.segments.length * 56;
    dv.setUint32(ph, 4, true); // PT_NOTE
    dv.setBigUint64(ph + 8, BigInt(noteAt), true);
    dv.setBigUint64(ph + 32, BigInt(noteBlob.length), true);
    dv.setBigUint64(ph + 40, BigInt(noteBlob.length), true);
    out.set(noteBlob, noteAt);
  }
  return out;
}

function encodeNotes(notes: { name: string; type: number; desc: Uint8Array }[]): Uint8Array {
  const parts: number[] = [];
  for (const n of notes) {
    const name = [...n.name].map((c) => c.charCodeAt(0)).concat([0]);
    const word = (v: number) => [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff];
    parts.push(...word(name.length), ...word(n.desc.length), ...word(n.type));
    parts.push(...name, ...new Array((4 - (name.length % 4)) % 4).fill(0));
    parts.push(...n.desc, ...new Array((4 - (n.desc.length % 4)) % 4).fill(0));
  }
  return Uint8Array.from(parts);
}

export function u64le(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

export function u32le(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}

export function pattern(size: number, seed: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** A vmlinux-like image: text at 16 MiB, data with a bss tail, and a PVH note. */
export function makeVmlinux(opts: { pvh?: boolean; pvhDescBytes?: 4 | 8; linuxNote?: 'Linux' | 'xen-guest-os' } = {}): Uint8Array {
  const pvhEntry = 0x1000400;
  const list = opts.pvh === false ? [] : [{ name: 'Xen', type: 18, desc: opts.pvhDescBytes === 4 ? u32le(pvhEntry) : u64le(BigInt(pvhEntry)) }];
  // What a real vmlinux carries besides: a Linux-owned note (build salt), or Xen's GUEST_OS "linux".
  if (opts.linuxNote === 'Linux') list.unshift({ name: 'Linux', type: 0x100, desc: u32le(0) });
  if (opts.linuxNote === 'xen-guest-os') list.unshift({ name: 'Xen', type: 6, desc: new TextEncoder().encode('linux\0') });
  const notes = list.length ? list : undefined;
  return makeElf({
    entry: 0x1000000n,
    segments: [
      { paddr: 0x1000000, data: pattern(0x3000, 1) },
      { paddr: 0x1200000, data: pattern(0x1000, 2), memsz: 0x5000, flags: 6 },
    ],
    ...(notes ? { notes } : {}),
  });
}
