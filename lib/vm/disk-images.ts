/**
 * Opening disk images for virtio-blk: one-sentence errors naming the file,
 * the size of a block device (BLKGETSIZE64, as fstat says 0), and image
 * locks so two VMs never write one image at once.
 *
 * Locks follow QEMU: an open-file-description (OFD) lock over the whole file,
 * shared for a read-only disk and exclusive for a read-write one, so any
 * number of readers may share an image but a writer has it alone. OFD locks
 * conflict between two opens of a file in one process as between processes,
 * so two VMs in one Node process are kept apart too, and the lock goes when
 * the image's last fd is closed (also when the process dies). A VM opens
 * each of its images once and keeps that fd (and lock) across machine
 * rebuilds on guest reboot: a second open by the same VM would conflict with
 * its own first one.
 */
import * as fs from 'node:fs';
import { NodevmmError } from '../errors';
import { blockDeviceSize, imageLockConflict, lockImage, type ImageLockMode } from '../hv/file-ops';

export interface OpenedDisk {
  fd: number;
  sizeBytes: number;
  readonly: boolean;
  path: string;
  /** Give this user's reference back; the fd (and its lock) is closed with the last one. */
  close(): void;
}

interface Held {
  disk: OpenedDisk;
  refs: number;
}

/** Images open per owner (a VM's disk entry), by device and inode. */
const heldByOwner = new WeakMap<object, Map<string, Held>>();

/**
 * Open a disk image for a device; throws a one-sentence NodevmmError
 * (ERR_DISK) naming the file. With `owner` (an object that stays the same
 * for one VM's disk, e.g. its config entry) the image is locked and opened
 * once per owner: opening it again returns the same fd with one more
 * reference. Without `owner` the image is only checked, including that no
 * one holds a conflicting lock, and the caller closes it at once.
 */
export function openDisk(path: string, readonly: boolean, owner?: object): OpenedDisk {
  let fd: number;
  try {
    fd = fs.openSync(path, readonly ? 'r' : 'r+');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'does not exist'
      : code === 'EACCES' || code === 'EPERM' ? `is not ${readonly ? 'readable' : 'readable and writable'} by this user${readonly ? '' : ' (add ,ro for a read-only disk)'}`
      : code === 'EISDIR' ? 'is a directory'
      : code === 'EROFS' ? 'is on a read-only file system (add ,ro for a read-only disk)'
      : code === 'EBUSY' ? 'is busy (a block device mounted or claimed by the host)'
      : (e as Error).message;
    throw new NodevmmError('ERR_DISK', `disk image ${path} ${why}`);
  }
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (!st.isFile() && !st.isBlockDevice()) {
      throw new NodevmmError('ERR_DISK', `disk image ${path} ${st.isDirectory() ? 'is a directory' : 'is not a regular file or block device'}`);
    }
    let sizeBytes: number;
    if (st.isBlockDevice()) {
      try {
        sizeBytes = blockDeviceSize(fd);
      } catch (e) {
        throw new NodevmmError('ERR_DISK', `disk image ${path} is a block device whose size cannot be read: ${(e as Error).message}`);
      }
    } else {
      sizeBytes = Number(st.size);
    }
    if (sizeBytes < 512) throw new NodevmmError('ERR_DISK', `disk image ${path} is ${sizeBytes} bytes, smaller than one 512-byte sector`);
    const mode: ImageLockMode = readonly ? 'shared' : 'exclusive';
    const key = `${st.dev}:${st.ino}`;
    if (owner === undefined) {
      const held = imageLockConflict(fd, mode);
      if (held) throw lockError(path, readonly, held, st.dev, st.ino);
      return { fd, sizeBytes, readonly, path, close: () => fs.closeSync(fd) };
    }
    let mine = heldByOwner.get(owner);
    const again = mine?.get(key);
    if (again) {
      fs.closeSync(fd);
      again.refs++;
      return again.disk;
    }
    if (!lockImage(fd, mode)) {
      const held = imageLockConflict(fd, mode) ?? (readonly ? 'exclusive' : 'shared');
      throw lockError(path, readonly, held, st.dev, st.ino);
    }
    if (!mine) heldByOwner.set(owner, (mine = new Map()));
    const entry: Held = {
      refs: 1,
      disk: {
        fd,
        sizeBytes,
        readonly,
        path,
        close: () => {
          if (--entry.refs > 0) return;
          mine!.delete(key);
          fs.closeSync(fd);
        },
      },
    };
    mine.set(key, entry);
    return entry.disk;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

function lockError(path: string, readonly: boolean, held: ImageLockMode, dev: bigint, ino: bigint): NodevmmError {
  const pids = lockHolders(dev, ino);
  const who = pids.length === 0 ? 'another VM or program' : pids.includes(process.pid) ? `another VM in this process (pid ${process.pid})` : `process ${pids.join(', ')}`;
  return new NodevmmError(
    'ERR_DISK',
    `disk image ${path} is in use: ${who} has it open ${held === 'exclusive' ? 'read-write' : 'read-only'} (an image lock), so it cannot be opened ${readonly ? 'even read-only' : 'read-write'}`,
  );
}

/** The most /proc fdinfo files read to name a lock's holder: the name is a courtesy, the refusal stands without it. */
const MAX_FDINFO_READS = 20_000;

/**
 * Which processes hold an OFD lock on the file (dev, ino). F_OFD_GETLK and
 * /proc/locks say -1 for an OFD lock's pid, so this looks for the lock in the
 * fdinfo of the processes this user may read; empty when none is found.
 */
function lockHolders(dev: bigint, ino: bigint): number[] {
  // The kernel prints the device as major:minor in hex, from the encoding glibc's major()/minor() decode.
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const needle = ` ${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${ino} `;
  const found: number[] = [];
  let reads = 0;
  let procs: string[];
  try {
    procs = fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return found;
  }
  for (const pid of procs) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fdinfo`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      if (++reads > MAX_FDINFO_READS) return found;
      let info: string;
      try {
        info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'latin1');
      } catch {
        continue;
      }
      if (/^lock:.*OFDLCK/m.test(info) && info.split('\n').some((l) => l.startsWith('lock:') && l.includes('OFDLCK') && l.includes(needle))) {
        found.push(Number(pid));
        break;
      }
    }
  }
  return found;
}
