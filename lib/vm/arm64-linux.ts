/**
 * Builds and runs an arm64 Linux Direct VM on arm64 KVM: partition with RAM
 * from 1 GiB, the in-kernel GICv3, vCPUs with PSCI 0.2 (secondaries off),
 * kernel/initrd/DTB placed by loadLinuxDirectArm64 with the MPIDRs KVM
 * assigned, boot registers through KVM_SET_ONE_REG and PL011 #0 (console)
 * on MMIO with its SPI, and virtio-mmio slots (disks, rng, console; one
 * device-tree node each, from the same slot list that wires them). A PSCI
 * SYSTEM_OFF or SYSTEM_RESET from the guest ends the run as `poweroff` or
 * `reset`. It does not parse command lines or read kernels (callers pass
 * bytes; disk images are opened by path); x86 VMs are built elsewhere in lib/vm.
 */
import { loadLinuxDirectArm64, type Arm64LinuxDirectLoadResult } from '../arch/aarch64/linux-direct';
import {
  arm64RamRanges,
  gicRedistributorRange,
  GIC_DIST_START,
  PL011_0_SPI,
  PL011_0_START,
  PL011_1_SPI,
  PL011_1_START,
  PL011_SIZE,
  VIRTIO_MMIO_SLOT_SIZE,
  VIRTIO_MMIO_SPIS,
  VIRTIO_MMIO_START,
} from '../arch/aarch64/layout';
import { Pl011 } from '../devices/pl011';
import type { ByteSink, IrqLine } from '../devices/types';
import { MiB } from '../util/bytes';
import { openHypervisor } from '../hv/hypervisor';
import type { Arm64Partition, VcpuStop } from '../hv/partition';
import type { DiskConfig } from './config';
import { ioeventfdQueueNotifier } from './queue-notifier';
import type { SerialPort } from './serial-port';
import { attachVirtioDevices, virtioSlots, type AttachedVirtio, type VirtioSlotPlacement } from './virtio-devices';

/** arm64 virtio-mmio slots: the bottom of the MMIO gap, SPIs 16-23 (lib/arch/aarch64/layout.ts). */
export const ARM64_VIRTIO_PLACEMENT: VirtioSlotPlacement = { start: VIRTIO_MMIO_START, slotSize: VIRTIO_MMIO_SLOT_SIZE, irqs: VIRTIO_MMIO_SPIS };

export interface Arm64LinuxVmOptions {
  /** Flat arm64 `Image` (gunzip an `Image.gz` first). */
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline: string;
  vcpus: number;
  /** Default 512 MiB. */
  memoryBytes?: number;
  /** Where ttyAMA0's output goes. */
  console?: ByteSink;
  dispatchSpinUs?: number;
  /** Raw disk images as virtio-blk (vda, vdb, ... in order), opened when the VM is built. */
  disks?: readonly DiskConfig[];
  /** A virtio-rng device (the guest's /dev/hwrng). */
  rng?: boolean;
  /** A virtio console (the guest's hvc0): its output is delivered to this port, and what is written to the port is its input. */
  virtioConsole?: SerialPort;
}

export type Arm64StopReason = 'poweroff' | 'reset' | 'crash' | 'error';

export interface Arm64RunResult {
  reason: Arm64StopReason;
  /** The vCPU stop that ended the run. */
  stop: VcpuStop;
  /** Milliseconds from start() to the stop. */
  runMs: number;
}

/** Maps a vCPU stop to why the VM ended: PSCI SYSTEM_OFF is a power-off, SYSTEM_RESET a reset. */
export function arm64StopReason(stop: VcpuStop): Arm64StopReason {
  if (stop.kind === 'system-event') {
    if (stop.systemEvent === 'shutdown') return 'poweroff';
    if (stop.systemEvent === 'reset') return 'reset';
    if (stop.systemEvent === 'crash') return 'crash';
  }
  return 'error';
}

class SpiLine implements IrqLine {
  constructor(
    private readonly partition: Arm64Partition,
    private readonly spi: number,
  ) {}
  set(level: boolean): void {
    this.partition.setIrqLine(this.spi, level);
  }
  pulse(): void {
    this.partition.setIrqLine(this.spi, true);
    this.partition.setIrqLine(this.spi, false);
  }
}

const discard: ByteSink = { write: () => {} };

export class Arm64LinuxVm {
  readonly partition: Arm64Partition;
  readonly console: Pl011;
  readonly secondUart: Pl011;
  readonly load: Arm64LinuxDirectLoadResult;
  readonly mpidrs: readonly bigint[];
  /** The virtio devices (empty lists when none were asked for). */
  readonly virtio: AttachedVirtio;
  private startedAt = 0;
  private result: Promise<Arm64RunResult> | undefined;

  constructor(o: Arm64LinuxVmOptions) {
    const memoryBytes = o.memoryBytes ?? 512 * MiB;
    // Validates the CPU count against the redistributor space before KVM sees it.
    gicRedistributorRange(o.vcpus);
    const partition = openHypervisor().createArm64Partition({
      vcpus: o.vcpus,
      gicDistributor: GIC_DIST_START,
      gicRedistributor: gicRedistributorRange(o.vcpus).start,
      ...(o.dispatchSpinUs !== undefined ? { dispatchSpinUs: o.dispatchSpinUs } : {}),
    });
    try {
      for (const r of arm64RamRanges(memoryBytes)) partition.addRam({ gpa: r.gpa, size: r.size, name: `ram@${r.gpa.toString(16)}` });
      this.mpidrs = partition.vcpus.map((v) => partition.mpidr(v.index));
      const virtioCfg = { disks: [...(o.disks ?? [])], rng: o.rng === true, virtioConsole: o.virtioConsole !== undefined };
      // One list feeds both the device tree and the MMIO bus below.
      const slots = virtioSlots(virtioCfg, ARM64_VIRTIO_PLACEMENT);
      this.load = loadLinuxDirectArm64(partition.memory, {
        kernel: o.kernel,
        ...(o.initrd ? { initrd: o.initrd } : {}),
        cmdline: o.cmdline,
        cpuMpidrs: this.mpidrs,
        memoryBytes,
        virtioMmio: slots.map((s) => ({ base: s.base, size: s.size, spi: s.irq })),
      });
      const r = this.load.bootRegs;
      partition.setCoreRegs(0, { pc: r.pc, x0: r.x0, x1: 0n, x2: 0n, x3: 0n, pstate: r.pstate });
      this.console = new Pl011('pl011-0', new SpiLine(partition, PL011_0_SPI), o.console ?? discard);
      this.secondUart = new Pl011('pl011-1', new SpiLine(partition, PL011_1_SPI), discard);
      partition.mmio.register(PL011_0_START, PL011_SIZE, this.console);
      partition.mmio.register(PL011_1_START, PL011_SIZE, this.secondUart);
      // Last, so nothing after it can fail: on its own failure it closes what it opened.
      this.virtio = attachVirtioDevices({
        cfg: virtioCfg,
        slots,
        memory: partition.memory,
        mmio: partition.mmio,
        // Each slot owns its SPI, so no OR of several sources is needed (x86's IrqLines).
        irq: (spi) => new SpiLine(partition, spi),
        consolePort: o.virtioConsole,
        queueNotifier: (base) => ioeventfdQueueNotifier(partition.notifyOps(), base, (e) => partition.reportHostError(e)),
        onHostError: (e) => partition.reportHostError(e),
        directIo: partition,
      });
    } catch (e) {
      partition.destroy();
      throw e;
    }
    this.partition = partition;
  }

  /** Starts every vCPU; resolves when the guest powers off, resets, or a vCPU fails. */
  run(): Promise<Arm64RunResult> {
    if (this.result) return this.result;
    this.result = new Promise((resolve) => {
      this.partition.once('vcpu-stop', (stop: VcpuStop) => {
        // hvc0 output batched in this turn reaches the port before the caller sees the stop.
        this.virtio.flush();
        resolve({ reason: arm64StopReason(stop), stop, runMs: Date.now() - this.startedAt });
      });
    });
    this.startedAt = Date.now();
    this.partition.start();
    return this.result;
  }

  /** Stops the vCPU threads (secondaries KVM parked after SYSTEM_OFF included), releases the virtio devices (image files close once their I/O finished) and frees RAM. */
  destroy(): void {
    this.virtio.dispose();
    this.partition.destroy();
  }
}
