/**
 * The virtio-mmio devices of a VM: which slot (address, GSI) each configured
 * device gets, opening disk images with one-sentence errors, and attaching
 * transports to the MMIO bus and IRQ lines. Slots come from the machine's
 * layout (x86: lib/arch/x86_64/layout.ts, the default; arm64: the caller's
 * placement from lib/arch/aarch64/layout.ts); the same list feeds the DSDT
 * (LNRO0005 nodes) or the device tree (virtio,mmio nodes), so what the guest
 * is told and what is wired cannot drift apart.
 */
import * as fs from 'node:fs';
import { VIRTIO_MMIO_GSIS, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_START } from '../arch/x86_64/layout';
import type { VirtioMmioDesc } from '../acpi/dsdt';
import { NodevmmError } from '../errors';
import type { IoBus } from '../hv/io-bus';
import type { GuestMemory } from '../memory/guest-memory';
import type { IrqLine } from '../devices/types';
import { BatchingSink } from '../devices/serial-sinks';
import type { VirtioBlk } from '../devices/virtio/blk';
import type { DirectFileIo } from '../devices/virtio/blk-backends';
import type { VirtioConsole } from '../devices/virtio/console';
import type { NetBackend, VirtioNet } from '../devices/virtio/net';
import type { VirtioDevice, VirtioMmioOptions, VirtioMmioState, VirtioMmioTransport } from '../devices/virtio/mmio';
import { describeValue, deviceStateError, StateReader } from '../devices/device-state';
import type { VirtioRng } from '../devices/virtio/rng';
import type { HostRamMapping, VhostVsockOps, VirtioVsock } from '../devices/virtio/vsock';
import type { NotifyOps, Partition, PartitionIo } from '../hv/partition';
import type { ClusterMap } from '../devices/virtio/blk-overlay';
import type { ImageStorage } from '../devices/virtio/blk-backends';
import type { SharedRamMapping, VhostUserDeviceOps, VirtioFs } from '../devices/virtio/fs';
import type { ResolvedVmConfig } from './config';
import type { OpenedDisk } from './disk-images';

// Disk images, ioeventfd kicks and vhost-vsock load when a VM has such a device, not with every
// VM: a boot with none starts without compiling and running them (CLI start-up time, docs/benchmarks.md).
const diskImages = () => require('./disk-images') as typeof import('./disk-images');
const queueNotifiers = () => require('./queue-notifier') as typeof import('./queue-notifier');
const vhostVsock = () => require('./vhost-vsock') as typeof import('./vhost-vsock');
import type { SerialPort } from './serial-port';

export type VirtioSlotKind = { kind: 'blk'; index: number } | { kind: 'net'; index: number } | { kind: 'fs'; index: number } | { kind: 'vsock' } | { kind: 'rng' } | { kind: 'console' };

export interface VirtioSlot extends VirtioMmioDesc {
  /** The slot's interrupt: a GSI on x86, an SPI number (INTID - 32) on arm64. */
  irq: number;
  device: VirtioSlotKind;
}

/** Where a machine's slots go: the first window, the window size, one interrupt per slot (a GSI on x86, an SPI on arm64). */
export interface VirtioSlotPlacement {
  start: number;
  slotSize: number;
  irqs: readonly number[];
}

/** x86: below the IOAPIC, IOAPIC pins 16-23. */
export const X86_VIRTIO_PLACEMENT: VirtioSlotPlacement = { start: VIRTIO_MMIO_START, slotSize: VIRTIO_MMIO_SLOT_SIZE, irqs: VIRTIO_MMIO_GSIS };

/** Slots in a fixed order (disks, net, shares, vsock, rng, console), so a config always gives the same addresses. */
export function virtioSlots(
  cfg: Pick<ResolvedVmConfig, 'disks' | 'rng' | 'virtioConsole'> & { net?: ResolvedVmConfig['net']; vsock?: ResolvedVmConfig['vsock']; shares?: ResolvedVmConfig['shares'] },
  placement: VirtioSlotPlacement = X86_VIRTIO_PLACEMENT,
): VirtioSlot[] {
  const kinds: VirtioSlotKind[] = [
    ...cfg.disks.map((_, index) => ({ kind: 'blk' as const, index })),
    ...(cfg.net ?? []).map((_, index) => ({ kind: 'net' as const, index })),
    ...(cfg.shares ?? []).map((_, index) => ({ kind: 'fs' as const, index })),
  ];
  if (cfg.vsock) kinds.push({ kind: 'vsock' });
  if (cfg.rng) kinds.push({ kind: 'rng' });
  if (cfg.virtioConsole) kinds.push({ kind: 'console' });
  if (kinds.length > placement.irqs.length) {
    throw new NodevmmError('ERR_CONFIG', `${kinds.length} virtio devices were asked for, at most ${placement.irqs.length} fit (one interrupt each)`);
  }
  // Every slot is edge-triggered. vsock and fs: the backend's irqfd delivers one pulse per
  // interrupt, and an edge latched while the guest handles the last one is
  // never lost (a level irqfd would need a resamplefd round trip through
  // userspace). The userspace devices: with an edge nothing needs to happen
  // when the driver ACKs, so the vCPU threads answer InterruptStatus and
  // InterruptACK themselves, two exits per interrupt that never reach JS.
  return kinds.map((device, i) => ({
    base: placement.start + i * placement.slotSize,
    size: placement.slotSize,
    irq: placement.irqs[i]!,
    trigger: 'edge',
    device,
  }));
}

export type { OpenedDisk } from './disk-images';

/** See disk-images.ts openDisk (loaded on first use). */
export function openDisk(...args: Parameters<typeof import('./disk-images').openDisk>): OpenedDisk {
  return diskImages().openDisk(...args);
}

/**
 * A disk with a copy-on-write overlay: the base opened read-only, the overlay
 * file (unlinked for `overlay: 'temp'`, kept for `overlay: PATH`), and the
 * cluster map, which together are the disk's content; kept across guest
 * reboots by the VM.
 */
export interface OverlayDisk {
  base: OpenedDisk;
  overlayFd: number;
  map: ClusterMap;
  /** A kept overlay's map store (OverlayFiles.saveMap); absent for a temporary one. */
  saveMap?: (bits: Uint8Array) => Promise<void>;
  /** A kept overlay's file (where its I/O goes: tmpfs or disk); absent for a temporary one. */
  overlayPath?: string;
  /** Close both fds (after the devices using them went idle); a kept overlay's map is saved and synced first. */
  close(): void;
}

/**
 * Open `path` read-only as the base of an overlay: a fresh temporary one
 * (`overlay` 'temp'), or the kept overlay file `overlay` (created when
 * missing, lib/vm/kept-overlay.ts); one-sentence errors name the file or
 * directory. `owner` holds the image locks (see openDisk): the base shared,
 * a kept overlay exclusive.
 */
export function openOverlayDisk(path: string, owner?: object, overlay: string = 'temp'): OverlayDisk {
  // The base is only read, never written, so any number of VMs may share it:
  // its image lock is the shared one, held for the life of the overlay.
  const base = openDisk(path, true, owner);
  if (overlay !== 'temp') {
    let kept: import('./kept-overlay').KeptOverlay;
    try {
      kept = (require('./kept-overlay') as typeof import('./kept-overlay')).openKeptOverlay(overlay, base, owner ?? {});
    } catch (e) {
      base.close();
      throw e;
    }
    let closed = false;
    return {
      base,
      overlayFd: kept.disk.fd,
      map: kept.map,
      saveMap: kept.saveMap,
      overlayPath: overlay,
      close: () => {
        if (closed) return;
        closed = true;
        try {
          // Every request finished: all data is written, so every bit may be saved (after a sync).
          fs.fdatasyncSync(kept.disk.fd);
          const bits = kept.map.snapshot();
          for (let put = 0; put < bits.length; ) put += fs.writeSync(kept.disk.fd, bits, put, bits.length - put, kept.layout.mapOffset + put);
          fs.fdatasyncSync(kept.disk.fd);
        } catch (e) {
          process.emitWarning(`overlay ${overlay}: the cluster map could not be saved at stop (writes since the guest's last flush are lost): ${(e as Error).message}`);
        } finally {
          kept.disk.close();
          base.close();
        }
      },
    };
  }
  const { ClusterMap, createTempOverlay } = require('../devices/virtio/blk-overlay') as typeof import('../devices/virtio/blk-overlay');
  let overlayFd: number;
  try {
    overlayFd = createTempOverlay(base.sizeBytes);
  } catch (e) {
    base.close();
    throw new NodevmmError('ERR_DISK', `disk image ${path},snapshot: ${(e as Error).message}`, { cause: e });
  }
  let closed = false;
  return {
    base,
    overlayFd,
    map: new ClusterMap(base.sizeBytes),
    close: () => {
      if (closed) return;
      closed = true;
      base.close();
      fs.closeSync(overlayFd);
    },
  };
}

/** Async positional I/O on an fd, on libuv's thread pool. */
export interface AttachedVirtio {
  transports: VirtioMmioTransport[];
  disks: VirtioBlk[];
  nics: VirtioNet[];
  /** One per cfg.shares entry. */
  shares: VirtioFs[];
  rng: VirtioRng | undefined;
  console: VirtioConsole | undefined;
  vsock: VirtioVsock | undefined;
  flush(): void;
  /** Detach the console port and the NICs from their backends; close image files once in-flight requests finished. */
  dispose(): void;
  /** Resolves once no disk request of this machine is in flight (caller-owned overlays may be closed then). */
  disksIdle(): Promise<void>;
  /**
   * Before a snapshot of a paused VM: wait until no disk request is in
   * flight, at most `timeoutMs`; rejects with a one-sentence ERR_SNAPSHOT
   * error naming the disk that is still busy.
   */
  quiesce(timeoutMs: number): Promise<void>;
  /** Every slot's transport and device state, in slot order (see VirtioSlotState). */
  snapshot(): VirtioSlotState[];
  /** Take saved slot states into devices that have not run (errors name `path` and the field). */
  restore(state: unknown, path: string): void;
}

/** One virtio slot in a snapshot: which device sits where, and its transport's state. */
export interface VirtioSlotState {
  /** vda, vdb, ..., net0, fs0, vsock, rng, console. */
  name: string;
  base: number;
  irq: number;
  /** For a disk: the image the guest saw, as configured (restore does not require the same path: a clone may use a copy). */
  disk?: { path: string; readonly: boolean; overlay: 'temp' | 'none' };
  transport: VirtioMmioState;
}

/** How a slot is called in snapshots and their errors. */
export function virtioSlotName(kind: VirtioSlotKind): string {
  if (kind.kind === 'blk') return `vd${String.fromCharCode(97 + kind.index)}`;
  if (kind.kind === 'net' || kind.kind === 'fs') return `${kind.kind}${kind.index}`;
  return kind.kind;
}

/** What virtio-vsock runs on: vhost opened for the CID, KVM's eventfd wiring, the RAM mappings. */
export interface VsockBackends {
  vhost: VhostVsockOps & { close(): void };
  notify: NotifyOps;
  ram: () => HostRamMapping[];
}

/** What virtio-fs runs on: the vhost-user connection of each share (owned by the VM), KVM's eventfd wiring, the RAM and its memfds. */
export interface FsBackends {
  /** One per cfg.shares entry. */
  shares: readonly VhostUserDeviceOps[];
  notify: NotifyOps;
  ram: () => SharedRamMapping[];
}

export interface AttachVirtioOptions {
  cfg: Pick<ResolvedVmConfig, 'disks' | 'rng' | 'virtioConsole'> & { net?: ResolvedVmConfig['net']; vsock?: ResolvedVmConfig['vsock']; shares?: ResolvedVmConfig['shares'] };
  /** Needed when cfg.shares is not empty. */
  fsBackends?: FsBackends;
  slots: readonly VirtioSlot[];
  /** One per cfg.net entry, owned (and closed) by the caller: they outlive a machine rebuild. */
  netBackends?: readonly NetBackend[];
  memory: GuestMemory;
  mmio: IoBus;
  irq(gsi: number): IrqLine;
  consolePort?: SerialPort | undefined;
  /** Opens the vsock backends for a CID (throws a one-sentence error when it cannot). */
  vsockBackends?: (cid: number) => VsockBackends;
  /**
   * Kicks without MMIO exits for the userspace devices (lib/vm/queue-notifier.ts), per slot
   * base address; vsock registers its own ioeventfds for vhost.
   */
  queueNotifier?: (base: number) => VirtioMmioOptions['queueNotifier'];
  /** Where a device's host bug outside an exit dispatch goes (Partition.reportHostError). */
  onHostError?: (error: Error) => void;
  /** Disk I/O straight to and from guest pages (a partition's PartitionIo); without it disks copy through JS buffers. */
  directIo?: DirectFileIo;
  /**
   * Per cfg.disks index, the open overlay of an `overlay: 'temp'` disk, owned by the
   * caller (kept across machine rebuilds). Overlay disks without one get an
   * overlay of this attachment's own, closed by dispose().
   */
  overlays?: readonly (OverlayDisk | undefined)[];
}

/** Open disks, build the devices and put their transports on the MMIO bus. */
/**
 * The virtio device models, loaded when a VM has a virtio device: a VM without
 * one (a tiny guest, a plain `nodevmm run`) never compiles their ~80 KB, which
 * is part of the CLI's start-up time (docs/benchmarks.md).
 */
function deviceModels() {
  return {
    ...(require('../devices/virtio/blk') as typeof import('../devices/virtio/blk')),
    ...(require('../devices/virtio/blk-backends') as typeof import('../devices/virtio/blk-backends')),
    ...(require('../devices/virtio/blk-overlay') as typeof import('../devices/virtio/blk-overlay')),
    ...(require('../devices/virtio/console') as typeof import('../devices/virtio/console')),
    ...(require('../devices/virtio/fs') as typeof import('../devices/virtio/fs')),
    ...(require('../devices/virtio/net') as typeof import('../devices/virtio/net')),
    ...(require('../devices/virtio/mmio') as typeof import('../devices/virtio/mmio')),
    ...(require('../devices/virtio/rng') as typeof import('../devices/virtio/rng')),
    ...(require('../devices/virtio/vsock') as typeof import('../devices/virtio/vsock')),
  };
}

export function attachVirtioDevices(opts: AttachVirtioOptions): AttachedVirtio {
  const opened: OpenedDisk[] = [];
  /** Overlays this attachment made (no caller-owned one): closed with the image fds. */
  const ownOverlays: OverlayDisk[] = [];
  /** Per disk: its overlay, when it has one. */
  const diskOverlays: Array<OverlayDisk | undefined> = [];
  const closeOpened = () => {
    for (const o of opened) o?.close();
    for (const o of ownOverlays) o.close();
  };
  try {
    // The config entry is the lock's owner: it stays the same across this VM's machine rebuilds.
    opts.cfg.disks.forEach((d, i) => {
      if (d.overlay !== undefined) {
        let ovl = opts.overlays?.[i];
        if (!ovl) ownOverlays.push((ovl = openOverlayDisk(d.path, d, d.overlay)));
        diskOverlays[i] = ovl;
      } else opened[i] = openDisk(d.path, !!d.readonly, d);
    });
  } catch (e) {
    closeOpened();
    throw e;
  }
  let vsockBackends: VsockBackends | undefined;
  const vsockCid = opts.cfg.vsock?.cid;
  if (vsockCid !== undefined) {
    try {
      if (!opts.vsockBackends) throw new NodevmmError('ERR_VSOCK', 'vsock is configured but this machine has no vhost backend');
      vsockBackends = opts.vsockBackends(vsockCid);
    } catch (e) {
      closeOpened();
      throw e;
    }
  }
  const disks: VirtioBlk[] = [];
  const nics: VirtioNet[] = [];
  const shares: VirtioFs[] = [];
  const transports: VirtioMmioTransport[] = [];
  let vsock: VirtioVsock | undefined;
  let rng: VirtioRng | undefined;
  let console: VirtioConsole | undefined;
  let sink: BatchingSink | undefined;
  try {
    const { VirtioBlk, directFileBackend, bounceFileBackend, imageStorage, OverlayBackend, overlayDirectory, VirtioNet, parseMac, VirtioVsock, VirtioRng, VirtioConsole, VirtioFs, VirtioMmioTransport } = opts.slots.length ? deviceModels() : ({} as ReturnType<typeof deviceModels>);
    for (const slot of opts.slots) {
      let device: VirtioDevice;
      if (slot.device.kind === 'blk') {
        const fileBackend = (fd: number, storage: ImageStorage) => (opts.directIo ? directFileBackend(fd, opts.directIo, storage) : bounceFileBackend(fd, opts.memory));
        const ovl = diskOverlays[slot.device.index];
        const o = ovl?.base ?? opened[slot.device.index]!;
        const backend = ovl
          ? new OverlayBackend({ baseFd: ovl.base.fd, overlayFd: ovl.overlayFd, sizeBytes: ovl.base.sizeBytes, ...(ovl.saveMap ? { saveMap: ovl.saveMap } : {}) }, fileBackend(ovl.base.fd, imageStorage(ovl.base.path)), fileBackend(ovl.overlayFd, imageStorage(ovl.overlayPath ?? overlayDirectory())), ovl.map)
          : fileBackend(o.fd, imageStorage(o.path));
        // An overlay disk is writable although its base is opened read-only.
        const blk = new VirtioBlk({ name: `vd${String.fromCharCode(97 + slot.device.index)}`, backend, sizeBytes: o.sizeBytes, readonly: ovl ? false : o.readonly });
        disks.push(blk);
        device = blk;
      } else if (slot.device.kind === 'net') {
        const i = slot.device.index;
        const backend = opts.netBackends?.[i];
        const n = opts.cfg.net?.[i];
        if (!backend || !n) throw new NodevmmError('ERR_INVALID_ARG', `virtio-net ${i} has no backend (open its TAP first)`);
        const nic = new VirtioNet({ backend, mac: parseMac(n.mac)! });
        nics.push(nic);
        device = nic;
      } else if (slot.device.kind === 'fs') {
        const i = slot.device.index;
        const share = opts.cfg.shares?.[i];
        const backend = opts.fsBackends?.shares[i];
        if (!share || !backend) throw new NodevmmError('ERR_INVALID_ARG', `virtio-fs ${i} has no backend (start its virtiofsd first)`);
        const fs = new VirtioFs({ tag: share.tag, backend, notify: opts.fsBackends!.notify, ram: opts.fsBackends!.ram });
        shares.push(fs);
        device = fs;
      } else if (slot.device.kind === 'vsock') {
        const b = vsockBackends!;
        device = vsock = new VirtioVsock({ cid: vsockCid!, vhost: b.vhost, notify: b.notify, ram: b.ram });
      } else if (slot.device.kind === 'rng') {
        device = rng = new VirtioRng();
      } else {
        const port = opts.consolePort;
        sink = new BatchingSink((chunk: Uint8Array) => port?.deliver(chunk));
        device = console = new VirtioConsole({ sink, onRxSpace: () => port?.rxSpace() });
        const c = console;
        port?.attach({ enqueue: (b) => c.enqueue(b) });
      }
      // vsock and fs hand their rings to a backend, which gets the kicks through ioeventfds of their own.
      // The console's kicks stay MMIO exits, answered before the vCPU goes on: after each transmit
      // kick Linux's virtio_console spins with interrupts off until the device hands the buffer back
      // (__send_to_port, for every hvc write). Through an ioeventfd that spin lasted until the event
      // loop got to the kick, a vCPU burning its CPU meanwhile; in a one-CPU emulated host it never
      // ended (the host's own timer interrupt was not delivered during it: docs/testing.md).
      const ownKicks = slot.device.kind === 'vsock' || slot.device.kind === 'fs';
      const queueNotifier = ownKicks || slot.device.kind === 'console' ? undefined : opts.queueNotifier?.(slot.base);
      const t = new VirtioMmioTransport({ memory: opts.memory, irq: opts.irq(slot.irq), device, slot: { base: slot.base, gsi: slot.irq }, trigger: slot.trigger ?? 'level', queueNotifier, ...(opts.onHostError ? { onHostError: opts.onHostError } : {}) });
      const interruptStatus = t.interruptStatusRegisters;
      const range = opts.mmio.register(slot.base, slot.size, t, interruptStatus ? { interruptStatus } : {});
      if (range.shadow && interruptStatus) t.shareInterruptStatus(range.shadow.word, range.shadow.held);
      transports.push(t);
    }
  } catch (e) {
    // Nothing of this machine runs yet: give back the CID and the image fds.
    vsockBackends?.vhost.close();
    closeOpened();
    throw e;
  }
  return {
    transports,
    disks,
    nics,
    shares,
    rng,
    console,
    vsock,
    flush: () => sink?.flush(),
    disksIdle: () => Promise.all(disks.map((d) => d.idle())).then(() => undefined),
    quiesce: async (timeoutMs: number) => {
      sink?.flush();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), timeoutMs)));
      try {
        if ((await Promise.race([Promise.all(disks.map((d) => d.idle())), late])) !== 'late') return;
      } finally {
        clearTimeout(timer);
      }
      const busy = disks.find((d) => d.requestsInFlight > 0);
      if (busy) throw new NodevmmError('ERR_SNAPSHOT', `${busy.name} still has ${busy.requestsInFlight} requests in flight after ${timeoutMs} ms, so no snapshot was taken (a stuck disk?)`);
    },
    snapshot: () =>
      opts.slots.map((slot, i): VirtioSlotState => {
        const name = virtioSlotName(slot.device);
        let disk: VirtioSlotState['disk'];
        if (slot.device.kind === 'blk') {
          const d = opts.cfg.disks[slot.device.index]!;
          const ovl = diskOverlays[slot.device.index];
          // The overlay is an unlinked file that dies with this VM: writes in it would be missing from the snapshot.
          if (ovl && ovl.map.allocated > 0) throw new NodevmmError('ERR_SNAPSHOT_UNSUPPORTED', `${name}: the guest wrote ${ovl.map.allocated} clusters into its throwaway overlay, which a snapshot cannot keep: snapshot before writing, or without overlay: 'temp'`);
          disk = { path: d.path, readonly: !!d.readonly, overlay: d.overlay === 'temp' ? 'temp' : 'none' };
        }
        return { name, base: slot.base, irq: slot.irq, ...(disk ? { disk } : {}), transport: transports[i]!.snapshot() };
      }),
    restore: (state: unknown, path: string) => {
      if (!Array.isArray(state)) throw deviceStateError(path, `expected an array of slots, got ${describeValue(state)}`);
      if (state.length !== transports.length) throw deviceStateError(path, `the snapshot has ${state.length} virtio slots, this machine ${transports.length}`);
      // All slots are checked for the right place before any device takes state.
      const readers = state.map((raw, i) => {
        const slot = opts.slots[i]!;
        const name = virtioSlotName(slot.device);
        const r = new StateReader(`${path}[${i}]`, raw);
        const saved = r.string('name', 16);
        if (saved !== name) throw r.error('name', `the snapshot has ${JSON.stringify(saved)} in slot ${i}, this machine ${name}`);
        const base = r.int('base', 0, Number.MAX_SAFE_INTEGER);
        if (base !== slot.base) throw r.error('base', `the snapshot has ${name} at 0x${base.toString(16)}, this machine at 0x${slot.base.toString(16)}`);
        const irq = r.int('irq', 0, 0xffff);
        if (irq !== slot.irq) throw r.error('irq', `the snapshot has ${name} on interrupt ${irq}, this machine on ${slot.irq}`);
        if (slot.device.kind === 'blk') {
          const d = r.child('disk');
          d.string('path', 4096);
          d.bool('readonly');
          d.oneOf('overlay', ['temp', 'none'] as const);
          d.done();
        } else if (r.has('disk')) throw r.error('disk', `only a disk slot records an image, ${name} is not one`);
        const transport = r.raw('transport');
        r.done();
        return { transport, name };
      });
      readers.forEach(({ transport, name }, i) => transports[i]!.restoreState(transport, `${path}.${name}`));
    },
    dispose: () => {
      sink?.flush();
      opts.consolePort?.attach(undefined);
      for (const t of transports) {
        t.dispose();
        try {
          t.device.reset();
        } catch (e) {
          // Disposal runs from stop paths with no caller to throw to; the rest must still be released.
          process.emitWarning(`${t.name}: reset while disposing failed: ${(e as Error).message}`);
        }
      }
      // After the device stopped vhost and dropped its registrations: frees the CID.
      vsockBackends?.vhost.close();
      for (const nic of nics) nic.close();
      // Requests already on the thread pool still use the fds; close after them.
      void Promise.all(disks.map((d) => d.idle())).then(() => {
        // Synchronously: the image lock goes with the last fd, and the next VM on this image must find it gone.
        for (const o of opened) o?.close();
        for (const o of ownOverlays) o.close();
      });
    },
  };
}

/**
 * A machine's virtio devices on its partition, wired the same on every
 * architecture: the partition's MMIO bus and memory, ioeventfd kicks, vhost-vsock
 * with the partition's eventfds and RAM, disk I/O straight to guest pages, and
 * host errors reported through the partition. `irq` maps a slot's interrupt
 * (a GSI on x86, an SPI on arm64) to a line.
 */
export function attachPartitionVirtio(
  cfg: AttachVirtioOptions['cfg'],
  slots: readonly VirtioSlot[],
  partition: Partition & PartitionIo,
  irq: (n: number) => IrqLine,
  owned: { virtioConsole?: SerialPort | undefined; netBackends?: readonly NetBackend[] | undefined; shareBackends?: readonly VhostUserDeviceOps[] | undefined; overlays?: readonly (OverlayDisk | undefined)[] | undefined },
): AttachedVirtio {
  return attachVirtioDevices({
    cfg,
    slots,
    memory: partition.memory,
    mmio: partition.mmio,
    irq,
    consolePort: owned.virtioConsole,
    netBackends: owned.netBackends ?? [],
    overlays: owned.overlays ?? [],
    fsBackends: { shares: owned.shareBackends ?? [], notify: partition.notifyOps(), ram: () => partition.ramMappings() },
    vsockBackends: (cid) => ({ vhost: vhostVsock().openVhostVsock(cid), notify: partition.notifyOps(), ram: () => partition.ramMappings() }),
    queueNotifier: (base) => queueNotifiers().ioeventfdQueueNotifier(partition.notifyOps(), base, (e) => partition.reportHostError(e)),
    onHostError: (e) => partition.reportHostError(e),
    directIo: partition,
  });
}
