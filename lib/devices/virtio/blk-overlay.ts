/**
 * Copy-on-write disks for VMs that share one base image (QEMU's
 * `snapshot=on`): reads come from the base, opened read-only and never
 * written; writes go to a private sparse overlay file of the same size at the
 * same offsets, and a cluster map in memory (one bit per OVERLAY_CLUSTER_BYTES
 * cluster) says which clusters the overlay holds. The first write into a
 * cluster copies that cluster from the base into the overlay unless the write
 * covers it whole (read-modify-write of partial clusters), then marks it.
 *
 * Concurrency: virtio-blk runs a queue's requests at once. A cluster being
 * brought into the overlay is locked until its bit is set: other writes to it
 * wait (so a base copy can never land over newer data), reads do not (until
 * the bit is set they read the base, which is still the cluster's content).
 * Locks are taken in ascending cluster order, so two requests never wait on
 * each other. Flush is a datasync of the overlay; discard does nothing, as
 * for raw images.
 *
 * A temporary overlay file is unlinked right after it is created: it lives
 * as long as its fd, so it is gone when the VM stops, and also when Node is
 * killed. A kept overlay (`overlay: PATH`, overlay-file.ts) also stores the
 * map: `OverlayFiles.saveMap` writes it at each flush, after the data it
 * describes is synced.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { GuestBuffer } from '../../memory/guest-memory';
import { sliceBuffers, type BlockBackend } from './blk';

export const OVERLAY_CLUSTER_BYTES = 64 * 1024;

/** One bit per cluster: set once the overlay holds the cluster. */
export class ClusterMap {
  readonly clusters: number;
  /**
   * Clusters being brought into the overlay, each until its bit is set. Kept
   * with the map, not the backend: after a guest reboot the new machine's
   * backend must also wait for the old one's requests still in flight.
   */
  readonly locks = new Map<number, Promise<void>>();
  private readonly bits: Uint8Array;
  private setCount = 0;
  /** A bit was set since the last snapshot(). */
  dirty = false;

  /** An empty map, or one with `bits` (as snapshot() returned them; bits past the last cluster must be clear). */
  constructor(sizeBytes: number, readonly clusterBytes: number = OVERLAY_CLUSTER_BYTES, bits?: Uint8Array) {
    this.clusters = Math.ceil(sizeBytes / clusterBytes);
    this.bits = new Uint8Array(Math.ceil(this.clusters / 8));
    if (bits) {
      if (bits.length !== this.bits.length) throw new RangeError(`a cluster map of ${this.clusters} clusters is ${this.bits.length} bytes, not ${bits.length}`);
      this.bits.set(bits);
      const spare = this.clusters % 8;
      if (spare && this.bits[this.bits.length - 1]! >> spare) throw new RangeError(`the cluster map has bits set past its last cluster (${this.clusters - 1})`);
      for (const b of this.bits) for (let v = b; v; v &= v - 1) this.setCount++;
    }
  }

  has(cluster: number): boolean {
    return (this.bits[cluster >> 3]! & (1 << (cluster & 7))) !== 0;
  }

  set(cluster: number): void {
    if (this.has(cluster)) return;
    this.bits[cluster >> 3]! |= 1 << (cluster & 7);
    this.setCount++;
    this.dirty = true;
  }

  /** A copy of the bits as they are now; clears `dirty`. */
  snapshot(): Uint8Array {
    this.dirty = false;
    return this.bits.slice();
  }

  /** Clusters the overlay holds. */
  get allocated(): number {
    return this.setCount;
  }
}

/** The raw file operations the overlay needs beside the two block backends (base cluster copies). */
export interface OverlayFiles {
  /** The base image, opened read-only. */
  baseFd: number;
  /** The overlay, opened read-write, at least as large as the base. */
  overlayFd: number;
  sizeBytes: number;
  /**
   * A kept overlay's map store: writes a snapshot of the map into the file
   * and resolves once it is there (not yet synced). Without it the map lives
   * only in memory (a temporary overlay).
   */
  saveMap?: (bits: Uint8Array) => Promise<void>;
}

export interface OverlayStats {
  /** Clusters copied from the base because a write covered them only in part. */
  copiedClusters: number;
  /** Clusters a write covered whole (no copy). */
  wholeClusters: number;
}

/**
 * A block backend over base and overlay: `base` and `overlay` move bytes
 * between each file and guest buffers (directFileBackend or
 * bounceFileBackend on files.baseFd / files.overlayFd).
 */
export class OverlayBackend implements BlockBackend {
  readonly map: ClusterMap;
  readonly stats: OverlayStats = { copiedClusters: 0, wholeClusters: 0 };
  /** Flushes of a kept overlay, one after the other, so map snapshots reach the file in order. */
  private syncChain: Promise<void> = Promise.resolve();

  constructor(
    private readonly files: OverlayFiles,
    private readonly base: BlockBackend,
    private readonly overlay: BlockBackend,
    /** The overlay's cluster map: a new one (with this cluster size), or one kept from an earlier attachment of the same overlay. */
    map: ClusterMap | number = OVERLAY_CLUSTER_BYTES,
  ) {
    this.map = typeof map === 'number' ? new ClusterMap(files.sizeBytes, map) : map;
  }

  private get clusterBytes(): number {
    return this.map.clusterBytes;
  }

  async read(buffers: readonly GuestBuffer[], position: number): Promise<void> {
    let length = 0;
    for (const b of buffers) length += b.length;
    const cb = this.clusterBytes;
    const end = position + length;
    const ops: Promise<void>[] = [];
    // Runs of clusters on the same side, each one read.
    for (let at = position; at < end; ) {
      const inOverlay = this.map.has(Math.floor(at / cb));
      let runEnd = Math.min(end, (Math.floor(at / cb) + 1) * cb);
      while (runEnd < end && this.map.has(Math.floor(runEnd / cb)) === inOverlay) runEnd = Math.min(end, runEnd + cb);
      const part = sliceBuffers(buffers, at - position, runEnd - at);
      ops.push((inOverlay ? this.overlay : this.base).read(part, at));
      at = runEnd;
    }
    await Promise.all(ops);
  }

  async write(buffers: readonly GuestBuffer[], position: number): Promise<void> {
    let length = 0;
    for (const b of buffers) length += b.length;
    await this.intoOverlay(position, length, () => this.overlay.write(buffers, position));
  }

  async writeZeroes(position: number, length: number): Promise<void> {
    await this.intoOverlay(position, length, () => this.overlay.writeZeroes(position, length));
  }

  /**
   * A temporary overlay: sync its data. A kept one, when bits were set: take a
   * snapshot of the map (every bit in it has its data written), sync the data,
   * write the snapshot, sync again, so a saved bit never points at data that
   * did not reach the disk. Flushes run one at a time, so the file's map only grows.
   */
  datasync(): Promise<void> {
    const save = this.files.saveMap;
    if (!save) return this.overlay.datasync();
    const run = this.syncChain.then(async () => {
      if (!this.map.dirty) return this.overlay.datasync();
      const bits = this.map.snapshot();
      try {
        await this.overlay.datasync();
        await save(bits);
      } catch (e) {
        this.map.dirty = true;
        throw e;
      }
      await this.overlay.datasync();
    });
    this.syncChain = run.catch(() => {});
    return run;
  }

  /**
   * Make the clusters of [position, position+length) the overlay's, then run
   * `op` (the write into the overlay at the same offsets).
   */
  private async intoOverlay(position: number, length: number, op: () => Promise<void>): Promise<void> {
    if (length <= 0) return op();
    const cb = this.clusterBytes;
    const first = Math.floor(position / cb);
    const last = Math.floor((position + length - 1) / cb);
    /** Clusters this write covers whole and holds locked until its data is in. */
    const held: Array<{ cluster: number; release: () => void }> = [];
    try {
      for (let c = first; c <= last; c++) {
        for (let lock = this.map.locks.get(c); lock; lock = this.map.locks.get(c)) await lock;
        if (this.map.has(c)) continue;
        const start = c * cb;
        const whole = position <= start && position + length >= Math.min(start + cb, this.files.sizeBytes);
        let release!: () => void;
        this.map.locks.set(c, new Promise<void>((r) => (release = r)));
        const unlock = () => {
          this.map.locks.delete(c);
          release();
        };
        if (whole) {
          held.push({ cluster: c, release: unlock });
          continue;
        }
        try {
          await this.copyFromBase(c);
          this.map.set(c);
          this.stats.copiedClusters++;
        } finally {
          unlock();
        }
      }
      await op();
      for (const h of held) {
        this.map.set(h.cluster);
        this.stats.wholeClusters++;
      }
    } finally {
      for (const h of held) h.release();
    }
  }

  /** Copy cluster `c` of the base into the overlay (the part inside the image). */
  private async copyFromBase(c: number): Promise<void> {
    const start = c * this.clusterBytes;
    const n = Math.min(this.clusterBytes, this.files.sizeBytes - start);
    const buf = new Uint8Array(n);
    for (let got = 0; got < n; ) {
      const r = await new Promise<number>((resolve, reject) => fs.read(this.files.baseFd, buf, got, n - got, start + got, (e, k) => (e ? reject(e) : resolve(k))));
      if (r === 0) break; // the base is shorter than it was: the rest stays zero
      got += r;
    }
    for (let put = 0; put < n; ) {
      put += await new Promise<number>((resolve, reject) => fs.write(this.files.overlayFd, buf, put, n - put, start + put, (e, k) => (e ? reject(e) : resolve(k))));
    }
  }
}

/** Where temporary overlays go: $NODEVMM_OVERLAY_DIR, else the OS temp directory. */
export function overlayDirectory(): string {
  return process.env.NODEVMM_OVERLAY_DIR || os.tmpdir();
}

/**
 * A fresh sparse overlay of `sizeBytes`, already unlinked: only the returned
 * fd keeps it. Throws with one sentence naming the directory.
 */
export function createTempOverlay(sizeBytes: number, dir: string = overlayDirectory()): number {
  let tmp: string | undefined;
  try {
    tmp = fs.mkdtempSync(path.join(dir, 'nodevmm-overlay-'));
    const file = path.join(tmp, 'overlay');
    const fd = fs.openSync(file, 'wx+', 0o600);
    try {
      fs.ftruncateSync(fd, sizeBytes);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    fs.unlinkSync(file);
    return fd;
  } catch (e) {
    throw new Error(`cannot create a temporary disk overlay in ${dir}: ${(e as Error).message}`, { cause: e });
  } finally {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
}
