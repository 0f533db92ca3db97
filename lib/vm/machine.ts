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
import { NodevmmError } from '../errors';
import type { NetBackend } from '../devices/virtio/net';
import type { KernelFile } from '../loader/kernel';
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
  /** x86_64 may get an ELF kernel as its file (lib/vm/image-files.ts elfKernelFile). */
  kernel: Uint8Array | KernelFile;
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
  /**
   * Before snapshotDevices() on a paused VM: wait until no device request is
   * in flight (disk I/O on the thread pool), at most `timeoutMs` (default
   * DEFAULT_QUIESCE_MS); rejects with a one-sentence ERR_SNAPSHOT error
   * naming the device still busy. Nothing in flight is ever dropped.
   */
  quiesceDevices(timeoutMs?: number): Promise<void>;
  /**
   * Every device model's state as plain JSON data (numbers, strings,
   * booleans, arrays; bytes as base64; no bigint), for a snapshot of a
   * paused VM after quiesceDevices(). Throws a one-sentence error when a
   * device cannot be saved: ERR_SNAPSHOT for a running vCPU or a request in
   * flight; ERR_SNAPSHOT_UNSUPPORTED for vhost-vsock or virtio-fs in use
   * (their state is in the host kernel or another process) and a written
   * temporary overlay.
   */
  snapshotDevices(): Record<string, unknown>;
  /**
   * Take saved device state into this machine, built from the same config
   * and not run yet: after guest memory holds the snapshot's pages and the
   * interrupt controller its state, before any vCPU runs. Every field of the
   * (possibly tampered) input is checked; a bad one throws a one-sentence
   * ERR_DEVICE_STATE error naming the component and field ("snapshot device
   * state com1.rx: expected at most 64 bytes, got 90"), after which the
   * machine must be disposed.
   */
  restoreDevices(state: Record<string, unknown>): void;
  dispose(): void;
}

/** How long quiesceDevices() waits for disk requests by default. */
export const DEFAULT_QUIESCE_MS = 10_000;

/** Device state is taken and given only while no vCPU runs (a running guest would change it meanwhile). */
export function assertVcpusStill(partition: Partition, what: string): void {
  const running = partition.vcpus.find((v) => v.state === 'running');
  if (running) throw new NodevmmError('ERR_SNAPSHOT', `${what} needs a paused VM, but vcpu${running.index} is running`);
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
