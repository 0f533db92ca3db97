/**
 * Initial x86 CPU state for Linux Direct: the boot GDT, identity-mapped page
 * tables for 0-4 GiB, the MSRs (PAT and MTRRs, identical on every vCPU) and
 * the register state for the two entry protocols (64-bit Linux, 32-bit PVH).
 * Pure values and bytes; writing them to memory or to KVM is someone else's job.
 * Spec: Linux boot.rst "64-bit Boot Protocol", Xen docs/misc/pvh.pandoc,
 * Intel SDM vol. 3A §4.5 (4-level paging) and §11.11 (MTRRs).
 */
import { MSR, ZERO_REGS, segmentFromAttributes, type X86Msr, type X86Segment, type X86VcpuInitState } from '../../hv/x86-state';
import { NodevmmError } from '../../errors';
import { FOUR_GIB, GDT_START, HIGH_RAM_START, MMIO_GAP_START, PAGE_SIZE, PDPT_START, PD_COUNT, PD_START, PML4_START } from './layout';

export const GDT_NULL = 0n;
/** 64-bit code: type 0xB, S, P, L, G. The limit is ignored in long mode. */
export const GDT_CODE64 = 0x00a09b000000ffffn;
/**
 * Flat data, 4 GiB limit (limit 0xFFFFF, G, D/B, type 3). Not OpenVMM's
 * 0x00C093000000FFFF: that one has a 256 MiB limit, harmless in long mode but
 * wrong for the PVH 32-bit entry, where the descriptor must match the flat
 * 4 GiB hidden state we load.
 */
export const GDT_DATA = 0x00cf93000000ffffn;
/** Flat 32-bit code for the PVH entry: type 0xB, S, P, D/B, G, limit 4 GiB. */
export const GDT_CODE32 = 0x00cf9b000000ffffn;

export const SELECTOR_CODE64 = 0x08;
export const SELECTOR_DATA = 0x10;
export const SELECTOR_CODE32 = 0x18;
export const GDT_ENTRIES = [GDT_NULL, GDT_CODE64, GDT_DATA, GDT_CODE32] as const;
export const GDT_LIMIT = GDT_ENTRIES.length * 8 - 1;

/** Attribute words (Hyper-V layout, see segmentFromAttributes) matching the descriptors above. */
const ATTR_CODE64 = 0xa09b;
const ATTR_DATA = 0xc093;
const ATTR_CODE32 = 0xc09b;

export function encodeGdt(): Uint8Array {
  const out = new Uint8Array(GDT_ENTRIES.length * 8);
  const dv = new DataView(out.buffer);
  GDT_ENTRIES.forEach((d, i) => dv.setBigUint64(i * 8, d, true));
  return out;
}

/** Non-leaf entries: present, writable, accessed. */
export const PTE_TABLE = 0x23n;
/** 2 MiB leaves: present, writable, accessed, dirty, page size. A and D are preset so the CPU never writes them back. */
export const PTE_LARGE = 0xe3n;
const LARGE_PAGE = 2 * 1024 * 1024;

/**
 * The identity map of 0-4 GiB as one blob for PAGE_TABLES_START: PML4, PDPT,
 * then four PDs. 4 GiB covers the kernel, zero page and cmdline wherever the
 * layout puts them (boot.rst requires those to be mapped at entry).
 */
export function buildIdentityPageTables(): Uint8Array {
  const out = new Uint8Array((2 + PD_COUNT) * PAGE_SIZE);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(PDPT_START) | PTE_TABLE, true);
  for (let i = 0; i < PD_COUNT; i++) {
    dv.setBigUint64(PDPT_START - PML4_START + i * 8, BigInt(PD_START + i * PAGE_SIZE) | PTE_TABLE, true);
  }
  const leaves = FOUR_GIB / LARGE_PAGE;
  for (let i = 0; i < leaves; i++) {
    dv.setBigUint64(PD_START - PML4_START + i * 8, BigInt(i * LARGE_PAGE) | PTE_LARGE, true);
  }
  return out;
}

export const PAT_DEFAULT = 0x0007040600070406n;
const MTRR_WB = 6n;
/** MTRRdefType: E (bit 11) and FE (bit 10) set, default type UC. */
export const MTRR_DEF_TYPE = 0xc00n;
/** Eight write-back fixed ranges per MSR: 0-512 KiB and 512-640 KiB. 0xA0000-0xFFFFF stays UC. */
export const MTRR_FIXED_WB = 0x0606060606060606n;
const MTRR_VALID = 1n << 11n;
const PCAT_MTRR_SIZE = 128 * 1024 * 1024;

export interface MtrrLayout {
  /** One past the highest RAM byte (above 4 GiB when RAM crosses the gap). */
  ramEnd: number;
  /** Start of the 32-bit MMIO gap. */
  mmioGapStart?: number;
  /**
   * The guest's MAXPHYADDR (CPUID 0x80000008 EAX[7:0]). Mask bits above it are
   * reserved, and KVM refuses the MSR; bits missing below it make Linux warn
   * "your BIOS has configured an incorrect mask".
   */
  physAddrBits: number;
}

/**
 * Variable MTRRs by OpenVMM's rule (it mimics the Hyper-V PCAT BIOS, and the
 * result is what its `mtrrs` test checks Linux accepts without warnings):
 * pair 0 = [0, 128 MiB) WB; pair 1 = base 128 MiB with the mask of
 * (gap start - 1), which Linux reports as a 4 GiB range; pair 2 from 4 GiB
 * covering RAM above the gap up to 8 TiB; pair 3 above 8 TiB. The masks alias
 * by design; the gap is still uncached through PAT UC- on every ioremap.
 */
export function variableMtrrs(layout: MtrrLayout): X86Msr[] {
  if (!Number.isInteger(layout.physAddrBits) || layout.physAddrBits < 36 || layout.physAddrBits > 52) {
    throw new NodevmmError('ERR_INVALID_ARG', `physAddrBits is ${layout.physAddrBits} and must be an integer from 36 to 52`);
  }
  const width = layout.physAddrBits;
  const gapStart = layout.mmioGapStart ?? MMIO_GAP_START;
  const pairs: [bigint, bigint][] = [[MTRR_WB, mtrrMask(width, PCAT_MTRR_SIZE - 1)]];
  if (layout.ramEnd > PCAT_MTRR_SIZE) pairs.push([BigInt(PCAT_MTRR_SIZE) | MTRR_WB, mtrrMask(width, gapStart - 1)]);
  if (layout.ramEnd > HIGH_RAM_START) {
    const eightTiB = 2 ** Math.min(width, 43);
    pairs.push([BigInt(HIGH_RAM_START) | MTRR_WB, mtrrMask(width, Math.min(eightTiB, layout.ramEnd) - 1)]);
    // Old kernels mishandle one MTRR spanning 8 TiB, so OpenVMM splits there.
    if (layout.ramEnd > 2 ** 43) pairs.push([(1n << 43n) | MTRR_WB, mtrrMask(width, layout.ramEnd - 1)]);
  }
  return pairs.flatMap(([base, mask], i) => [
    { index: MSR.IA32_MTRR_PHYSBASE0 + 2 * i, value: base },
    { index: MSR.IA32_MTRR_PHYSMASK0 + 2 * i, value: mask },
  ]);
}

/** All mask bits from 12 to width-1 set, then cleared from bit 12 up while 2^bit <= maxAddress. */
export function mtrrMask(width: number, maxAddress: number): bigint {
  let mask = MTRR_VALID;
  for (let b = 12; b < width; b++) mask |= 1n << BigInt(b);
  const max = BigInt(maxAddress);
  for (let b = 12; b < width; b++) {
    if (max < 1n << BigInt(b)) break;
    mask &= ~(1n << BigInt(b));
  }
  return mask;
}

/**
 * PAT and MTRRs for every vCPU. Linux compares MTRRs across CPUs and warns
 * when they differ; INIT/SIPI keeps MTRRs, so APs get these at creation.
 */
export function apMsrs(layout: MtrrLayout): X86Msr[] {
  return [
    { index: MSR.IA32_PAT, value: PAT_DEFAULT },
    { index: MSR.IA32_MTRR_DEF_TYPE, value: MTRR_DEF_TYPE },
    { index: MSR.IA32_MTRR_FIX64K_00000, value: MTRR_FIXED_WB },
    { index: MSR.IA32_MTRR_FIX16K_80000, value: MTRR_FIXED_WB },
    ...variableMtrrs(layout),
  ];
}

export const CR0_PE = 1n << 0n;
export const CR0_ET = 1n << 4n;
export const CR0_PG = 1n << 31n;
export const CR4_PAE = 1n << 5n;
export const EFER_SCE = 1n << 0n;
export const EFER_LME = 1n << 8n;
export const EFER_LMA = 1n << 10n;
export const EFER_NXE = 1n << 11n;

function flat(selector: number, attr: number): X86Segment {
  return segmentFromAttributes(selector, 0n, 0xffffffff, attr);
}

/**
 * BSP state for the 64-bit boot protocol: long mode with our identity map,
 * RSI = zero page, interrupts off. Linux loads its own GDT immediately, so
 * CS 0x08 / DS 0x10 (rather than boot.rst's __BOOT_CS 0x10 / __BOOT_DS 0x18)
 * only have to be valid descriptors; OpenVMM and Firecracker use the same.
 * EFER.NXE requires the guest CPUID to advertise NX.
 */
export function linux64BootState(opts: { entry: number; zeroPage: number; mtrr: MtrrLayout }): X86VcpuInitState {
  const data = flat(SELECTOR_DATA, ATTR_DATA);
  return {
    regs: { ...ZERO_REGS, rip: BigInt(opts.entry), rsi: BigInt(opts.zeroPage), rflags: 2n },
    sregs: {
      cs: flat(SELECTOR_CODE64, ATTR_CODE64),
      ds: data, es: data, fs: data, gs: data, ss: data,
      gdt: { base: BigInt(GDT_START), limit: GDT_LIMIT },
      cr0: CR0_PG | CR0_ET | CR0_PE,
      cr3: BigInt(PML4_START),
      cr4: CR4_PAE,
      efer: EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE,
    },
    msrs: apMsrs(opts.mtrr),
  };
}

/**
 * BSP state for the PVH entry (pvh.pandoc): 32-bit protected mode, paging
 * off, flat CS/DS/ES/SS, TR a 32-bit TSS at 0 with limit 0x67, EBX = the
 * start_info GPA, CR4 = 0, interrupts off.
 */
export function pvhBootState(opts: { entry: number; startInfo: number; mtrr: MtrrLayout }): X86VcpuInitState {
  const data = flat(SELECTOR_DATA, ATTR_DATA);
  return {
    regs: { ...ZERO_REGS, rip: BigInt(opts.entry), rbx: BigInt(opts.startInfo), rflags: 2n },
    sregs: {
      cs: flat(SELECTOR_CODE32, ATTR_CODE32),
      ds: data, es: data, fs: data, gs: data, ss: data,
      // Busy 32-bit TSS (type 0xB, S=0, P=1): what VM entry requires of TR in protected mode.
      tr: segmentFromAttributes(0, 0n, 0x67, 0x8b),
      gdt: { base: BigInt(GDT_START), limit: GDT_LIMIT },
      cr0: CR0_ET | CR0_PE,
      cr3: 0n,
      cr4: 0n,
      efer: 0n,
    },
    msrs: apMsrs(opts.mtrr),
  };
}
