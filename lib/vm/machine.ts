/**
 * What an architecture's machine recipe gives the Vm: a running-ready
 * partition with its devices, and the few hooks where the architectures
 * differ (how the guest is asked to shut down, what diagnose() reports).
 * The Vm owns everything that outlives one boot (serial ports, network
 * backends, overlays) and passes it in through MachineHooks; a guest's
 * power-off and reset come back through the hooks (x86: ACPI PM block and
 * the keyboard controller) or as a vCPU system event (arm64: PSCI
 * SYSTEM_OFF/SYSTEM_RESET), which the Vm maps the same way for both.
 * Recipes: buildX86Machine (x86-machine.ts), buildArm64Machine (arm64-machine.ts).
 */
import type { NetBackend } from '../devices/virtio/net';
import type { Partition, PartitionIo } from '../hv/partition';
import type { ComPort } from './config';
import type { SerialPort } from './serial-port';
import type { AttachedVirtio, OverlayDisk } from './virtio-devices';
import type { VhostUserDeviceOps } from '../devices/virtio/fs';

export interface MachineHooks {
  serial: Partial<Record<ComPort, SerialPort>>;
  /** Where the virtio console (hvc0) goes, when configured. */
  virtioConsole?: SerialPort | undefined;
  /** Backends for cfg.net, in order; the VM owns them across machine rebuilds. */
  netBackends?: readonly NetBackend[] | undefined;
  /** The vhost-user connection of each cfg.shares entry; the VM owns them across machine rebuilds. */
  shareBackends?: readonly VhostUserDeviceOps[] | undefined;
  /** Open overlays of `overlay: 'temp'` disks, per cfg.disks index; the VM owns them across machine rebuilds. */
  overlays?: readonly (OverlayDisk | undefined)[] | undefined;
  /** The guest asked to power off through a device (x86: ACPI S5). */
  onPowerOff(): void;
  /** The guest asked for a reset through a device (x86: the ACPI reset register or the keyboard controller). */
  onReset(): void;
}

export interface BootImages {
  kernel: Uint8Array;
  initrd?: Uint8Array | undefined;
}

export interface Machine {
  readonly partition: Partition & PartitionIo;
  readonly virtio: AttachedVirtio;
  /** Milliseconds per build phase, in order. */
  readonly timings: Array<[string, number]>;
  /** The guest's power button: x86 the ACPI fixed power button, arm64 the GPIO power key. A guest that listens shuts down. */
  pressPowerButton(): void;
  /** Where each vCPU is, one entry per vCPU, for diagnose() (registers only of a vCPU not in its run call). */
  describeVcpus(): string[];
  /** The state of each serial device, for diagnose(). */
  describeSerial(): string[];
  /** The interrupt controllers nodevmm emulates itself (x86 irqchip 'userspace'), for diagnose(); none otherwise. */
  describeInterrupts?(): string[];
  /** Flush pending serial output. */
  flush(): void;
  dispose(): void;
}

/** Times the phases of a machine build: phase('acpi') records the ms since the last call. */
export function phaseTimer(): { timings: Array<[string, number]>; phase(name: string): void } {
  const timings: Array<[string, number]> = [];
  let t = performance.now();
  return {
    timings,
    phase: (name: string) => {
      const now = performance.now();
      timings.push([name, now - t]);
      t = now;
    },
  };
}
