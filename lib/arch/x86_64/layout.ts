/**
 * Every fixed guest-physical address of an x86_64 Linux Direct boot, in one
 * file. The low map follows OpenVMM's (GDT 0x1000, zero page 0x2000, cmdline
 * 0x3000, page tables 0x4000, ACPI 0x19000, RSDP 0xE0000, kernel 1 MiB).
 * This module only names addresses and splits RAM around the MMIO gap; it
 * writes nothing. Spec: Linux boot.rst "64-bit boot protocol", PVH ABI.
 *
 *   GPA                         contents                          E820
 *   0x0000_0000 - 0x0000_0FFF   unused (real-mode IVT area)         RAM
 *   0x0000_1000 - 0x0000_1FFF   GDT (4 descriptors, 32 bytes)       RAM
 *   0x0000_2000 - 0x0000_2FFF   zero page (boot_params, 4096 B)     RAM
 *   0x0000_3000 - 0x0000_3FFF   command line (<= 4096 B with NUL)   RAM
 *   0x0000_4000 - 0x0000_9FFF   page tables: PML4, PDPT, 4 PDs      RAM
 *   0x0000_A000 - 0x0000_AFFF   PVH hvm_start_info + modlist + memmap RAM
 *   0x0000_B000 - 0x0001_7FFF   long command line (kernels whose
 *                               cmdline_size is > 4095)             RAM
 *   0x0001_8000 - 0x0001_8FFF   left free (OpenVMM's nominal RSDP page for its ACPI builder)  RAM
 *   0x0001_9000 - (caller)      ACPI tables, built in lib/acpi       ACPI
 *   (ACPI end)  - 0x0009_FFFF   free low RAM (SMP trampoline)        RAM
 *   0x000A_0000 - 0x000F_FFFF   legacy VGA / ROM hole; RSDP 0xE0000  reserved
 *   0x0010_0000 - gap start     kernel (bzImage payload at 1 MiB,
 *                               vmlinux at its p_paddr), initrd      RAM
 *   0xF800_0000 - 0xFFFF_FFFF   MMIO gap: virtio-mmio slots from
 *                               0xFEB0_0000, IOAPIC 0xFEC0_0000,
 *                               LAPIC 0xFEE0_0000, device windows    (absent)
 *   0x1_0000_0000 - ...         RAM above 4 GiB when memory > gap    RAM
 *
 * The I/O ports and ISA IRQs of the PC devices (COM1-COM4, ACPI PM block,
 * CMOS RTC, POST port, keyboard controller) and the interrupt routing the
 * ACPI tables describe are named here too, so the machine recipe, the ACPI
 * builder's caller and the IGVM host device tree read the same values.
 */
import { ConfigError } from '../../errors';
import { GiB, KiB, MiB, hex } from '../../util/bytes';

export const PAGE_SIZE = 4 * KiB;

export const GDT_START = 0x1000;
export const ZERO_PAGE_START = 0x2000;
export const ZERO_PAGE_SIZE = PAGE_SIZE;
export const CMDLINE_START = 0x3000;
/** One page, NUL included: holds every x86 kernel whose cmdline_size is <= 4095. */
export const CMDLINE_SIZE = PAGE_SIZE;

export const PML4_START = 0x4000;
export const PDPT_START = PML4_START + PAGE_SIZE;
export const PD_START = PDPT_START + PAGE_SIZE;
/** Four page directories of 512 × 2 MiB map exactly 0-4 GiB. */
export const PD_COUNT = 4;
export const PAGE_TABLES_START = PML4_START;
export const PAGE_TABLES_SIZE = (2 + PD_COUNT) * PAGE_SIZE;

export const PVH_START_INFO_START = PAGE_TABLES_START + PAGE_TABLES_SIZE;
export const PVH_START_INFO_SIZE = PAGE_SIZE;

/**
 * A longer command line goes here, so that 0x3000 stays the common case and
 * nothing else moves; 52 KiB is far above any x86 COMMAND_LINE_SIZE so far.
 */
export const CMDLINE_LONG_START = PVH_START_INFO_START + PVH_START_INFO_SIZE;
export const CMDLINE_LONG_SIZE = 0x18000 - CMDLINE_LONG_START;

export const ACPI_TABLES_START = 0x19000;
/**
 * VGA memory and option ROMs on a PC; reserved in E820 because the fixed-range
 * MTRRs make it uncached. ACPI tables must end below it.
 */
export const LEGACY_HOLE_START = 0xa0000;
export const LEGACY_HOLE_SIZE = 0x100000 - LEGACY_HOLE_START;
/** Linux scans 0xE0000-0xFFFFF for "RSD PTR " and also gets this address in acpi_rsdp_addr. */
export const RSDP_START = 0xe0000;

export const HIGH_MEMORY_START = 1 * MiB;
/** boot.rst: the protected-mode kernel of a bzImage is loaded at 0x100000. */
export const BZIMAGE_LOAD_START = HIGH_MEMORY_START;
/** The 64-bit entry of a bzImage is 0x200 bytes into the protected-mode payload. */
export const BZIMAGE_ENTRY_OFFSET = 0x200;

export const FOUR_GIB = 4 * GiB;
/**
 * The 32-bit MMIO gap is the top 128 MiB below 4 GiB, as in OpenVMM. It holds
 * IOAPIC/LAPIC and 4 KiB virtio-mmio slots with room to spare while keeping
 * 3.875 GiB of RAM below 4 GiB; PCIe ECAM (256 MiB) would go above RAM.
 */
export const MMIO_GAP_START = 0xf800_0000;
export const MMIO_GAP_SIZE = FOUR_GIB - MMIO_GAP_START;
export const IOAPIC_START = 0xfec0_0000;
/** The IOAPIC's register window: one page, as QEMU and KVM map it. */
export const IOAPIC_SIZE = 0x1000;
/**
 * virtio-mmio slots: 4 KiB each, from 0xFEB0_0000 up to just below the
 * IOAPIC (256 slots at most), inside the MMIO gap.
 */
export const VIRTIO_MMIO_START = 0xfeb0_0000;
export const VIRTIO_MMIO_SLOT_SIZE = 0x1000;
export const VIRTIO_MMIO_MAX_SLOTS = (IOAPIC_START - VIRTIO_MMIO_START) / VIRTIO_MMIO_SLOT_SIZE;
/**
 * IOAPIC pins 16-23 are no ISA line, so no legacy device or PIC shares them:
 * one per virtio slot, level-triggered, active high.
 */
export const VIRTIO_MMIO_GSIS: readonly number[] = [16, 17, 18, 19, 20, 21, 22, 23];
export const LAPIC_START = 0xfee0_0000;
/**
 * KVM on Intel needs three pages for the real-mode TSS (KVM_SET_TSS_ADDR) and
 * one for the EPT identity map (KVM_SET_IDENTITY_MAP_ADDR) inside the 4 GiB
 * space but outside RAM and devices: the BIOS area just below 4 GiB, as QEMU.
 */
export const KVM_TSS_START = 0xfffb_d000;
export const KVM_IDENTITY_MAP_START = 0xfffb_c000;
export const HIGH_RAM_START = FOUR_GIB;

/** ISA COM ports: base port (8 registers) and IRQ (PC/AT convention, as OpenVMM). */
export const COM_RESOURCES = {
  com1: { port: 0x3f8, irq: 4 },
  com2: { port: 0x2f8, irq: 3 },
  com3: { port: 0x3e8, irq: 4 },
  com4: { port: 0x2e8, irq: 3 },
} as const satisfies Record<string, { port: number; irq: number }>;
/** The ACPI PM register block (PM1a event/control, PM timer, GPE0, reset) and its SCI, as OpenVMM. */
export const PM_BASE = 0x400;
export const SCI_IRQ = 9;
export const CMOS_RTC = { port: 0x70, irq: 8 } as const;
/** Linux's outb_p() delays by writing the POST code port. */
export const POST_PORT = 0x80;
/** The 8042's command port; only its pulse-reset command is modelled. */
export const I8042_COMMAND_PORT = 0x64;
/** The IOAPIC takes GSIs 0-23; the PIT drives ISA IRQ0, which reaches the IOAPIC on pin 2 (pin 0 is the 8259's ExtINT). */
export const IOAPIC = { id: 0, address: IOAPIC_START, gsiBase: 0 } as const;
/** Input pins of the IOAPIC (an 82093AA): GSIs 0-23. */
export const IOAPIC_PINS = 24;
export const PIT_ROUTE = { irq: 0, gsi: 2 } as const;
/** The 8254 PIT's counters and control word (4 ports) and PC port 0x61 (counter 2's gate and output, speaker), when the PIT is a userspace model. */
export const PIT_PORT = 0x40;
export const SYSTEM_CONTROL_PORT_B = 0x61;
/** LINT1 is the NMI input on every PC since the MP spec. */
export const NMI_LINT = 1;

/** The fixed part of this machine that its ACPI tables describe (the options of buildX86AcpiTables besides vCPUs and devices). */
export const ACPI_PLATFORM = {
  tablesGpa: ACPI_TABLES_START,
  rsdpGpa: RSDP_START,
  pmBase: PM_BASE,
  sci: SCI_IRQ,
  ioApic: IOAPIC,
  pit: PIT_ROUTE,
  rtc: CMOS_RTC,
  nmiLint: NMI_LINT,
} as const;

/** 2 MiB: the leaf size of the boot page tables and the initrd alignment. */
export const RAM_ALIGN = 2 * MiB;
export const INITRD_ALIGN = 2 * MiB;

export interface RamRange {
  gpa: number;
  size: number;
}

/**
 * RAM for `memoryBytes` of guest memory: one range from 0 up to the MMIO gap,
 * and the remainder from 4 GiB. Memory must be a multiple of 2 MiB.
 */
export function ramRangesFor(memoryBytes: number): RamRange[] {
  if (!Number.isSafeInteger(memoryBytes) || memoryBytes < RAM_ALIGN || memoryBytes % RAM_ALIGN !== 0) {
    throw new ConfigError([{ path: 'memory', message: `memory is ${memoryBytes} bytes and must be a positive multiple of 2 MiB` }]);
  }
  const low = Math.min(memoryBytes, MMIO_GAP_START);
  const ranges: RamRange[] = [{ gpa: 0, size: low }];
  if (memoryBytes > low) ranges.push({ gpa: HIGH_RAM_START, size: memoryBytes - low });
  return ranges;
}

/** Bytes of RAM below and above 4 GiB in `ranges` (what the CMOS reports). */
export function ramAroundFourGiB(ranges: readonly RamRange[]): { belowFourGiB: number; aboveFourGiB: number } {
  let belowFourGiB = 0;
  let aboveFourGiB = 0;
  for (const r of ranges) {
    const below = Math.max(0, Math.min(r.gpa + r.size, FOUR_GIB) - r.gpa);
    belowFourGiB += below;
    aboveFourGiB += r.size - below;
  }
  return { belowFourGiB, aboveFourGiB };
}

/** One row of the report a loader returns: what it put where. */
export interface LayoutItem {
  name: string;
  gpa: number;
  size: number;
}

export function formatLayout(items: readonly LayoutItem[]): string {
  return [...items]
    .sort((a, b) => a.gpa - b.gpa)
    .map((i) => `${hex(i.gpa).padStart(12)} - ${hex(i.gpa + i.size - 1).padStart(12)}  ${i.name}`)
    .join('\n');
}
