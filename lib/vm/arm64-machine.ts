/**
 * The arm64 Linux Direct machine, built by one linear recipe like the x86
 * one: partition (in-kernel GICv3, vCPUs with PSCI 0.2, secondaries off) →
 * RAM from 1 GiB → kernel/initrd/DTB with the MPIDRs KVM assigned → devices
 * (PL011 #0 and #1 for com1/com2, a PL061 GPIO with the power key on pin 3,
 * virtio-mmio slots) → boot registers. The guest powers off and resets
 * through PSCI SYSTEM_OFF/SYSTEM_RESET, which KVM reports as vCPU system
 * events; the Vm maps them as it maps x86's ACPI S5 and reset register.
 * Addresses come from lib/arch/aarch64/layout.ts.
 */
import { arm64DefaultDevices } from '../arch/aarch64/fdt';
import { loadLinuxDirectArm64 } from '../arch/aarch64/linux-direct';
import { arm64RamRanges, gicRedistributorRange, GIC_DIST_START, PL011_SIZE, PL061_SIZE, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_SPIS, VIRTIO_MMIO_START } from '../arch/aarch64/layout';
import { Pl011 } from '../devices/pl011';
import { Pl061 } from '../devices/pl061';
import { BatchingSink } from '../devices/serial-sinks';
import type { IrqLine } from '../devices/types';
import { openHypervisor } from '../hv/hypervisor';
import type { Arm64PartitionState } from '../hv/arm64-state';
import type { Arm64Partition } from '../hv/partition';
import type { ComPort, ResolvedVmConfig } from './config';
import { NodevmmError } from '../errors';
import { assertVcpusStill, DEFAULT_QUIESCE_MS, phaseTimer, type BootImages, type Machine, type MachineHooks } from './machine';
import { StateReader } from '../devices/device-state';
import { attachPartitionVirtio, virtioSlots, type AttachedVirtio, type VirtioSlotPlacement } from './virtio-devices';

/** arm64 virtio-mmio slots: the bottom of the MMIO gap, SPIs 16-23 (lib/arch/aarch64/layout.ts). */
export const ARM64_VIRTIO_PLACEMENT: VirtioSlotPlacement = { start: VIRTIO_MMIO_START, slotSize: VIRTIO_MMIO_SLOT_SIZE, irqs: VIRTIO_MMIO_SPIS };

/** com1 and com2 are the device tree's PL011s in order: ttyAMA0 (the console) and ttyAMA1. */
const PL011_PORTS: readonly ComPort[] = ['com1', 'com2'];

/** How long the power key stays pressed: longer than gpio-keys' 5 ms debounce, so the press is seen. */
const POWER_KEY_PRESS_MS = 100;

export interface Arm64Machine extends Machine {
  readonly partition: Arm64Partition;
  uarts: Partial<Record<ComPort, Pl011>>;
  gpio: Pl061;
}

/** An SPI of the in-kernel GIC as an IrqLine; each device owns its SPI, so no OR of sources is needed (x86's IrqLines). */
function spiLine(partition: Arm64Partition, spi: number): IrqLine {
  return {
    set: (level) => partition.setIrqLine(spi, level),
    pulse: () => {
      partition.setIrqLine(spi, true);
      partition.setIrqLine(spi, false);
    },
  };
}

/**
 * Build the machine from a snapshot instead of a boot: RAM is the
 * snapshot's files mapped copy-on-write (no kernel or device tree written),
 * and the partition gets the saved vCPU and GIC state where a boot would
 * set the boot vCPU's registers. The caller then restores the device models' state.
 */
export interface Arm64MachineRestore {
  /** An open fd of each RAM region's file, in arm64RamRanges(cfg.memory) order (the caller closes them after the build). */
  ramFds: readonly number[];
  hypervisor: Arm64PartitionState;
}

export function buildArm64Machine(cfg: ResolvedVmConfig, images: BootImages | undefined, hooks: MachineHooks, restore?: Arm64MachineRestore): Arm64Machine {
  if (!images && !restore) throw new NodevmmError('ERR_CONFIG', 'an arm64 vm boots a kernel Image: give kernel');
  const { timings, phase } = phaseTimer();

  // 1. Partition: vCPUs and the GIC (the CPU count is checked against the redistributor space first).
  const redist = gicRedistributorRange(cfg.vcpus);
  const partition = openHypervisor().createArm64Partition({
    vcpus: cfg.vcpus,
    gicDistributor: GIC_DIST_START,
    gicRedistributor: redist.start,
    ...(cfg.dispatchSpinUs !== undefined ? { dispatchSpinUs: cfg.dispatchSpinUs } : {}),
  });
  const sinks: BatchingSink[] = [];
  let virtio: AttachedVirtio | undefined;
  let keyTimer: NodeJS.Timeout | undefined;
  try {
    phase('partition');
    // 2. RAM from 1 GiB up to the MMIO gap, the rest above 4 GiB.
    arm64RamRanges(cfg.memory).forEach((r, i) => {
      // Shared (a memfd) only where virtiofsd must map it: anonymous RAM gets transparent huge pages.
      const backing = restore ? { privateFile: restore.ramFds[i]! } : { shared: cfg.shares.length > 0 };
      partition.addRam({ gpa: r.gpa, size: r.size, name: `ram@${r.gpa.toString(16)}`, ...backing });
    });
    phase('memory');

    // 3. Kernel, initrd and the device tree, which lists the same virtio slots the bus gets below.
    // Restored: nothing to load, the kernel and its device tree are in the snapshot's RAM.
    const slots = virtioSlots(cfg, ARM64_VIRTIO_PLACEMENT);
    const mpidrs = partition.vcpus.map((v) => partition.mpidr(v.index));
    const load = (loaded: BootImages) => {
      // createVm reads an arm64 kernel whole (elfKernelFile is for x86_64 ELF kernels only).
      if (!(loaded.kernel instanceof Uint8Array)) throw new NodevmmError('ERR_CONFIG', 'an arm64 vm boots a kernel Image given as bytes or a path read whole');
      return loadLinuxDirectArm64(partition.memory, {
        kernel: loaded.kernel,
        ...(loaded.initrd ? { initrd: loaded.initrd } : {}),
        cmdline: cfg.cmdline,
        cpuMpidrs: mpidrs,
        memoryBytes: cfg.memory,
        virtioMmio: slots.map((s) => ({ base: s.base, size: s.size, spi: s.irq })),
      });
    };
    const boot = images && !restore ? load(images) : undefined;
    phase('load');

    // 4. Devices, where the device tree says they are. Both PL011s are always there; a port the config turns off gets no host end.
    const fixed = arm64DefaultDevices(cfg.vcpus);
    const uarts: Partial<Record<ComPort, Pl011>> = {};
    for (const [i, r] of fixed.uarts.entries()) {
      const c = PL011_PORTS[i]!;
      const port = cfg.serial[c] ? hooks.serial[c] : undefined;
      const sink = new BatchingSink((chunk: Uint8Array) => port?.deliver(chunk));
      sinks.push(sink);
      const uart = new Pl011(`pl011-${c}`, spiLine(partition, r.spi), sink, () => port?.rxSpace());
      partition.mmio.register(r.base, PL011_SIZE, uart);
      port?.attach({ enqueue: (b) => uart.enqueue(b) });
      uarts[c] = uart;
    }
    const key = fixed.powerKey!;
    const gpio = new Pl061('pl061', spiLine(partition, key.spi));
    partition.mmio.register(key.base, PL061_SIZE, gpio);
    virtio = attachPartitionVirtio(cfg, slots, partition, (spi) => spiLine(partition, spi), hooks);
    phase('devices');

    // 5. The boot vCPU enters the kernel with X0 = DTB; secondaries wait for PSCI CPU_ON.
    // Restored: every vCPU's registers and MP state, then the GIC, as they were saved.
    if (restore) {
      partition.restoreState(restore.hypervisor);
    } else {
      const r = boot!.bootRegs;
      partition.setCoreRegs(0, { pc: r.pc, x0: r.x0, x1: 0n, x2: 0n, x3: 0n, pstate: r.pstate });
    }
    phase('vcpus');

    const hex = (v: bigint | number) => `0x${v.toString(16)}`;
    return {
      partition,
      uarts,
      gpio,
      virtio,
      timings,
      pressPowerButton: () => {
        // Press, then release: a second press after the release is a new key event.
        if (keyTimer) return;
        gpio.setInput(key.powerKeyPin, true);
        keyTimer = setTimeout(() => {
          keyTimer = undefined;
          gpio.setInput(key.powerKeyPin, false);
        }, POWER_KEY_PRESS_MS);
        keyTimer.unref();
      },
      describeVcpus: () =>
        partition.vcpus.map((v) => {
          // A vCPU still in its run call holds its mutex: reading its registers would block this thread.
          if (v.state === 'running') return `vcpu${v.index} (still running, registers not read)`;
          try {
            return `vcpu${v.index} pc ${hex(partition.getCoreReg(v.index, 'pc'))} sp ${hex(partition.getCoreReg(v.index, 'sp'))} pstate ${hex(partition.getCoreReg(v.index, 'pstate'))}`;
          } catch (e) {
            return `vcpu${v.index} (${(e as Error).message})`;
          }
        }),
      describeSerial: () => Object.entries(uarts).map(([name, u]) => `${name} ${JSON.stringify(u!.divisors)} out ${u!.bytesOut} rx-overruns ${u!.rxOverruns}`),
      flush: () => {
        sinks.forEach((s) => s.flush());
        virtio!.flush();
      },
      quiesceDevices: async (timeoutMs = DEFAULT_QUIESCE_MS) => {
        sinks.forEach((s) => s.flush());
        await virtio!.quiesce(timeoutMs);
      },
      snapshotDevices: () => {
        assertVcpusStill(partition, 'a device snapshot');
        sinks.forEach((s) => s.flush());
        const serial: Record<string, unknown> = {};
        for (const c of PL011_PORTS) serial[c] = uarts[c]!.snapshot();
        // A press in progress is saved as the pin's level; the restored machine releases it (see restoreDevices).
        return { arch: 'aarch64', serial, gpio: gpio.snapshot(), virtio: virtio!.snapshot() };
      },
      restoreDevices: (state: Record<string, unknown>) => {
        assertVcpusStill(partition, 'a device restore');
        const r = new StateReader('', state);
        r.oneOf('arch', ['aarch64']);
        const serial = r.child('serial');
        for (const k of serial.keys()) if (!(PL011_PORTS as readonly string[]).includes(k)) throw serial.error(k, 'the snapshot has this port, this machine does not');
        const serialStates = PL011_PORTS.map((c) => {
          if (!serial.has(c)) throw serial.error(c, 'is missing: this machine has the port, the snapshot does not');
          return serial.raw(c);
        });
        serial.done();
        const gpioState = r.raw('gpio');
        const virtioState = r.raw('virtio');
        r.done();
        PL011_PORTS.forEach((c, i) => uarts[c]!.restoreState(serialStates[i], c));
        gpio.restoreState(gpioState, 'gpio');
        // The timer that would have released a pressed power key did not come along: release it as that timer would.
        if (gpio.inputHigh(key.powerKeyPin) && !keyTimer) {
          keyTimer = setTimeout(() => {
            keyTimer = undefined;
            gpio.setInput(key.powerKeyPin, false);
          }, POWER_KEY_PRESS_MS);
          keyTimer.unref();
        }
        virtio!.restore(virtioState, 'virtio');
      },
      dispose: () => {
        if (keyTimer) clearTimeout(keyTimer);
        keyTimer = undefined;
        for (const s of sinks) s.flush();
        virtio!.dispose();
        for (const c of PL011_PORTS) if (cfg.serial[c]) hooks.serial[c]?.attach(undefined);
        partition.destroy();
      },
    };
  } catch (e) {
    virtio?.dispose();
    partition.destroy();
    throw e;
  }
}
