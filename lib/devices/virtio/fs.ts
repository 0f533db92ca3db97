/**
 * virtio-fs (VIRTIO 1.2 §5.11) as a vhost-user device: the queues (0 the
 * high-priority queue, 1 the one request queue) run in a virtiofsd process,
 * which maps guest RAM from its memfds and reads FUSE requests straight from
 * the rings. At DRIVER_OK the rings go to the backend over vhost-user; guest
 * kicks reach it through ioeventfds on QueueNotify (no exit to userspace)
 * and its interrupts reach the guest through an irqfd on the slot's GSI, as
 * for vhost-vsock (InterruptStatus then reports a used buffer throughout, in
 * the word the vCPU threads answer: see mmio.ts). The config space (tag, queue count) is ours: the tag is
 * what the guest mounts (`mount -t virtiofs TAG /mnt`).
 *
 * Threat model: the guest controls the ring addresses and contents; we check
 * that every ring lies inside one RAM region before handing it on, and the
 * backend checks the descriptors (it is the one reading them). A backend that
 * fails a request (it died, it refused) fails activation, which puts the
 * device in DEVICE_NEEDS_RESET; the VM learns of a dead backend separately
 * (lib/vm/virtiofs.ts) and stops.
 */
import { NodevmmError } from '../../errors';
import { hex } from '../../util/bytes';
import { StateReader } from '../device-state';
import { REG, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1, readConfigBytes, type VirtioActivation, type VirtioDevice } from './mmio';
import { splitQueueSizes, VirtioQueueError } from './queue';
import type { VhostUserMemRegion, VringAddresses } from './vhost-user';
import type { NotifyOps } from '../../hv/partition';
import { closeVhostEventfds, forwardKick, registerCall, registerKick, teardownSteps, type VhostPlumbing } from './vhost-plumbing';

export const VIRTIO_ID_FS = 26;
/** §5.11.4: tag[36], UTF-8, NUL-padded (not terminated when all 36 bytes are used). */
export const VIRTIO_FS_TAG_BYTES = 36;
export const VIRTIO_FS_CONFIG_BYTES = VIRTIO_FS_TAG_BYTES + 4;
/** hiprio (FORGET, INTERRUPT) and one request queue: QEMU's virtiofsd serves one. */
export const VIRTIO_FS_QUEUES = 2;
/** QueueNumMax: 128 for hiprio; 1024 for requests, the size QEMU's virtio-fs docs recommend for throughput. */
const QUEUE_MAX_SIZES = [128, 1024] as const;
/** Ring features the transport always offers: the backend must handle them. */
const TRANSPORT_RING_FEATURES = (1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_F_RING_INDIRECT_DESC) | (1n << VIRTIO_F_RING_EVENT_IDX);

/** The vhost-user requests the device issues (VhostUserFrontend implements them). */
export interface VhostUserDeviceOps {
  /** The backend's virtio features. */
  readonly features: bigint;
  setFeatures(features: bigint): void;
  setMemTable(regions: readonly VhostUserMemRegion[]): void;
  setVringNum(index: number, num: number): void;
  setVringBase(index: number, base: number): void;
  setVringAddr(index: number, addrs: VringAddresses): void;
  /** Also stops the ring. */
  getVringBase(index: number): number;
  setVringKick(index: number, fd: number): void;
  setVringCall(index: number, fd: number): void;
  setVringEnable(index: number, enable: boolean): void;
}

/** One guest RAM region as this process maps it, with the memfd behind it (offset 0). */
export interface SharedRamMapping {
  gpa: number;
  size: number;
  hostAddress: bigint;
  fd: number;
}

export interface VirtioFsOptions {
  /** What the guest mounts: 1 to 36 bytes of UTF-8 without NUL. */
  tag: string;
  backend: VhostUserDeviceOps;
  notify: NotifyOps;
  ram: () => SharedRamMapping[];
}

/** The bytes of a tag, or a one-sentence error. */
export function encodeFsTag(tag: string): Uint8Array {
  const bytes = new TextEncoder().encode(tag);
  if (bytes.length === 0 || bytes.length > VIRTIO_FS_TAG_BYTES || bytes.includes(0)) {
    throw new NodevmmError('ERR_INVALID_ARG', `virtio-fs tag ${JSON.stringify(tag)} must be 1 to ${VIRTIO_FS_TAG_BYTES} bytes of UTF-8 without NUL`);
  }
  return bytes;
}

interface Running extends VhostPlumbing {
  /** Rings handed to the backend (GET_VRING_BASE stops each at teardown). */
  rings: number[];
}

export class VirtioFs implements VirtioDevice {
  readonly name = 'fs';
  readonly deviceId = VIRTIO_ID_FS;
  /** No device-specific features (VIRTIO_FS_F_NOTIFICATION is not offered). */
  readonly features = 0n;
  /** virtiofsd signals the used rings through an irqfd: the transport reports them in InterruptStatus. */
  readonly interruptsBypassTransport = true;
  readonly queueMaxSizes: readonly number[] = QUEUE_MAX_SIZES;
  readonly tag: string;
  private readonly backend: VhostUserDeviceOps;
  private readonly notifyOps: NotifyOps;
  private readonly ram: () => SharedRamMapping[];
  private readonly config = new Uint8Array(VIRTIO_FS_CONFIG_BYTES);
  private running: Running | undefined;
  /** Times the backend was handed the rings (one per driver probe). */
  activations = 0;
  /** Request-queue kicks that exited to userspace instead of an ioeventfd (a race with registration). */
  userspaceKicks = 0;

  constructor(opts: VirtioFsOptions) {
    this.tag = opts.tag;
    this.backend = opts.backend;
    this.notifyOps = opts.notify;
    this.ram = opts.ram;
    const missing = TRANSPORT_RING_FEATURES & ~opts.backend.features;
    if (missing) throw new NodevmmError('ERR_VHOST_USER', `the virtio-fs backend lacks ring features the transport offers (missing bits ${hex(Number(missing >> 28n))} << 28)`);
    this.config.set(encodeFsTag(opts.tag), 0);
    new DataView(this.config.buffer).setUint32(VIRTIO_FS_TAG_BYTES, VIRTIO_FS_QUEUES - 1, true);
  }

  readConfig(offset: number, size: number): number {
    return readConfigBytes(this.config, offset, size);
  }

  get backendRunning(): boolean {
    return this.running !== undefined;
  }

  activate(ctx: VirtioActivation): void {
    if (!ctx.slot) throw new NodevmmError('ERR_INVALID_ARG', 'virtio-fs needs its slot (base, gsi) to wire ioeventfds and the irqfd');
    const slot = ctx.slot;
    const layouts = Array.from({ length: VIRTIO_FS_QUEUES }, (_, i) => {
      const l = ctx.layouts[i];
      if (!l) throw new VirtioQueueError(`virtio-fs queue ${i} was not enabled before DRIVER_OK`);
      return l;
    });
    const mappings = this.ram();
    // virtiofsd maps guest RAM from each region's fd: RAM added without `shared` has none.
    const unshared = mappings.find((m) => m.fd < 0);
    if (unshared) throw new NodevmmError('ERR_VHOST_USER', `virtio-fs needs guest ram another process can map, and the region at gpa ${hex(unshared.gpa)} has no fd (add it with RamOptions.shared)`);
    // The backend finds each ring through one region's mapping: a ring across two is refused.
    const userAddr = (gpa: number, length: number, what: string): bigint => {
      const m = mappings.find((r) => gpa >= r.gpa && gpa + length <= r.gpa + r.size);
      if (!m) throw new VirtioQueueError(`virtio-fs ${what} at gpa ${hex(gpa)} (${length} bytes) is not inside one guest RAM region`);
      return m.hostAddress + BigInt(gpa - m.gpa);
    };
    const addrs = layouts.map((l, q) => {
      const sizes = splitQueueSizes(l.size);
      return { desc: userAddr(l.descGpa, sizes.desc, `queue ${q} descriptor table`), avail: userAddr(l.availGpa, sizes.avail, `queue ${q} available ring`), used: userAddr(l.usedGpa, sizes.used, `queue ${q} used ring`) };
    });
    const run: Running = { kicks: [], call: undefined, rings: [] };
    this.running = run;
    try {
      this.backend.setFeatures(ctx.features & this.backend.features);
      this.backend.setMemTable(mappings.map((m) => ({ gpa: m.gpa, size: m.size, userAddr: m.hostAddress, mmapOffset: 0, fd: m.fd })));
      const callFd = registerCall(run, this.notifyOps, slot.gsi);
      layouts.forEach((l, index) => {
        this.backend.setVringNum(index, l.size);
        // A fresh activation starts at ring index 0 (the driver just reset or probed).
        this.backend.setVringBase(index, 0);
        this.backend.setVringAddr(index, addrs[index]!);
        this.backend.setVringKick(index, registerKick(run, this.notifyOps, index, slot.base + REG.queueNotify));
        // A ring counts as started once it has its kick (QEMU's virtiofsd asserts on stopping one that never started).
        run.rings.push(index);
        this.backend.setVringCall(index, callFd);
      });
      for (const index of run.rings) this.backend.setVringEnable(index, true);
      this.activations++;
      // The driver may have queued requests before DRIVER_OK took effect here: let the backend look.
      for (const k of run.kicks) this.notifyOps.signal(k.fd);
    } catch (e) {
      this.teardown();
      throw e;
    }
  }

  /**
   * Refused while the backend runs the rings: the daemon's state (open
   * files, FUSE inodes, where it is in the rings) lives in another process
   * that vhost-user cannot ask for it. Before DRIVER_OK nothing is saved.
   */
  saveState(active: boolean): Record<string, unknown> {
    if (active) throw new NodevmmError('ERR_SNAPSHOT_UNSUPPORTED', `virtio-fs ${this.tag}: the share's state lives in its vhost-user daemon (virtiofsd), which cannot be saved: snapshot without shares, or before the guest mounts them`);
    return {};
  }

  restoreState(state: unknown, path: string, active: boolean): void {
    const r = new StateReader(path, state);
    r.done();
    if (active) throw new NodevmmError('ERR_DEVICE_STATE', `snapshot device state ${path}: an active virtio-fs device cannot be restored (its state was in the vhost-user daemon)`);
  }

  /** A kick that reached userspace (it raced the ioeventfd registration): forward it. */
  notify(index: number): void {
    if (forwardKick(this.running, this.notifyOps, index)) this.userspaceKicks++;
  }

  reset(): void {
    this.teardown();
  }

  /** Stop the backend's rings first (it must not touch guest memory after this), then unregister, then close. */
  private teardown(): void {
    const run = this.running;
    if (!run) return;
    this.running = undefined;
    const { attempt, done } = teardownSteps();
    for (const index of run.rings) {
      attempt(() => this.backend.setVringEnable(index, false));
      attempt(() => this.backend.getVringBase(index));
    }
    closeVhostEventfds(run, this.notifyOps, attempt);
    done();
  }
}
