/**
 * Every fixed guest address and interrupt number of an arm64 Linux Direct VM,
 * in one place, and the small functions derived from them (RAM ranges,
 * redistributor region for N CPUs, KVM's default MPIDR). Values follow
 * OpenVMM (openvmm-facts §2); deviations are marked [ours] with the reason.
 * It does not build the device tree or touch memory.
 *
 *   0x1_0000_0000 +--------------------------------+  RAM above 4 GiB (if any)
 *   0x0_FFFF_0000 | GICv3 distributor (64 KiB)      |
 *                 | (free)                          |
 *   0x0_EFFF_0000 | GICv3 redistributors, 128 KiB   |  grows up, N CPUs
 *                 |   per CPU                       |
 *   0x0_EFFE_C000 | PL011 #0 (SPI 1, INTID 33)      |  console, ttyAMA0
 *   0x0_EFFE_B000 | PL011 #1 (SPI 2, INTID 34)      |  exec agent, ttyAMA1
 *   0x0_EFFE_A000 | PL061 GPIO (SPI 3, INTID 35)    |  power key on pin 3 [ours]
 *                 | (free)                          |
 *   0x0_C000_0000 | virtio-mmio slots, 4 KiB each   |  8 slots, SPIs 16-23 [ours]
 *                 +--------------------------------+  MMIO gap [3 GiB, 4 GiB) [ours]
 *                 | RAM (at most 2 GiB below gap)   |
 *                 |   DTB    next page after kernel |
 *                 |   kernel next 2 MiB after initrd|
 *                 |   initrd RAM + 16 MiB           |
 *   0x0_4000_0000 +--------------------------------+  RAM_START (1 GiB)
 *                 | unmapped                        |
 *   0x0_0000_0000 +--------------------------------+
 */
import { ConfigError } from '../../errors';
import { GiB, MiB, hex } from '../../util/bytes';

export const RAM_START = 1 * GiB;
/**
 * [ours] OpenVMM's arm64 layout is configurable; we fix the low MMIO gap to
 * the top GiB below 4 GiB (OpenVMM's microVM profile uses the same
 * 1 GiB "3-GiB/4-GiB split"), which covers every device address below.
 */
export const MMIO_LOW_START = 3 * GiB;
export const MMIO_LOW_SIZE = 4 * GiB - MMIO_LOW_START;
export const RAM_HIGH_START = 4 * GiB;
/** RAM that fits between RAM_START and the MMIO gap. */
export const RAM_LOW_MAX_SIZE = MMIO_LOW_START - RAM_START;

export const GIC_DIST_START = 0xffff_0000;
export const GIC_DIST_SIZE = 0x1_0000;
/** OpenVMM's Linux-host value; KVM's vGICv3 wants 64 KiB alignment. */
export const GIC_REDIST_START = 0xefff_0000;
/** RD_base + SGI_base frames, 64 KiB each, per CPU (GICv3 §12.10). */
export const GIC_REDIST_SIZE_PER_CPU = 0x2_0000;
/** CPUs whose redistributors fit before the distributor. */
export const GIC_MAX_CPUS = (GIC_DIST_START - GIC_REDIST_START) / GIC_REDIST_SIZE_PER_CPU;

export const PL011_SIZE = 0x1000;
export const PL011_0_START = 0xeffe_c000;
export const PL011_0_SPI = 1;
export const PL011_1_START = 0xeffe_b000;
export const PL011_1_SPI = 2;
/**
 * [ours] A PL061 GPIO controller for the power key (OpenVMM's arm64 guests
 * get their power button over VMBus; QEMU's virt machine wires it like
 * this): the page below the PL011s, the next SPI after theirs.
 */
export const PL061_START = 0xeffe_a000;
export const PL061_SIZE = 0x1000;
export const PL061_SPI = 3;
/** The GPIO pin of the power key: pin 3, as on QEMU's virt machine. */
export const POWER_KEY_PIN = 3;
/**
 * [ours] virtio-mmio slots (OpenVMM's arm64 guests have none: its devices sit
 * on VMBus). 4 KiB each at the bottom of the MMIO gap, 768 MiB below the
 * PL011s and GIC frames OpenVMM fixes near its top, so neither can grow into
 * the other. Eight slots: the x86 limit (IOAPIC pins 16-23), which the config
 * validator enforces for every architecture.
 */
export const VIRTIO_MMIO_START = MMIO_LOW_START;
export const VIRTIO_MMIO_SLOT_SIZE = 0x1000;
export const VIRTIO_MMIO_SLOT_COUNT = 8;
export const VIRTIO_MMIO_LAST = VIRTIO_MMIO_START + VIRTIO_MMIO_SLOT_COUNT * VIRTIO_MMIO_SLOT_SIZE - 1;
/**
 * One SPI per slot, 16-23 (INTID 48-55), edge-triggered (docs/virtio.md,
 * "Transport"). QEMU's virt machine starts its virtio-mmio SPIs at 16 too;
 * they are clear of the PL011s' SPIs 1-2 and well inside the 224 SPIs KVM's
 * vGIC has when userspace does not set KVM_DEV_ARM_VGIC_GRP_NR_IRQS.
 */
export const VIRTIO_MMIO_FIRST_SPI = 16;
export const VIRTIO_MMIO_SPIS: readonly number[] = Array.from({ length: VIRTIO_MMIO_SLOT_COUNT }, (_, i) => VIRTIO_MMIO_FIRST_SPI + i);
/** SPIs KVM's vGICv3 offers by default (VGIC_NR_IRQS_LEGACY 256 minus the 32 private interrupts). */
export const KVM_DEFAULT_SPI_COUNT = 224;
/** OpenVMM's apb_pclk; the PL011 model ignores it, but Linux's driver needs a rate to compute divisors. */
export const UART_CLOCK_HZ = 24_000_000;

/** GIC interrupt number spaces: PPIs are INTID 16-31, SPIs start at INTID 32. */
export const GIC_PPI_INTID_BASE = 16;
export const GIC_SPI_INTID_BASE = 32;
/**
 * Architected timer PPIs (Arm BSA / SBSA recommendation and KVM's defaults):
 * secure EL1 physical INTID 29, non-secure EL1 physical 30, EL1 virtual 27,
 * EL2 (hypervisor) physical 26. Listed as PPI numbers (INTID - 16).
 */
export const TIMER_PPI_SECURE_PHYS = 13;
export const TIMER_PPI_NONSECURE_PHYS = 14;
export const TIMER_PPI_VIRT = 11;
export const TIMER_PPI_HYP = 10;

/** Where the initrd goes, relative to RAM_START (OpenVMM). */
export const INITRD_OFFSET = 16 * MiB;
/** booting.rst: the Image goes text_offset bytes above a 2 MiB aligned base. */
export const KERNEL_ALIGN = 2 * MiB;
/** booting.rst: the DTB must not exceed 2 MiB. */
export const DTB_MAX_SIZE = 2 * MiB;
export const PAGE_SIZE = 4096;

export interface RamRange {
  gpa: number;
  size: number;
}

/** Guest RAM for `memoryBytes`: from 1 GiB up to the MMIO gap, the rest from 4 GiB. */
export function arm64RamRanges(memoryBytes: number): RamRange[] {
  if (!Number.isSafeInteger(memoryBytes) || memoryBytes <= 0 || memoryBytes % PAGE_SIZE !== 0) {
    throw new ConfigError([{ path: 'memory', message: `memory size ${memoryBytes} must be a positive multiple of 4096 bytes` }]);
  }
  const low = Math.min(memoryBytes, RAM_LOW_MAX_SIZE);
  const ranges: RamRange[] = [{ gpa: RAM_START, size: low }];
  if (memoryBytes > low) ranges.push({ gpa: RAM_HIGH_START, size: memoryBytes - low });
  return ranges;
}

/** The redistributor region for `cpuCount` CPUs; refuses counts that would run into the distributor. */
export function gicRedistributorRange(cpuCount: number): { start: number; size: number } {
  if (!Number.isInteger(cpuCount) || cpuCount < 1 || cpuCount > GIC_MAX_CPUS) {
    throw new ConfigError([
      {
        path: 'cpus',
        message: `cpu count ${cpuCount} must be 1 to ${GIC_MAX_CPUS}: ${GIC_MAX_CPUS} redistributors of ${hex(GIC_REDIST_SIZE_PER_CPU)} bytes fill ${hex(GIC_REDIST_START)} up to the distributor at ${hex(GIC_DIST_START)}`,
      },
    ]);
  }
  return { start: GIC_REDIST_START, size: cpuCount * GIC_REDIST_SIZE_PER_CPU };
}

/**
 * The MPIDR_EL1 KVM gives vCPU `index` when userspace does not set one
 * (arch/arm64/kvm/sys_regs.c reset_mpidr): Aff0 = index & 0xf, so that a GICv3
 * SGI target list (16 CPUs per Aff0 block) can reach every CPU; Aff1 = bits
 * 4-11; Aff2 = bits 12-19; bit 31 is RES1.
 */
export function kvmDefaultMpidr(index: number): bigint {
  const i = BigInt(index);
  return (i & 0xfn) | (((i >> 4n) & 0xffn) << 8n) | (((i >> 12n) & 0xffn) << 16n) | (1n << 31n);
}

/** MPIDR affinity fields Aff3..Aff0 (bits 39:32 and 23:0): what a DT cpu `reg` holds. */
export const MPIDR_AFFINITY_MASK = 0xff_00ff_ffffn;
