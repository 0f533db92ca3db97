/**
 * x86_64 Linux Direct boot, composed: load the kernel, place the cmdline and
 * initrd, write the GDT, page tables and zero page (or PVH start_info), and
 * return the vCPU state, E820 map and a report of what went where.
 * It does not build ACPI tables (lib/acpi does; we only mark their range in
 * E820 and pass the RSDP address on) and does not touch KVM.
 * Spec: Linux boot.rst "64-bit Boot Protocol"; Xen docs/misc/pvh.pandoc.
 */
import { NodevmmError } from '../errors';
import type { X86Msr, X86VcpuInitState } from '../hv/x86-state';
import type { GuestMemory } from '../memory/guest-memory';
import { hex } from '../util/bytes';
import { buildBootParams } from '../arch/x86_64/boot-params';
import { apMsrs, buildIdentityPageTables, encodeGdt, linux64BootState, pvhBootState, type MtrrLayout } from '../arch/x86_64/cpu';
import { buildE820, type E820Entry } from '../arch/x86_64/e820';
import {
  ACPI_TABLES_START,
  CMDLINE_LONG_SIZE,
  CMDLINE_LONG_START,
  CMDLINE_SIZE,
  CMDLINE_START,
  GDT_START,
  LEGACY_HOLE_START,
  MMIO_GAP_SIZE,
  MMIO_GAP_START,
  PAGE_TABLES_SIZE,
  PAGE_TABLES_START,
  PVH_START_INFO_SIZE,
  PVH_START_INFO_START,
  ZERO_PAGE_SIZE,
  ZERO_PAGE_START,
  type LayoutItem,
  type RamRange,
} from '../arch/x86_64/layout';
import { buildPvhStartInfo } from '../arch/x86_64/pvh';
import { encodeCmdline } from './cmdline';
import { ELF_INITRD_ADDR_MAX, placeInitrd } from './initrd';
import { loadX86Kernel, type KernelFile, type X86BootProtocol, type X86KernelLoadResult } from './kernel';

/**
 * Without the guest's real MAXPHYADDR we use the architectural minimum: the
 * MTRR masks are then accepted by KVM on every host, at worst with a one-time
 * "incorrect mask, fixing it" note from Linux. Callers that set CPUID pass theirs.
 */
export const DEFAULT_PHYS_ADDR_BITS = 36;

export interface LinuxDirectX86Options {
  /** The image, or its file (an ELF's segments are then read straight into guest RAM). */
  kernel: Uint8Array | KernelFile;
  initrd?: Uint8Array | undefined;
  cmdline: string;
  protocol?: 'auto' | X86BootProtocol;
  /** The guest's RAM (the machine computes it once, with ramRangesFor); it must already exist in `mem`. */
  ramRanges: readonly RamRange[];
  /** Where the caller's ACPI builder put the RSDP (normally RSDP_START). */
  acpi?: { rsdpGpa: number } | undefined;
  /** The ACPI tables' range (from ACPI_TABLES_START), marked ACPI in E820. */
  acpiRange?: { gpa: number; size: number } | undefined;
  /** Guest CPUID.80000008H:EAX[7:0], for the MTRR masks. */
  physAddrBits?: number;
}

export interface LinuxDirectX86Result {
  entry: number;
  protocol: X86BootProtocol;
  kernel: X86KernelLoadResult;
  /** State for vCPU 0. */
  bsp: X86VcpuInitState;
  /** MSRs every other vCPU must get at creation (identical MTRRs, or Linux complains). */
  apMsrs: X86Msr[];
  e820: E820Entry[];
  cmdlineGpa: number;
  initrdGpa?: number;
  layoutReport: LayoutItem[];
}

export function loadLinuxDirectX86(mem: GuestMemory, opts: LinuxDirectX86Options): LinuxDirectX86Result {
  const ramRanges = opts.ramRanges;
  if (ramRanges.length === 0) throw new NodevmmError('ERR_GUEST_MEMORY_LAYOUT', 'linux direct boot needs at least one ram range');
  for (const r of ramRanges) {
    if (!mem.isRam(r.gpa, r.size)) {
      throw new NodevmmError('ERR_GUEST_MEMORY_LAYOUT', `guest memory does not back ram range [${hex(r.gpa)}, ${hex(r.gpa + r.size)}) the machine declared`);
    }
  }
  if (opts.acpiRange && (opts.acpiRange.gpa < ACPI_TABLES_START || opts.acpiRange.gpa + opts.acpiRange.size > LEGACY_HOLE_START)) {
    throw new NodevmmError(
      'ERR_E820_LAYOUT',
      `acpi range [${hex(opts.acpiRange.gpa)}, ${hex(opts.acpiRange.gpa + opts.acpiRange.size)}) must lie within [${hex(ACPI_TABLES_START)}, ${hex(LEGACY_HOLE_START)})`,
    );
  }

  // Clear the loader's low pages first so a reload after reset leaves no stale bytes.
  mem.fill(GDT_START, CMDLINE_LONG_START + CMDLINE_LONG_SIZE - GDT_START, 0);

  const kernel = loadX86Kernel(mem, opts.kernel, { protocol: opts.protocol ?? 'auto' });
  const report: LayoutItem[] = [{ name: `kernel (${kernel.format}, ${kernel.protocol})`, gpa: kernel.kernelStart, size: kernel.kernelEnd - kernel.kernelStart }];

  // bzImage states its limit (NUL excluded); a vmlinux does not, so one page is the limit.
  const capacity = Math.min(kernel.bzImageHeader ? kernel.bzImageHeader.cmdline_size + 1 : CMDLINE_SIZE, CMDLINE_LONG_SIZE);
  const cmdline = encodeCmdline(opts.cmdline, capacity);
  const cmdlineGpa = cmdline.length <= CMDLINE_SIZE ? CMDLINE_START : CMDLINE_LONG_START;
  mem.write(cmdlineGpa, cmdline);
  report.push({ name: 'cmdline', gpa: cmdlineGpa, size: cmdline.length });

  let initrd: { gpa: number; size: number } | undefined;
  if (opts.initrd && opts.initrd.length > 0) {
    initrd = placeInitrd({
      kernelEnd: kernel.kernelEnd,
      initrdSize: opts.initrd.length,
      ramRanges,
      initrdAddrMax: kernel.bzImageHeader ? kernel.bzImageHeader.initrd_addr_max : ELF_INITRD_ADDR_MAX,
    });
    mem.write(initrd.gpa, opts.initrd);
    report.push({ name: 'initrd', gpa: initrd.gpa, size: initrd.size });
  }

  const e820 = buildE820({ ramRanges, acpiRange: opts.acpiRange });
  const last = ramRanges[ramRanges.length - 1]!;
  const mtrr: MtrrLayout = { ramEnd: last.gpa + last.size, mmioGapStart: MMIO_GAP_START, physAddrBits: opts.physAddrBits ?? DEFAULT_PHYS_ADDR_BITS };
  const rsdpGpa = opts.acpi?.rsdpGpa;

  const gdt = encodeGdt();
  mem.write(GDT_START, gdt);
  report.push({ name: 'gdt', gpa: GDT_START, size: gdt.length });

  let bsp: X86VcpuInitState;
  if (kernel.protocol === 'linux64') {
    mem.write(PAGE_TABLES_START, buildIdentityPageTables());
    report.push({ name: 'page tables (identity 0-4 GiB)', gpa: PAGE_TABLES_START, size: PAGE_TABLES_SIZE });
    const zeroPage = buildBootParams({ setupHeader: kernel.setupHeader, cmdlineGpa, cmdlineLength: cmdline.length - 1, initrd, e820, rsdpGpa });
    mem.write(ZERO_PAGE_START, zeroPage);
    report.push({ name: 'zero page', gpa: ZERO_PAGE_START, size: ZERO_PAGE_SIZE });
    bsp = linux64BootState({ entry: kernel.entry, zeroPage: ZERO_PAGE_START, mtrr });
  } else {
    const startInfo = buildPvhStartInfo({ startInfoGpa: PVH_START_INFO_START, maxSize: PVH_START_INFO_SIZE, cmdlineGpa, initrd, rsdpGpa, e820 });
    mem.write(PVH_START_INFO_START, startInfo);
    report.push({ name: 'pvh start_info', gpa: PVH_START_INFO_START, size: startInfo.length });
    bsp = pvhBootState({ entry: kernel.entry, startInfo: PVH_START_INFO_START, mtrr });
  }
  if (opts.acpiRange) report.push({ name: 'acpi tables', gpa: opts.acpiRange.gpa, size: opts.acpiRange.size });
  if (rsdpGpa !== undefined) report.push({ name: 'rsdp', gpa: rsdpGpa, size: 36 });
  report.push({ name: 'mmio gap', gpa: MMIO_GAP_START, size: MMIO_GAP_SIZE });

  return {
    entry: kernel.entry,
    protocol: kernel.protocol,
    kernel,
    bsp,
    apMsrs: apMsrs(mtrr),
    e820,
    cmdlineGpa,
    ...(initrd ? { initrdGpa: initrd.gpa } : {}),
    layoutReport: report.sort((a, b) => a.gpa - b.gpa),
  };
}
