/**
 * File operations the VM layer needs on disk images beyond node:fs: a block
 * device's size and open-file-description locks (native/file_ops.cc).
 */
import { native, nativeBinding } from './native';

/** The size in bytes of the block device open on `fd` (BLKGETSIZE64). */
export function blockDeviceSize(fd: number): number {
  const bytes = native(() => nativeBinding().blockDeviceSize(fd));
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`a block device of ${bytes} bytes is larger than this VMM can address`);
  return Number(bytes);
}

export type ImageLockMode = 'shared' | 'exclusive';

const LOCK_TYPE = { shared: 1, exclusive: 2 } as const;

/**
 * Take an OFD lock over the whole file open on `fd`: shared for a read-only
 * user, exclusive for a writer. False when another open file description
 * (this process or another) holds a lock that conflicts. The lock lasts until
 * the last fd of this open file description is closed.
 */
export function lockImage(fd: number, mode: ImageLockMode): boolean {
  return native(() => nativeBinding().ofdLock(fd, LOCK_TYPE[mode]));
}

/** What kind of lock held elsewhere would refuse `mode` on `fd`, or undefined when none would. */
export function imageLockConflict(fd: number, mode: ImageLockMode): ImageLockMode | undefined {
  const t = native(() => nativeBinding().ofdLockConflict(fd, LOCK_TYPE[mode]));
  return t === 0 ? undefined : t === 1 ? 'shared' : 'exclusive';
}
