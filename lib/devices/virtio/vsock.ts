/**
 * virtio-vsock (VIRTIO 1.2 §5.10) with its data path in the host kernel's
 * vhost-vsock: at DRIVER_OK the rx (0) and tx (1) rings are handed to vhost,
 * guest kicks on them reach vhost through ioeventfds on QueueNotify (no exit
 * to userspace), and vhost's interrupts reach the guest through an irqfd on
 * the slot's GSI. The event queue (2) stays here; we never post events (the
 * transport-reset event only matters for live migration, which we lack).
 *
 * The device decides the order of things; the ioctls themselves go through
 * two small interfaces (`VhostVsockOps`, `NotifyOps`) so that order is unit
 * tested with fakes, and lib/vm/vhost-vsock.ts supplies the real ones.
 */
import { NodevmmError } from '../../errors';
import { hex } from '../../util/bytes';
import { StateReader } from '../device-state';
import { REG, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1, readConfigBytes, type VirtioActivation, type VirtioDevice } from './mmio';
import { splitQueueSizes, VirtioQueueError, type SplitQueueLayout } from './queue';
import type { NotifyOps } from '../../hv/partition';
import { closeVhostEventfds, forwardKick, registerCall, registerKick, teardownSteps, type VhostPlumbing } from './vhost-plumbing';

export const VIRTIO_ID_VSOCK = 19;
export const VSOCK_QUEUE = { rx: 0, tx: 1, event: 2 } as const;
/** The queues vhost runs. */
const VHOST_QUEUES = [VSOCK_QUEUE.rx, VSOCK_QUEUE.tx] as const;
/** §5.10.3: SOCK_SEQPACKET. Stream sockets need no bit (implied when no type bit is negotiated). */
export const VIRTIO_VSOCK_F_SEQPACKET = 1n;
/** Ring features the transport always offers: vhost must support them for the rings it runs. */
const TRANSPORT_RING_FEATURES = (1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_F_RING_INDIRECT_DESC) | (1n << VIRTIO_F_RING_EVENT_IDX);
/** QueueNumMax of every queue: 128 entries, as QEMU's vhost-vsock device offers. */
const QUEUE_MAX_SIZE = 128;

/** One guest RAM mapping: vhost addresses rings and buffers by this process's virtual addresses. */
export interface HostRamMapping {
  gpa: number;
  size: number;
  hostAddress: bigint;
}

/** The vhost-vsock ioctls the device issues (include/uapi/linux/vhost.h), one method each. */
export interface VhostVsockOps {
  /** VHOST_GET_FEATURES, read once when the device is built. */
  readonly features: bigint;
  setFeatures(features: bigint): void;
  setMemTable(regions: Array<{ gpa: number; size: number; userAddr: bigint }>): void;
  setVringNum(index: number, num: number): void;
  setVringBase(index: number, num: number): void;
  setVringAddr(index: number, addr: { desc: bigint; avail: bigint; used: bigint }): void;
  /** Also stops vhost from processing the ring. */
  getVringBase(index: number): number;
  /** fd -1 detaches. */
  setVringKick(index: number, fd: number): void;
  setVringCall(index: number, fd: number): void;
  setRunning(running: boolean): void;
}

export interface VirtioVsockOptions {
  /** The guest's CID (config `guest_cid`); vhost was told it when it was opened. */
  cid: number;
  vhost: VhostVsockOps;
  notify: NotifyOps;
  /** Guest RAM as this process maps it (KvmPartition.ramMappings()). */
  ram: () => HostRamMapping[];
}

/** What is registered while vhost runs, so reset can undo exactly that. */
interface Running extends VhostPlumbing {
  vringsSet: number[];
  started: boolean;
}

export class VirtioVsock implements VirtioDevice {
  readonly name = 'vsock';
  readonly deviceId = VIRTIO_ID_VSOCK;
  readonly features: bigint;
  /** vhost signals the used rings through an irqfd: the transport reports them in InterruptStatus. */
  readonly interruptsBypassTransport = true;
  readonly queueMaxSizes: readonly number[] = [QUEUE_MAX_SIZE, QUEUE_MAX_SIZE, QUEUE_MAX_SIZE];
  readonly cid: number;
  private readonly vhost: VhostVsockOps;
  private readonly notifyOps: NotifyOps;
  private readonly ram: () => HostRamMapping[];
  private readonly config = new Uint8Array(8);
  private running: Running | undefined;
  /** rx/tx kicks that exited to userspace instead of going through an ioeventfd (should stay near 0). */
  userspaceKicks = 0;
  /** Times vhost was handed the rings (one per driver probe). */
  activations = 0;

  constructor(opts: VirtioVsockOptions) {
    this.cid = opts.cid;
    this.vhost = opts.vhost;
    this.notifyOps = opts.notify;
    this.ram = opts.ram;
    const missing = TRANSPORT_RING_FEATURES & ~opts.vhost.features;
    if (missing) throw new NodevmmError('ERR_VHOST', `this kernel's vhost-vsock lacks ring features the transport offers (missing bits ${hex(Number(missing))})`);
    // Offer the guest what vhost can do among the socket types; the transport adds the ring bits.
    this.features = opts.vhost.features & (1n << VIRTIO_VSOCK_F_SEQPACKET);
    new DataView(this.config.buffer).setBigUint64(0, BigInt(opts.cid), true);
  }

  /** §5.10.4: le64 guest_cid; read-only. */
  readConfig(offset: number, size: number): number {
    return readConfigBytes(this.config, offset, size);
  }

  /** True while vhost owns the rx and tx rings. */
  get vhostRunning(): boolean {
    return this.running?.started === true;
  }

  activate(ctx: VirtioActivation): void {
    if (!ctx.slot) throw new NodevmmError('ERR_INVALID_ARG', 'virtio-vsock needs its slot (base, gsi) to wire ioeventfds and the irqfd');
    const slot = ctx.slot;
    const layouts = VHOST_QUEUES.map((i) => {
      const l = ctx.layouts[i];
      if (!l) throw new VirtioQueueError(`vsock queue ${i} was not enabled before DRIVER_OK`);
      return l;
    });
    const mappings = this.ram();
    // Every ring must sit inside one mapping: vhost reads it through one userspace pointer.
    const userAddr = (gpa: number, length: number, what: string): bigint => {
      const m = mappings.find((r) => gpa >= r.gpa && gpa + length <= r.gpa + r.size);
      if (!m) throw new VirtioQueueError(`vsock ${what} at gpa ${hex(gpa)} (${length} bytes) is not inside one guest RAM region`);
      return m.hostAddress + BigInt(gpa - m.gpa);
    };
    const addrs = layouts.map((l: SplitQueueLayout, k) => {
      const sizes = splitQueueSizes(l.size);
      const q = VHOST_QUEUES[k];
      return { desc: userAddr(l.descGpa, sizes.desc, `queue ${q} descriptor table`), avail: userAddr(l.availGpa, sizes.avail, `queue ${q} available ring`), used: userAddr(l.usedGpa, sizes.used, `queue ${q} used ring`) };
    });

    const run: Running = { kicks: [], call: undefined, vringsSet: [], started: false };
    this.running = run;
    try {
      // vhost rejects features it does not know; the driver may only have accepted what we offered.
      this.vhost.setFeatures(ctx.features & this.vhost.features);
      this.vhost.setMemTable(mappings.map((m) => ({ gpa: m.gpa, size: m.size, userAddr: m.hostAddress })));
      const callFd = registerCall(run, this.notifyOps, slot.gsi);
      VHOST_QUEUES.forEach((index, k) => {
        const l = layouts[k]!;
        this.vhost.setVringNum(index, l.size);
        // A fresh activation always starts at ring index 0 (the driver just reset or probed).
        this.vhost.setVringBase(index, 0);
        this.vhost.setVringAddr(index, addrs[k]!);
        run.vringsSet.push(index);
        this.vhost.setVringKick(index, registerKick(run, this.notifyOps, index, slot.base + REG.queueNotify));
        this.vhost.setVringCall(index, callFd);
      });
      this.vhost.setRunning(true);
      run.started = true;
      this.activations++;
      // The driver may have filled rx buffers before DRIVER_OK took effect here: let vhost look.
      for (const k of run.kicks) this.notifyOps.signal(k.fd);
    } catch (e) {
      this.teardown();
      throw e;
    }
  }

  /**
   * Refused while vhost runs the rings: the guest's connections, and where
   * vhost is in the rings, live in the host kernel, which cannot hand them
   * over. Before the driver set DRIVER_OK there is nothing to save.
   */
  saveState(active: boolean): Record<string, unknown> {
    if (active) throw new NodevmmError('ERR_SNAPSHOT_UNSUPPORTED', 'vsock: the guest driver handed its rings to the host kernel (vhost-vsock), whose connection state cannot be saved: snapshot without vsock, or before the guest loads its driver');
    return {};
  }

  restoreState(state: unknown, path: string, active: boolean): void {
    const r = new StateReader(path, state);
    r.done();
    if (active) throw new NodevmmError('ERR_DEVICE_STATE', `snapshot device state ${path}: an active vhost-vsock device cannot be restored (its state was in the host kernel)`);
  }

  /**
   * A kick that reached userspace: the event queue, or an rx/tx kick that
   * raced the ioeventfd registration. Forward the latter to vhost.
   */
  notify(index: number): void {
    if (forwardKick(this.running, this.notifyOps, index)) this.userspaceKicks++;
  }

  reset(): void {
    this.teardown();
  }

  /** Stop vhost first (it must not touch guest memory after this), then unregister, then close. */
  private teardown(): void {
    const run = this.running;
    if (!run) return;
    this.running = undefined;
    const { attempt, done } = teardownSteps();
    if (run.started) attempt(() => this.vhost.setRunning(false));
    for (const index of run.vringsSet) {
      attempt(() => this.vhost.getVringBase(index));
      attempt(() => this.vhost.setVringKick(index, -1));
      attempt(() => this.vhost.setVringCall(index, -1));
    }
    closeVhostEventfds(run, this.notifyOps, attempt);
    done();
  }
}
