/**
 * The virtio-mmio transport, version 2 ("modern", VIRTIO 1.2 §4.2.2): the
 * register file, feature negotiation (VIRTIO_F_VERSION_1 required), queue
 * setup, device status and reset, and the interrupt line (level: high while
 * InterruptStatus is non-zero). A device backend supplies its ID, features,
 * config space and queue handling. A guest that breaks a virtqueue rule puts
 * the device in DEVICE_NEEDS_RESET with a config-change interrupt (§2.1.2).
 *
 * Offload hook: a device whose queues run outside this process (vhost) gets
 * the slot (MMIO base, GSI) and each queue's layout at activation, and says
 * that its interrupts bypass the transport (`interruptsBypassTransport`): an
 * irqfd interrupt never passes through here, so while such a device runs,
 * InterruptStatus reports a used buffer whenever it is read (as Firecracker's
 * transport does for vhost-user devices). The driver reads it only when
 * interrupted, and an interrupt from the backend is always about its rings.
 * Such a slot should be edge-triggered (`trigger: 'edge'`): see
 * docs/virtio.md, virtio-vsock.
 * Not here: legacy (version 1) registers, shared memory regions (every
 * region reads as absent).
 */
import { NodevmmError } from '../../errors';
import type { GuestMemory } from '../../memory/guest-memory';
import type { IoDevice, IrqLine } from '../types';
import { localWord, type SharedWord } from '../../hv/io-bus';
import { isValidQueueSize, SplitQueue, VirtioQueueError, type SplitQueueIndices, type SplitQueueLayout } from './queue';
import { deviceStateError, StateReader, toHex64 } from '../device-state';

export const VIRTIO_MMIO_MAGIC = 0x74726976; // "virt"
export const VIRTIO_MMIO_VERSION = 2;
/** Our vendor ID: "NVMM" is not registered anywhere; the driver does not care. */
export const VIRTIO_MMIO_VENDOR = 0x4d4d564e;
export const VIRTIO_MMIO_SLOT_SIZE = 0x1000;
export const VIRTIO_MMIO_CONFIG = 0x100;

export const REG = {
  magic: 0x000,
  version: 0x004,
  deviceId: 0x008,
  vendorId: 0x00c,
  deviceFeatures: 0x010,
  deviceFeaturesSel: 0x014,
  driverFeatures: 0x020,
  driverFeaturesSel: 0x024,
  queueSel: 0x030,
  queueNumMax: 0x034,
  queueNum: 0x038,
  queueReady: 0x044,
  queueNotify: 0x050,
  interruptStatus: 0x060,
  interruptAck: 0x064,
  status: 0x070,
  queueDescLow: 0x080,
  queueDescHigh: 0x084,
  queueDriverLow: 0x090,
  queueDriverHigh: 0x094,
  queueDeviceLow: 0x0a0,
  queueDeviceHigh: 0x0a4,
  shmSel: 0x0ac,
  shmLenLow: 0x0b0,
  shmLenHigh: 0x0b4,
  shmBaseLow: 0x0b8,
  shmBaseHigh: 0x0bc,
  configGeneration: 0x0fc,
} as const;

export const STATUS = { acknowledge: 1, driver: 2, driverOk: 4, featuresOk: 8, needsReset: 64, failed: 128 } as const;
export const INT_USED_BUFFER = 1;
export const INT_CONFIG_CHANGE = 2;

export const VIRTIO_F_RING_INDIRECT_DESC = 28n;
export const VIRTIO_F_RING_EVENT_IDX = 29n;
export const VIRTIO_F_VERSION_1 = 32n;
const TRANSPORT_FEATURES = (1n << VIRTIO_F_RING_INDIRECT_DESC) | (1n << VIRTIO_F_RING_EVENT_IDX) | (1n << VIRTIO_F_VERSION_1);

/** Where a transport sits: what a device needs to wire ioeventfds and irqfds to it. */
export interface VirtioMmioSlotInfo {
  /** GPA of the register file; QueueNotify is at base + REG.queueNotify. */
  base: number;
  /** The slot's interrupt (an IOAPIC pin). */
  gsi: number;
}

/** What a device gets once the driver set DRIVER_OK. */
export interface VirtioActivation {
  memory: GuestMemory;
  /** One per queue; undefined where the driver left a queue disabled. */
  queues: Array<SplitQueue | undefined>;
  /** The ring addresses behind `queues` (same indices), for devices that hand rings to the kernel. */
  layouts: Array<SplitQueueLayout | undefined>;
  /** The slot, when the transport was told it (always in a VM; absent in some unit tests). */
  slot: VirtioMmioSlotInfo | undefined;
  features: bigint;
  /** Interrupt the driver for queue `index` if its suppression settings allow. */
  usedBuffers(index: number): void;
  /** The guest broke a rule: enter DEVICE_NEEDS_RESET. */
  fail(error: unknown): void;
}

/** A virtio device behind the transport. */
export interface VirtioDevice {
  readonly name: string;
  /** §5: 2 block, 3 console, 4 entropy, 1 network, 19 vsock. */
  readonly deviceId: number;
  /** Device-specific feature bits; the transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX. */
  readonly features: bigint;
  /** Largest size for each queue (each a power of two). */
  readonly queueMaxSizes: readonly number[];
  readConfig(offset: number, size: number): number;
  writeConfig?(offset: number, size: number, value: number): void;
  /** The driver set DRIVER_OK: queues are live. */
  activate(ctx: VirtioActivation): void;
  /** The driver kicked queue `index`. */
  notify(index: number): void;
  /** Drop every queue and in-flight state (the driver wrote 0 to Status, or needs-reset). */
  reset(): void;
  /**
   * The device's rings interrupt the guest without the transport (a backend
   * signals an irqfd): from activation to reset, InterruptStatus reports
   * INT_USED_BUFFER on every read, and an ACK does not clear it. Devices that
   * raise only through usedBuffers() omit it.
   */
  readonly interruptsBypassTransport?: boolean;
  /**
   * The device's own state for a snapshot, as plain JSON data; `active`: the
   * driver set DRIVER_OK and the queues are live. Called before the transport
   * reads the queue indices, so a device may give back a buffer it holds
   * unused. Throws a one-sentence NodevmmError when the state cannot be
   * saved: ERR_SNAPSHOT while a request is in flight (drain first),
   * ERR_SNAPSHOT_UNSUPPORTED when it lives outside this process (rings run by
   * vhost or a vhost-user daemon). A device without it cannot be snapshotted.
   */
  saveState?(active: boolean): Record<string, unknown>;
  /**
   * Check and take saved state (errors name `path` and the field), before the
   * transport resumes the queues through activate(). Refuses `active` state
   * it cannot resume.
   */
  restoreState?(state: unknown, path: string, active: boolean): void;
}

/** A queue's registers and, while the device is active, where the device is in its rings. */
export interface VirtioQueueState {
  num: number;
  ready: boolean;
  desc: number;
  driver: number;
  device: number;
  /** Present exactly for the ready queues of an active device. */
  ring?: SplitQueueIndices;
}

/** A transport's state as plain JSON data (features as hex strings). */
export interface VirtioMmioState {
  deviceId: number;
  status: number;
  deviceFeaturesSel: number;
  driverFeaturesSel: number;
  driverFeatures: string;
  queueSel: number;
  queues: VirtioQueueState[];
  interruptStatus: number;
  configGeneration: number;
  device: Record<string, unknown>;
}

const STATUS_BITS = STATUS.acknowledge | STATUS.driver | STATUS.driverOk | STATUS.featuresOk | STATUS.needsReset | STATUS.failed;
/** The largest queue address a register pair can hold here (setHalf clamps the high half). */
const MAX_QUEUE_GPA = 0x1f_ffff * 2 ** 32 + 0xffff_ffff;

interface QueueRegs {
  num: number;
  ready: boolean;
  desc: number;
  driver: number;
  device: number;
}

export interface VirtioMmioOptions {
  memory: GuestMemory;
  irq: IrqLine;
  device: VirtioDevice;
  slot?: VirtioMmioSlotInfo;
  /**
   * 'level' (default): the line is high while InterruptStatus is non-zero.
   * 'edge': each new interrupt is one pulse, as an irqfd delivers it, so
   * interrupts from the transport and from an irqfd can share the line.
   */
  trigger?: 'level' | 'edge';
  /**
   * Deliver the driver's QueueNotify writes for queue `index` without an MMIO
   * exit (an ioeventfd: the vCPU goes on at once, and `onNotify` runs on the
   * event loop); returns the function that undoes it. Without it, kicks
   * arrive as MMIO writes. Not for devices that hand their queues to the
   * kernel (vhost), which register their own.
   */
  queueNotifier?: (index: number, onNotify: () => void) => () => void;
  /**
   * A host bug (an error that is not the guest's doing) surfaced outside an
   * exit dispatch, e.g. in a device's deferred pass on a later event-loop
   * turn: the VM must stop with `host-error` (Partition.reportHostError).
   * Without it such an error is rethrown, as inside a dispatch, where the
   * partition turns it into that stop itself.
   */
  onHostError?: (error: Error) => void;
}

export class VirtioMmioTransport implements IoDevice {
  readonly name: string;
  readonly device: VirtioDevice;
  private readonly memory: GuestMemory;
  private readonly irq: IrqLine;
  private readonly slot: VirtioMmioSlotInfo | undefined;
  private readonly edge: boolean;
  private status = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private queues: QueueRegs[] = [];
  /** InterruptStatus; shared with the vCPU threads once `shareInterruptStatus` ran. */
  private isr: SharedWord = localWord();
  /** Bits every InterruptStatus read reports on top of `isr` and an ACK leaves alone (interruptsBypassTransport). */
  private held: SharedWord = localWord();
  private configGeneration = 0;
  private active: Array<SplitQueue | undefined> | undefined;
  private readonly queueNotifier: VirtioMmioOptions['queueNotifier'];
  private readonly onHostError: ((error: Error) => void) | undefined;
  /** Undo functions of the queue notifiers registered at DRIVER_OK. */
  private notifiers: Array<() => void> = [];
  /** Last reason the device entered needs-reset (for diagnostics). */
  lastError: string | undefined;

  constructor(opts: VirtioMmioOptions) {
    this.device = opts.device;
    this.name = `virtio-${opts.device.name}`;
    this.memory = opts.memory;
    this.irq = opts.irq;
    this.slot = opts.slot;
    this.edge = opts.trigger === 'edge';
    this.queueNotifier = opts.queueNotifier;
    this.onHostError = opts.onHostError;
    for (const m of opts.device.queueMaxSizes) {
      if (!isValidQueueSize(m)) throw new NodevmmError('ERR_INVALID_ARG', `virtio ${opts.device.name}: queue max size ${m} is not a power of two from 1 to 32768`);
    }
    this.resetState();
  }

  get offeredFeatures(): bigint {
    return this.device.features | TRANSPORT_FEATURES;
  }

  private resetState(): void {
    this.status = 0;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.driverFeatures = 0n;
    this.queueSel = 0;
    this.queues = this.device.queueMaxSizes.map(() => ({ num: 0, ready: false, desc: 0, driver: 0, device: 0 }));
    this.deactivate();
    this.setInterrupt(0);
  }

  /** Queues are no longer live: drop them and their notifiers. */
  private deactivate(): void {
    this.active = undefined;
    this.held.store(0);
    for (const undo of this.notifiers.splice(0)) undo();
  }

  /** The VM is going away: undo the notifiers (the device is reset by its owner). */
  dispose(): void {
    this.deactivate();
  }

  /** The interrupt-status register pair, for the bus to answer natively (edge-triggered slots only). */
  get interruptStatusRegisters(): { read: number; ack: number } | undefined {
    return this.edge ? { read: REG.interruptStatus, ack: REG.interruptAck } : undefined;
  }

  /**
   * Keep InterruptStatus in a word the vCPU threads read and ACK without an
   * exit to JS (the driver reads and ACKs it on every interrupt), and the
   * held bits in a second word they OR into every read. Edge only: an ACK
   * answered natively cannot lower a level-triggered line.
   */
  shareInterruptStatus(word: SharedWord, held: SharedWord): void {
    if (!this.interruptStatusRegisters) throw new NodevmmError('ERR_INVALID_ARG', `${this.name}: only an edge-triggered transport can share InterruptStatus`);
    word.store(this.isr.load());
    held.store(this.held.load());
    this.isr = word;
    this.held = held;
  }

  private setInterrupt(bits: number): void {
    this.isr.store(bits);
    if (!this.edge) this.irq.set(bits !== 0);
  }

  private raise(bit: number): void {
    if (!this.edge) return this.setInterrupt(this.isr.load() | bit);
    // Set the bit before the edge: a driver woken by it must see the bit.
    // While the bit is still set from an earlier edge the driver has not
    // ACKed, no second edge: its handler is pending or running, and it ACKs
    // before it looks at the rings (VIRTIO 1.2 §4.2.3.4, Linux's vm_interrupt),
    // so it sees what was just used. A second edge would only run the handler
    // once more (two exits) to find nothing new; QEMU's level-triggered line
    // coalesces the same way. (passt: 1682 guest interrupts against QEMU's
    // 402 for the same transfers before this, docs/benchmarks.md.)
    if (this.isr.or(bit) & bit) return;
    this.irq.pulse();
  }

  get deviceStatus(): number {
    return this.status;
  }

  private get sel(): QueueRegs | undefined {
    return this.queues[this.queueSel];
  }

  read(offset: number, size: number): number {
    if (offset >= VIRTIO_MMIO_CONFIG) return this.device.readConfig(offset - VIRTIO_MMIO_CONFIG, size);
    // §4.2.2.2: the driver uses 32-bit accesses for the register file.
    if (size !== 4) return 0;
    const q = this.sel;
    switch (offset) {
      case REG.magic:
        return VIRTIO_MMIO_MAGIC;
      case REG.version:
        return VIRTIO_MMIO_VERSION;
      case REG.deviceId:
        return this.device.deviceId;
      case REG.vendorId:
        return VIRTIO_MMIO_VENDOR;
      case REG.deviceFeatures:
        return this.deviceFeaturesSel > 1 ? 0 : Number((this.offeredFeatures >> BigInt(32 * this.deviceFeaturesSel)) & 0xffff_ffffn);
      case REG.queueNumMax:
        return q ? this.device.queueMaxSizes[this.queueSel]! : 0;
      case REG.queueReady:
        return q?.ready ? 1 : 0;
      case REG.interruptStatus:
        return this.isr.load() | this.held.load();
      case REG.status:
        return this.status;
      case REG.configGeneration:
        return this.configGeneration;
      // §4.2.2: a shared memory region that does not exist has length (and base) -1. We have
      // none; a 0 here reads as a region of length 0 at address 0, which Linux's virtio-fs
      // tries to reserve for DAX and fails its probe with EBUSY.
      case REG.shmLenLow:
      case REG.shmLenHigh:
      case REG.shmBaseLow:
      case REG.shmBaseHigh:
        return 0xffff_ffff;
      default:
        return 0;
    }
  }

  write(offset: number, size: number, value: number): void {
    if (offset >= VIRTIO_MMIO_CONFIG) {
      this.device.writeConfig?.(offset - VIRTIO_MMIO_CONFIG, size, value);
      return;
    }
    if (size !== 4) return;
    value >>>= 0;
    const q = this.sel;
    // Queue layout registers may only change while the queue is not ready (§4.2.3.2).
    const layoutWritable = q !== undefined && !q.ready;
    switch (offset) {
      case REG.deviceFeaturesSel:
        this.deviceFeaturesSel = value;
        return;
      case REG.driverFeatures:
        if (this.status & STATUS.featuresOk) return;
        if (this.driverFeaturesSel <= 1) {
          const shift = BigInt(32 * this.driverFeaturesSel);
          this.driverFeatures = (this.driverFeatures & ~(0xffff_ffffn << shift)) | (BigInt(value) << shift);
        }
        return;
      case REG.driverFeaturesSel:
        this.driverFeaturesSel = value;
        return;
      case REG.queueSel:
        this.queueSel = value;
        return;
      case REG.queueNum:
        if (layoutWritable) q.num = value;
        return;
      case REG.queueReady:
        if (q) this.setQueueReady(q, value === 1);
        return;
      case REG.queueNotify:
        this.kick(value & 0xffff);
        return;
      case REG.interruptAck:
        if (this.edge) this.isr.and(~value);
        else this.setInterrupt(this.isr.load() & ~value);
        return;
      case REG.status:
        this.writeStatus(value);
        return;
      case REG.queueDescLow:
      case REG.queueDescHigh:
      case REG.queueDriverLow:
      case REG.queueDriverHigh:
      case REG.queueDeviceLow:
      case REG.queueDeviceHigh:
        if (layoutWritable) setHalf(q, offset, value);
        return;
      default:
        return;
    }
  }

  private setQueueReady(q: QueueRegs, ready: boolean): void {
    q.ready = ready;
  }

  private writeStatus(value: number): void {
    if (value === 0) {
      this.device.reset();
      this.resetState();
      return;
    }
    // §2.1.1: the driver MUST NOT clear a status bit; only a reset does. Bits
    // only accumulate, so DRIVER_OK can be added once per reset: a device is
    // never activated twice (which would leak what the first activation made).
    // DEVICE_NEEDS_RESET is the device's to set.
    value = (value & ~STATUS.needsReset) | this.status;
    const added = value & ~this.status;
    if (added & STATUS.featuresOk) {
      const unknown = this.driverFeatures & ~this.offeredFeatures;
      // §2.2.1 / §6.1: we offer only modern devices, so the driver must accept VERSION_1.
      if (unknown !== 0n || !(this.driverFeatures & (1n << VIRTIO_F_VERSION_1))) value &= ~STATUS.featuresOk;
    }
    if (added & STATUS.driverOk && !(this.status & STATUS.needsReset)) {
      this.status = value;
      this.activate();
      return;
    }
    this.status = value;
  }

  private activate(): void {
    if (!(this.status & STATUS.featuresOk)) {
      this.fail(new VirtioQueueError('driver set DRIVER_OK before FEATURES_OK'));
      return;
    }
    const f = this.driverFeatures;
    const features = { eventIdx: (f & (1n << VIRTIO_F_RING_EVENT_IDX)) !== 0n, indirect: (f & (1n << VIRTIO_F_RING_INDIRECT_DESC)) !== 0n };
    try {
      const layouts = this.queues.map((q): SplitQueueLayout | undefined => (q.ready ? { size: q.num, descGpa: q.desc, availGpa: q.driver, usedGpa: q.device } : undefined));
      const queues = layouts.map((l, i) => {
        if (!l) return undefined;
        if (l.size > this.device.queueMaxSizes[i]!) throw new VirtioQueueError(`queue ${i} size ${l.size} is larger than its maximum ${this.device.queueMaxSizes[i]}`);
        return new SplitQueue(this.memory, l, features);
      });
      this.active = queues;
      // Before the device starts: a kick the driver sends right after DRIVER_OK must not be lost.
      this.registerNotifiers(queues);
      // Held before the backend gets its rings, so its first interrupt already finds the bit.
      if (this.device.interruptsBypassTransport) this.held.store(INT_USED_BUFFER);
      this.device.activate(this.activation(queues, f));
    } catch (e) {
      this.fail(e);
    }
  }

  /** Whether the driver's DRIVER_OK took effect and the queues are live. */
  get isActive(): boolean {
    return this.active !== undefined;
  }

  /**
   * The transport's and the device's state as plain JSON data: registers,
   * negotiated features, each queue's layout and, while active, the
   * device's ring indices (last_avail_idx, used idx). Throws a one-sentence
   * error when the device cannot be saved (see VirtioDevice.saveState); the
   * VM must be paused (no vCPU writes registers).
   */
  snapshot(): VirtioMmioState {
    if (!this.device.saveState) throw new NodevmmError('ERR_SNAPSHOT_UNSUPPORTED', `${this.name}: this device has no saved state, so a VM with it cannot be snapshotted`);
    const active = this.active !== undefined;
    // First: the device may give back a buffer it holds, which moves a ring index.
    const device = this.device.saveState(active);
    return {
      deviceId: this.device.deviceId,
      status: this.status,
      deviceFeaturesSel: this.deviceFeaturesSel >>> 0,
      driverFeaturesSel: this.driverFeaturesSel >>> 0,
      driverFeatures: toHex64(this.driverFeatures),
      queueSel: this.queueSel >>> 0,
      queues: this.queues.map((q, i) => {
        const live = this.active?.[i];
        return { num: q.num >>> 0, ready: q.ready, desc: q.desc, driver: q.driver, device: q.device, ...(live ? { ring: live.indices() } : {}) };
      }),
      interruptStatus: this.isr.load(),
      configGeneration: this.configGeneration,
      device,
    };
  }

  /**
   * Take saved state into a transport that has not run yet (a machine built
   * for a restore), checking every field: a snapshot file may be tampered
   * with, and errors name `path` and the field. Guest memory must already
   * hold the snapshot's pages: the rings are checked against it (inside RAM,
   * aligned, the used index the device published, at most a queue of
   * chains waiting). An active device resumes exactly where it was: from the
   * saved last_avail_idx, so the guest's next kick serves only new chains;
   * chains made available but not yet taken when the snapshot was made are
   * served at once. On an error the machine must be disposed.
   */
  restoreState(input: unknown, path: string): void {
    const r = new StateReader(path, input);
    const deviceId = r.int('deviceId', 0, 0xffff_ffff);
    if (deviceId !== this.device.deviceId) throw r.error('deviceId', `the snapshot has device ${deviceId} where this machine has ${this.device.name} (${this.device.deviceId})`);
    const status = r.int('status', 0, 0xff);
    if (status & ~STATUS_BITS) throw r.error('status', `has bits no status has: 0x${status.toString(16)}`);
    const deviceFeaturesSel = r.int('deviceFeaturesSel', 0, 0xffff_ffff);
    const driverFeaturesSel = r.int('driverFeaturesSel', 0, 0xffff_ffff);
    const driverFeatures = r.u64('driverFeatures');
    const queueSel = r.int('queueSel', 0, 0xffff_ffff);
    if (status & STATUS.featuresOk) {
      const unknown = driverFeatures & ~this.offeredFeatures;
      if (unknown) throw r.error('driverFeatures', `the driver accepted bits ${toHex64(unknown)} this device does not offer (another backend, a read-only disk?)`);
      if (!(driverFeatures & (1n << VIRTIO_F_VERSION_1))) throw r.error('driverFeatures', 'FEATURES_OK without VIRTIO_F_VERSION_1, which this transport never accepts');
    }
    const active = (status & STATUS.driverOk) !== 0 && (status & STATUS.needsReset) === 0;
    if (active && !(status & STATUS.featuresOk)) throw r.error('status', 'DRIVER_OK without FEATURES_OK is never live (the device would need a reset)');
    const ringFeatures = { eventIdx: (driverFeatures & (1n << VIRTIO_F_RING_EVENT_IDX)) !== 0n, indirect: (driverFeatures & (1n << VIRTIO_F_RING_INDIRECT_DESC)) !== 0n };
    const rawQueues = r.array('queues', this.device.queueMaxSizes.length, true);
    const regs: QueueRegs[] = [];
    const live: Array<SplitQueue | undefined> = [];
    rawQueues.forEach((raw, i) => {
      const q = new StateReader(`${r.at('queues')}[${i}]`, raw);
      const reg: QueueRegs = { num: q.int('num', 0, 0xffff_ffff), ready: q.bool('ready'), desc: q.int('desc', 0, MAX_QUEUE_GPA), driver: q.int('driver', 0, MAX_QUEUE_GPA), device: q.int('device', 0, MAX_QUEUE_GPA) };
      regs.push(reg);
      if (!(active && reg.ready)) {
        if (q.has('ring')) throw q.error('ring', 'ring indices are saved only for a ready queue of an active device');
        q.done();
        live.push(undefined);
        return;
      }
      const max = this.device.queueMaxSizes[i]!;
      if (!isValidQueueSize(reg.num)) throw q.error('num', `queue size ${reg.num} is not a power of two from 1 to 32768`);
      if (reg.num > max) throw q.error('num', `queue size ${reg.num} is larger than this queue's maximum ${max}`);
      const ring = q.child('ring');
      const indices: SplitQueueIndices = { lastAvail: ring.int('lastAvail', 0, 0xffff), usedIdx: ring.int('usedIdx', 0, 0xffff), signalledUsed: ring.int('signalledUsed', 0, 0xffff) };
      ring.done();
      q.done();
      // Every device here returns each chain it takes before a snapshot (quiesce); one taken and not returned would be lost.
      const taken = (indices.lastAvail - indices.usedIdx) & 0xffff;
      if (taken) throw ring.error('lastAvail', `${taken} chains were taken and not returned (last_avail_idx ${indices.lastAvail}, used idx ${indices.usedIdx}), which cannot be resumed`);
      let queue: SplitQueue;
      try {
        queue = new SplitQueue(this.memory, { size: reg.num, descGpa: reg.desc, availGpa: reg.driver, usedGpa: reg.device }, ringFeatures, indices);
      } catch (e) {
        if (e instanceof NodevmmError) throw deviceStateError(`${r.at('queues')}[${i}]`, e.message);
        throw e;
      }
      const published = queue.publishedUsedIdx();
      if (published !== indices.usedIdx) throw ring.error('usedIdx', `the device's used idx ${indices.usedIdx} is not the ${published} guest memory holds (memory from another snapshot?)`);
      try {
        queue.pending();
      } catch (e) {
        if (e instanceof NodevmmError) throw ring.error('lastAvail', e.message);
        throw e;
      }
      live.push(queue);
    });
    const interruptStatus = r.int('interruptStatus', 0, INT_USED_BUFFER | INT_CONFIG_CHANGE);
    const configGeneration = r.int('configGeneration', 0, 0xffff_ffff);
    const deviceState = r.raw('device');
    r.done();
    if (!this.device.restoreState) throw deviceStateError(path, `${this.device.name} has no saved state to restore`);
    // A transport that ran already (not the intended use) first lets go of what its activation made.
    if (this.status !== 0) {
      this.device.reset();
      this.resetState();
    }
    this.device.restoreState(deviceState, r.at('device'), active);

    this.deactivate();
    this.status = status;
    this.deviceFeaturesSel = deviceFeaturesSel;
    this.driverFeaturesSel = driverFeaturesSel;
    this.driverFeatures = driverFeatures;
    this.queueSel = queueSel;
    this.queues = regs;
    this.configGeneration = configGeneration;
    // An edge already delivered is in the restored interrupt controller: only the bits come back here.
    if (this.edge) this.isr.store(interruptStatus);
    else this.setInterrupt(interruptStatus);
    if (active) this.resume(live, driverFeatures);
  }

  /** Make restored queues live again: notifiers first (as at DRIVER_OK), then the device. */
  private resume(queues: Array<SplitQueue | undefined>, features: bigint): void {
    this.active = queues;
    this.registerNotifiers(queues);
    try {
      this.device.activate(this.activation(queues, features));
    } catch (e) {
      this.fail(e);
    }
  }

  private registerNotifiers(queues: Array<SplitQueue | undefined>): void {
    if (!this.queueNotifier) return;
    queues.forEach((q, i) => {
      if (!q) return;
      try {
        this.notifiers.push(this.queueNotifier!(i, () => this.kick(i)));
      } catch (e) {
        // Kicks still arrive as MMIO writes; only slower.
        process.emitWarning(`${this.name}: queue ${i} notifications stay on MMIO exits: ${(e as Error).message}`);
      }
    });
  }

  private activation(queues: Array<SplitQueue | undefined>, features: bigint): VirtioActivation {
    return {
      memory: this.memory,
      queues,
      layouts: this.queues.map((q, i): SplitQueueLayout | undefined => (queues[i] ? { size: q.num, descGpa: q.desc, availGpa: q.driver, usedGpa: q.device } : undefined)),
      slot: this.slot,
      features,
      usedBuffers: (i) => this.usedBuffers(i),
      fail: (e) => this.fail(e),
    };
  }

  private kick(index: number): void {
    if (!this.active || this.status & STATUS.needsReset || !(this.status & STATUS.driverOk)) return;
    if (!this.active[index]) return;
    try {
      this.device.notify(index);
    } catch (e) {
      this.fail(e);
    }
  }

  private usedBuffers(index: number): void {
    const q = this.active?.[index];
    if (!q || this.status & STATUS.needsReset) return;
    try {
      if (q.shouldInterrupt()) this.raise(INT_USED_BUFFER);
    } catch (e) {
      this.fail(e);
    }
  }

  /**
   * Guest misbehaviour (a VirtioQueueError or a guest-memory fault) stops the
   * device until the driver resets it; anything else is a host bug: it goes to
   * onHostError (the VM stops with host-error), or is rethrown without one.
   */
  fail(e: unknown): void {
    if (!(e instanceof NodevmmError)) {
      const error = e instanceof Error ? e : new Error(String(e));
      if (!this.onHostError) throw error;
      return this.onHostError(error);
    }
    this.lastError = e.message;
    if (this.status & STATUS.needsReset) return;
    this.device.reset();
    this.deactivate();
    this.status |= STATUS.needsReset;
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    this.raise(INT_CONFIG_CHANGE);
  }

  /** The device's config space changed (e.g. a resized disk): tell the driver. */
  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    if (this.status & STATUS.driverOk) this.raise(INT_CONFIG_CHANGE);
  }
}

function setHalf(q: QueueRegs, offset: number, value: number): void {
  const high = (offset & 4) !== 0;
  const key = offset < REG.queueDriverLow ? 'desc' : offset < REG.queueDeviceLow ? 'driver' : 'device';
  const old = q[key];
  const lo = old % 2 ** 32;
  const hi = Math.floor(old / 2 ** 32);
  // Addresses above 2^53 cannot be guest RAM; clamp so SplitQueue rejects them cleanly.
  q[key] = high ? Math.min(value, 0x1f_ffff) * 2 ** 32 + lo : hi * 2 ** 32 + value;
}

/** Read `size` bytes little-endian from a config-space byte array (0 beyond its end). */
export function readConfigBytes(space: Uint8Array, offset: number, size: number): number {
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + (space[offset + i] ?? 0);
  return size === 8 ? v : v >>> 0;
}
