/**
 * Block backends for virtio-blk: how bytes move between an image file and the
 * guest's buffers.
 *
 * - `directFileBackend`: the VM's path. preadv/pwritev straight into and out
 *   of guest pages (native/block_io.cc through `KvmPartition.fileIo`): no
 *   bounce buffer, no copy in JS. Where the transfer runs depends on where
 *   the image lives (`imageStorage`): an image in memory (tmpfs) is served on
 *   the event loop's thread, as it never waits for a disk; reads of any other
 *   file are first tried without blocking (RWF_NOWAIT: all pages cached),
 *   and everything else goes to libuv's thread pool. The partition keeps the
 *   pages mapped until each I/O is done.
 * - `bounceFileBackend`: the same file operations through JS bounce buffers,
 *   for guest memory native code cannot reach (the pure-JS memory of unit
 *   tests, or a partition without `fileIo`).
 */
import * as fs from 'node:fs';
import type { FileIoMode } from '../../hv/partition';
import type { GuestBuffer, GuestMemoryAccess } from '../../memory/guest-memory';
import type { BlockBackend } from './blk';

/** Writes of zeros go out in chunks of this size. */
const ZERO_CHUNK = 1 << 20;

/**
 * Requests up to this size may run on the event loop's thread (a page-cache
 * copy of 4 MiB takes well under a millisecond natively); larger ones always
 * go to the pool. Linux's virtio-blk driver sends at most 1.25 MiB by default.
 */
const INLINE_MAX_BYTES = 4 << 20;

/** statfs(2) f_type of filesystems that keep file pages in memory only. */
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

/** Where an image file's pages live: 'memory' (tmpfs, ramfs) never waits for a disk. */
export type ImageStorage = 'memory' | 'disk';

/** Whether the file at `path` is on a memory filesystem. */
export function imageStorage(path: string): ImageStorage {
  try {
    const t = fs.statfsSync(path).type;
    return t === TMPFS_MAGIC || t === RAMFS_MAGIC ? 'memory' : 'disk';
  } catch {
    return 'disk';
  }
}

/** What `directFileBackend` needs from a partition (KvmPartition has it). */
export interface DirectFileIo {
  fileIo(op: 'read' | 'write', fd: number, position: number, buffers: readonly GuestBuffer[], how?: FileIoMode): Promise<number>;
  fileIoNow(op: 'read' | 'write', fd: number, position: number, buffers: readonly GuestBuffer[], nowait: boolean): number;
  fileSync(fd: number): Promise<void>;
}

/** An image fd served straight to and from guest pages. */
export function directFileBackend(fd: number, io: DirectFileIo, storage: ImageStorage = 'disk'): BlockBackend {
  const inline = storage === 'memory';
  const mode = (op: 'read' | 'write', buffers: readonly GuestBuffer[]): FileIoMode => {
    let bytes = 0;
    for (let i = 0; i < buffers.length; i++) bytes += buffers[i]!.length;
    if (bytes > INLINE_MAX_BYTES) return 'pool';
    if (inline) return 'inline';
    // A buffered write may wait for writeback or allocation: always the pool.
    return op === 'read' ? 'nowait' : 'pool';
  };
  return {
    read: async (buffers, position) => {
      await io.fileIo('read', fd, position, buffers, mode('read', buffers));
    },
    write: async (buffers, position) => {
      await io.fileIo('write', fd, position, buffers, mode('write', buffers));
    },
    transferNow: (op, buffers, position) => {
      const how = mode(op, buffers);
      return how !== 'pool' && io.fileIoNow(op, fd, position, buffers, how === 'nowait') >= 0;
    },
    writeZeroes: (position, length) => writeZeroes(fd, position, length),
    datasync: () => io.fileSync(fd),
  };
}

/** An image fd served through bounce buffers copied in and out of `memory`. */
export function bounceFileBackend(fd: number, memory: GuestMemoryAccess): BlockBackend {
  return {
    // One bounce of at most BOUNCE_CHUNK bytes at a time: a guest buffer may
    // be as large as guest RAM, and a request may name it many times.
    read: async (buffers, position) => {
      for (const piece of chunked(buffers)) {
        const buf = new Uint8Array(piece.length);
        let got = 0;
        while (got < piece.length) {
          const n = await fsRead(fd, buf, got, piece.length - got, position + got);
          if (n === 0) break; // past the end of the file: the rest stays zero
          got += n;
        }
        memory.write(piece.gpa, buf);
        position += piece.length;
      }
    },
    write: async (buffers, position) => {
      for (const piece of chunked(buffers)) {
        await writeAll(fd, memory.read(piece.gpa, piece.length), position);
        position += piece.length;
      }
    },
    writeZeroes: (position, length) => writeZeroes(fd, position, length),
    datasync: () => new Promise((resolve, reject) => fs.fdatasync(fd, (e) => (e ? reject(e) : resolve()))),
  };
}

/** Bytes of one bounce buffer of `bounceFileBackend`. */
const BOUNCE_CHUNK = 1 << 20;

/** The same bytes as `buffers`, in pieces of at most BOUNCE_CHUNK. */
function* chunked(buffers: readonly GuestBuffer[]): Generator<GuestBuffer> {
  for (const b of buffers) {
    for (let at = 0; at < b.length; at += BOUNCE_CHUNK) yield { gpa: b.gpa + at, length: Math.min(BOUNCE_CHUNK, b.length - at) };
  }
}

function fsRead(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, offset, length, position, (e, n) => (e ? reject(e) : resolve(n))));
}

async function writeAll(fd: number, buf: Uint8Array, position: number): Promise<void> {
  for (let put = 0; put < buf.length; ) {
    put += await new Promise<number>((resolve, reject) => fs.write(fd, buf, put, buf.length - put, position + put, (e, n) => (e ? reject(e) : resolve(n))));
  }
}

async function writeZeroes(fd: number, position: number, length: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(length, ZERO_CHUNK));
  for (let done = 0; done < length; ) {
    const n = Math.min(zeros.length, length - done);
    await writeAll(fd, zeros.subarray(0, n), position + done);
    done += n;
  }
}
