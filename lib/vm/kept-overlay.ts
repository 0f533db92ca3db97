/**
 * Kept copy-on-write overlays (`overlay: PATH`, CLI `--disk BASE,overlay=PATH`):
 * an overlay file that outlives the VM, over a base image opened read-only
 * (lib/devices/virtio/overlay-file.ts has the file's layout and crash rule),
 * and `commitOverlay`, which writes its clusters back into the base.
 *
 * Locks (OFD, as for every image, lib/vm/disk-images.ts): a VM holds the
 * base shared and the overlay exclusive, so any number of VMs may run on
 * overlays of one base, but one overlay serves one VM. A commit holds both
 * exclusive, so it waits for no one and no VM runs on the base, or on the
 * overlay, while it writes; a conflict is refused with the holder named.
 *
 * Commit order: set the COMMITTING flag in the overlay and sync; copy each
 * mapped cluster into the base; sync the base; then empty the overlay's map
 * and clear the flag, and sync. A crash anywhere leaves every byte of the base
 * either its old content or the overlay's (bytes someone wrote), and the
 * overlay still describing the whole disk: the base alone is a mix until
 * a commit runs again and finishes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NodevmmError } from '../errors';
import { ClusterMap, OVERLAY_CLUSTER_BYTES } from '../devices/virtio/blk-overlay';
import { encodeOverlayHeader, overlayLayout, parseOverlayHeader, OVERLAY_HEADER_BYTES, type OverlayHeader, type OverlayLayout } from '../devices/virtio/overlay-file';
import { openDisk, type OpenedDisk } from './disk-images';

/** A kept overlay open for a VM: its fd (locked exclusive), header, layout and map. */
export interface KeptOverlay {
  disk: OpenedDisk;
  header: OverlayHeader;
  layout: OverlayLayout;
  map: ClusterMap;
  /** Write a map snapshot into the file (not synced: the caller syncs). */
  saveMap(bits: Uint8Array): Promise<void>;
}

function readExact(fd: number, length: number, position: number): Uint8Array {
  const buf = new Uint8Array(length);
  for (let got = 0; got < length; ) {
    const n = fs.readSync(fd, buf, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return buf;
}

function writeExact(fd: number, data: Uint8Array, position: number): void {
  for (let put = 0; put < data.length; ) put += fs.writeSync(fd, data, put, data.length - put, position + put);
}

/** Header and map of the overlay open on `fd` (`sizeBytes` long). */
function readOverlay(fd: number, sizeBytes: number, file: string): { header: OverlayHeader; layout: OverlayLayout; map: ClusterMap } {
  const header = parseOverlayHeader(readExact(fd, Math.min(OVERLAY_HEADER_BYTES, sizeBytes), Math.max(0, sizeBytes - OVERLAY_HEADER_BYTES)), sizeBytes, file);
  const layout = overlayLayout(header.baseSize, header.clusterBytes);
  let map: ClusterMap;
  try {
    map = new ClusterMap(header.baseSize, header.clusterBytes, readExact(fd, layout.mapBytes, layout.mapOffset));
  } catch (e) {
    throw new NodevmmError('ERR_OVERLAY_FORMAT', `overlay ${file}: ${(e as Error).message}`, { cause: e });
  }
  return { header, layout, map };
}

/**
 * A new empty overlay at `file` over `basePath`: written under a temporary
 * name and linked into place, so a reader never sees it without its header
 * and two VMs creating it at once cannot both succeed. False if `file` exists.
 */
function createOverlayFile(file: string, basePath: string, baseSize: number, clusterBytes: number): boolean {
  const layout = overlayLayout(baseSize, clusterBytes);
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.nodevmm-new-${process.pid}`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx+', 0o600);
    fs.ftruncateSync(fd, layout.fileSize);
    writeExact(fd, encodeOverlayHeader({ clusterBytes, baseSize, basePath, committing: false }), layout.headerOffset);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    try {
      fs.linkSync(tmp, file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    }
    return true;
  } catch (e) {
    throw new NodevmmError('ERR_DISK', `overlay ${file} cannot be created: ${(e as Error).message}`, { cause: e });
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
  }
}

/**
 * Open (or create, when `file` does not exist) the kept overlay of `base` for
 * a VM: locked exclusive for `owner`, its header checked against the base
 * (same size, same file), its map read. One-sentence NodevmmError naming the
 * file otherwise.
 */
export function openKeptOverlay(file: string, base: OpenedDisk, owner: object): KeptOverlay {
  const basePath = fs.realpathSync(base.path);
  if (fs.existsSync(file) && fs.realpathSync(file) === basePath) throw new NodevmmError('ERR_DISK', `overlay ${file} is the base image itself`);
  if (!fs.existsSync(file)) createOverlayFile(file, basePath, base.sizeBytes, OVERLAY_CLUSTER_BYTES);
  const disk = openDisk(file, false, owner);
  try {
    const { header, layout, map } = readOverlay(disk.fd, disk.sizeBytes, file);
    if (header.baseSize !== base.sizeBytes) {
      throw new NodevmmError('ERR_DISK', `overlay ${file} was made over a ${header.baseSize}-byte base (${header.basePath}), but ${base.path} is ${base.sizeBytes} bytes`);
    }
    let recorded: string;
    try {
      recorded = fs.realpathSync(header.basePath);
    } catch {
      recorded = header.basePath;
    }
    if (recorded !== basePath) throw new NodevmmError('ERR_DISK', `overlay ${file} belongs to the base ${header.basePath}, not ${base.path}`);
    const fd = disk.fd;
    return {
      disk,
      header,
      layout,
      map,
      saveMap: (bits) =>
        new Promise<void>((resolve, reject) => {
          const put = (at: number): void => {
            if (at >= bits.length) return resolve();
            fs.write(fd, bits, at, bits.length - at, layout.mapOffset + at, (e, n) => (e ? reject(e) : put(at + n)));
          };
          put(0);
        }),
    };
  } catch (e) {
    disk.close();
    throw e;
  }
}

export interface CommitOptions {
  /** The base to write into, if it moved since the overlay was made (default: the path in the overlay's header). */
  basePath?: string;
  /** Called after each cluster reached the base (progress; tests use it to stop a commit half-way). */
  onCluster?: (done: number, total: number) => void;
}

export interface CommitResult {
  basePath: string;
  /** Clusters written into the base. */
  clusters: number;
  bytes: number;
  /** An earlier commit of this overlay had been interrupted; this one finished it. */
  resumed: boolean;
}

/**
 * Write the clusters of the kept overlay `file` into its base and empty the
 * overlay. Both files are locked exclusive for the whole commit; one-sentence
 * NodevmmError (ERR_DISK) naming the file and its holder when either is in use.
 */
export function commitOverlay(file: string, opts: CommitOptions = {}): CommitResult {
  const owner = {};
  const ov = openDisk(file, false, owner);
  try {
    const { header, layout, map } = readOverlay(ov.fd, ov.sizeBytes, file);
    const basePath = opts.basePath !== undefined ? path.resolve(opts.basePath) : header.basePath;
    const base = openDisk(basePath, false, owner);
    try {
      if (base.sizeBytes !== header.baseSize) {
        throw new NodevmmError('ERR_DISK', `overlay ${file} was made over a ${header.baseSize}-byte base, but ${basePath} is ${base.sizeBytes} bytes: not committed`);
      }
      const cb = header.clusterBytes;
      const clusters: number[] = [];
      for (let c = 0; c < map.clusters; c++) if (map.has(c)) clusters.push(c);
      const result: CommitResult = { basePath, clusters: clusters.length, bytes: 0, resumed: header.committing };
      if (clusters.length === 0 && !header.committing) return result;
      if (!header.committing) {
        writeExact(ov.fd, encodeOverlayHeader({ ...header, committing: true }), layout.headerOffset);
        fs.fdatasyncSync(ov.fd);
      }
      const buf = new Uint8Array(cb);
      clusters.forEach((c, i) => {
        const start = c * cb;
        const n = Math.min(cb, header.baseSize - start);
        const data = buf.subarray(0, n);
        const got = readExact(ov.fd, n, start);
        data.set(got);
        writeExact(base.fd, data, start);
        result.bytes += n;
        opts.onCluster?.(i + 1, clusters.length);
      });
      fs.fdatasyncSync(base.fd);
      // The base holds everything now: an empty map (then no flag) describes the same disk.
      writeExact(ov.fd, new Uint8Array(layout.mapBytes), layout.mapOffset);
      writeExact(ov.fd, encodeOverlayHeader({ ...header, committing: false }), layout.headerOffset);
      fs.fdatasyncSync(ov.fd);
      return result;
    } finally {
      base.close();
    }
  } finally {
    ov.close();
  }
}
