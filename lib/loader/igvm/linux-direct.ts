/**
 * `nodevmm igvm build`: wraps a Linux Direct boot into a NATIVE IGVM file by
 * running the x86 Linux Direct loader into scratch memory and emitting
 * PAGE_DATA for every page it wrote, a COMMAND_LINE parameter area at the
 * loader's cmdline page (the build-time cmdline is its initial data, so a
 * host may override it), a MEMORY_MAP area, REQUIRED_MEMORY for the RAM the
 * zero page's E820 describes, and the BSP state as a NATIVE VP context.
 */
import { NodevmmError } from '../../errors';
import { GuestMemory } from '../../memory/guest-memory';
import type { X86Segment } from '../../hv/x86-state';
import { CMDLINE_LONG_SIZE, CMDLINE_LONG_START, ramRangesFor } from '../../arch/x86_64/layout';
import { loadLinuxDirectX86 } from '../linux-direct';
import { IgvmPlatformType, PAGE_SIZE_4K } from '../../igvm/defs';
import { buildIgvm, type IgvmBuildHeader } from '../../igvm/build';
import { encodeNativeVpContextX64 } from '../../igvm/vp-context';

export const NATIVE_MASK = 0x1;
/** The free page after the long-cmdline window and before the ACPI tables. */
export const IGVM_MEMORY_MAP_GPA = CMDLINE_LONG_START + CMDLINE_LONG_SIZE;

export interface LinuxDirectIgvmOptions {
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline: string;
  /** Guest RAM the image is built for (the zero page's E820 bakes it in); default 256 MiB. */
  memoryBytes?: number;
}

/** Records which pages a loader touches, so only those become PAGE_DATA. */
class RecordingMemory extends GuestMemory {
  readonly pages = new Set<number>();
  private mark(gpa: number, length: number): void {
    for (let p = Math.floor(gpa / PAGE_SIZE_4K); p * PAGE_SIZE_4K < gpa + length; p++) this.pages.add(p);
  }
  override write(gpa: number, data: Uint8Array): void {
    super.write(gpa, data);
    this.mark(gpa, data.length);
  }
  override load(gpa: number, data: Uint8Array): void {
    super.load(gpa, data);
    this.mark(gpa, data.length);
  }
  override fill(gpa: number, length: number, value = 0): void {
    super.fill(gpa, length, value);
    this.mark(gpa, length);
  }
  override writeU8(gpa: number, v: number): void { super.writeU8(gpa, v); this.mark(gpa, 1); }
  override writeU16(gpa: number, v: number): void { super.writeU16(gpa, v); this.mark(gpa, 2); }
  override writeU32(gpa: number, v: number): void { super.writeU32(gpa, v); this.mark(gpa, 4); }
  override writeU64(gpa: number, v: bigint | number): void { super.writeU64(gpa, v); this.mark(gpa, 8); }
}

function attributesOf(s: X86Segment): number {
  return (s.type & 0xf) | (s.s << 4) | ((s.dpl & 3) << 5) | (s.present << 7) | (s.avl << 12) | (s.l << 13) | (s.db << 14) | (s.g << 15);
}

export interface LinuxDirectIgvmResult {
  file: Uint8Array;
  pageCount: number;
  /** State the NATIVE context cannot carry (MTRR and other MSRs): KVM's reset values apply instead. */
  droppedMsrs: number[];
}

export function buildLinuxDirectIgvm(opts: LinuxDirectIgvmOptions): LinuxDirectIgvmResult {
  const memoryBytes = opts.memoryBytes ?? 256 * 1024 * 1024;
  const ram = ramRangesFor(memoryBytes);
  const mem = new RecordingMemory();
  for (const r of ram) mem.addRegion({ gpa: r.gpa, size: r.size, views: [{ gpa: r.gpa, buffer: new ArrayBuffer(r.size) }] });
  const boot = loadLinuxDirectX86(mem, { kernel: opts.kernel, initrd: opts.initrd, cmdline: opts.cmdline, ramRanges: ram });
  const sregs = boot.bsp.sregs;
  const regs = boot.bsp.regs ?? {};
  if (!sregs?.cs || !sregs.ds) throw new NodevmmError('ERR_IGVM_BUILD', 'igvm build: the linux direct loader returned no segment state to put in a vp context');
  const cmdlinePages = new Set<number>();
  const cmdlineBytes = new TextEncoder().encode(opts.cmdline + '\0');
  const cmdlineAreaSize = Math.ceil(cmdlineBytes.length / PAGE_SIZE_4K) * PAGE_SIZE_4K;
  for (let p = boot.cmdlineGpa / PAGE_SIZE_4K; p < (boot.cmdlineGpa + cmdlineAreaSize) / PAGE_SIZE_4K; p++) cmdlinePages.add(p);

  const headers: IgvmBuildHeader[] = [
    { kind: 'SUPPORTED_PLATFORM', compatibility_mask: NATIVE_MASK, highest_vtl: 0, platform_type: IgvmPlatformType.NATIVE },
  ];
  for (const r of ram) headers.push({ kind: 'REQUIRED_MEMORY', gpa: r.gpa, compatibility_mask: NATIVE_MASK, number_of_bytes: r.size });
  headers.push(
    { kind: 'PARAMETER_AREA', number_of_bytes: cmdlineAreaSize, parameter_area_index: 0, data: cmdlineBytes },
    { kind: 'COMMAND_LINE', parameter_area_index: 0, byte_offset: 0 },
    { kind: 'PARAMETER_INSERT', gpa: boot.cmdlineGpa, compatibility_mask: NATIVE_MASK, parameter_area_index: 0 },
    { kind: 'PARAMETER_AREA', number_of_bytes: PAGE_SIZE_4K, parameter_area_index: 1 },
    { kind: 'MEMORY_MAP', parameter_area_index: 1, byte_offset: 0 },
    { kind: 'PARAMETER_INSERT', gpa: IGVM_MEMORY_MAP_GPA, compatibility_mask: NATIVE_MASK, parameter_area_index: 1 },
  );
  const pages = [...mem.pages].filter((p) => !cmdlinePages.has(p) && p !== IGVM_MEMORY_MAP_GPA / PAGE_SIZE_4K).sort((a, b) => a - b);
  for (const p of pages) {
    const data = mem.read(p * PAGE_SIZE_4K, PAGE_SIZE_4K);
    headers.push({ kind: 'PAGE_DATA', gpa: p * PAGE_SIZE_4K, compatibility_mask: NATIVE_MASK, ...(data.some((b) => b !== 0) ? { data } : {}) });
  }
  const data = sregs.ds;
  const context = encodeNativeVpContextX64({
    rax: regs.rax ?? 0n, rcx: regs.rcx ?? 0n, rdx: regs.rdx ?? 0n, rbx: regs.rbx ?? 0n, rsp: regs.rsp ?? 0n, rbp: regs.rbp ?? 0n,
    rsi: regs.rsi ?? 0n, rdi: regs.rdi ?? 0n, r8: regs.r8 ?? 0n, r9: regs.r9 ?? 0n, r10: regs.r10 ?? 0n, r11: regs.r11 ?? 0n,
    r12: regs.r12 ?? 0n, r13: regs.r13 ?? 0n, r14: regs.r14 ?? 0n, r15: regs.r15 ?? 0n, rip: regs.rip ?? 0n, rflags: regs.rflags ?? 2n,
    idtr_base: sregs.idt?.base ?? 0n, idtr_limit: sregs.idt?.limit ?? 0, gdtr_base: sregs.gdt?.base ?? 0n, gdtr_limit: sregs.gdt?.limit ?? 0,
    code_selector: sregs.cs.selector, code_attributes: attributesOf(sregs.cs), code_base: Number(sregs.cs.base), code_limit: sregs.cs.limit,
    data_selector: data.selector, data_attributes: attributesOf(data), data_base: Number(data.base), data_limit: data.limit,
    gs_base: sregs.gs?.base ?? 0n, cr0: sregs.cr0 ?? 0n, cr3: sregs.cr3 ?? 0n, cr4: sregs.cr4 ?? 0n, efer: sregs.efer ?? 0n,
  }, PAGE_SIZE_4K);
  headers.push({ kind: 'VP_CONTEXT', compatibility_mask: NATIVE_MASK, vp_index: 0, data: context });
  return { file: buildIgvm({ version: 2, arch: 'x64', headers }), pageCount: pages.length, droppedMsrs: (boot.bsp.msrs ?? []).map((m) => m.index) };
}
