/**
 * Block backends for virtio-blk: how bytes move between an image file and the
 * guest's buffers.
 *
 * - `directFileBackend`: the VM's path. preadv/pwritev straight into and out
 *   of guest pages on libuv's thread pool (native/block_io.cc through
 *   `KvmPartition.fileIo`): no bounce buffer, no per-request allocation, no
 *   copy in JS. The partition keeps the pages mapped until each I/O is done.
 * - `bounceFileBackend`: the same file operations through JS bounce buffers,
 *   for guest memory native code cannot reach (the pure-JS memory of unit
 *   tests, or a partition without `fileIo`).
 */
import * as fs from 'node:fs';
import type { GuestBuffer, GuestMemoryAccess } from '../../memory/guest-memory';
import type { BlockBackend } from './blk';

/** Writes of zeros go out in chunks of this size. */
const ZERO_CHUNK = 1 << 20;

/** What `directFileBackend` needs from a partition (KvmPartition has it). */
export interface DirectFileIo {
  fileIo(op: 'read' | 'write', fd: number, position: number, buffers: readonly GuestBuffer[]): Promise<number>;
  fileSync(fd: number): Promise<void>;
}

/** An image fd served straight to and from guest pages. */
export function directFileBackend(fd: number, io: DirectFileIo): BlockBackend {
  return {
    read: async (buffers, position) => {
      await io.fileIo('read', fd, position, buffers);
    },
    write: async (buffers, position) => {
      await io.fileIo('write', fd, position, buffers);
    },
    writeZeroes: (position, length) => writeZeroes(fd, position, length),
    datasync: () => io.fileSync(fd),
  };
}

/** An image fd served through bounce buffers copied in and out of `memory`. */
export function bounceFileBackend(fd: number, memory: GuestMemoryAccess): BlockBackend {
  return {
    read: async (buffers, position) => {
      for (const b of buffers) {
        const buf = new Uint8Array(b.length);
        let got = 0;
        while (got < b.length) {
          const n = await fsRead(fd, buf, got, b.length - got, position + got);
          if (n === 0) break; // past the end of the file: the rest stays zero
          got += n;
        }
        memory.write(b.gpa, buf);
        position += b.length;
      }
    },
    write: async (buffers, position) => {
      for (const b of buffers) {
        await writeAll(fd, memory.read(b.gpa, b.length), position);
        position += b.length;
      }
    },
    writeZeroes: (position, length) => writeZeroes(fd, position, length),
    datasync: () => new Promise((resolve, reject) => fs.fdatasync(fd, (e) => (e ? reject(e) : resolve()))),
  };
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
