/**
 * Boot images read from files, shared by every VM booted from the same file.
 *
 * A VM keeps its kernel and initrd for as long as it may reboot, so eight VMs
 * booted from Debian's kernel and an initramfs held eight copies of ~10 MiB.
 * Nothing writes into image bytes (loaders copy them into guest memory), so
 * VMs whose files are the same file, unchanged, share one buffer. The cache
 * holds buffers weakly: the last VM to drop one frees it.
 *
 * "The same file, unchanged" is device, inode, size, mtime and ctime as the
 * open descriptor reports them before and after the read; a file rewritten in
 * place gets a new mtime and ctime, and a file replaced gets a new inode, so
 * either is read again. A file that changed while it was read is returned
 * but not cached. File times have a clock tick's granularity, so two writes
 * within one tick can leave the same mtime: as git does for its index, a file
 * modified in the last two seconds is read afresh and not cached.
 */
import { closeSync, fstatSync, openSync, readSync, type BigIntStats } from 'node:fs';
import type * as FsPromises from 'node:fs/promises';
import { NodevmmError } from '../errors';
import { detectKernelFormat, type KernelFile, type KernelFileHandle } from '../loader/kernel';
import { fileError } from '../util/file-errors';

const cache = new Map<string, WeakRef<Uint8Array>>();
const reading = new Map<string, Promise<Uint8Array>>();
const forget = new FinalizationRegistry<string>((key) => {
  // A newer buffer may have taken the key since this one became unreachable.
  if (cache.get(key)?.deref() === undefined) cache.delete(key);
});

const RACY_NS = 2_000_000_000n;
const identity = (s: BigIntStats) => `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;

/** The bytes of `path`, shared with earlier readers of the same unchanged file. */
export async function readImageFile(path: string): Promise<Uint8Array> {
  // Loaded on first use: the CLI reads its images itself (CLI start-up time, docs/benchmarks.md).
  const fsp = require('node:fs/promises') as typeof FsPromises;
  const handle = await fsp.open(path, 'r');
  try {
    const stat = await handle.stat({ bigint: true });
    if (BigInt(Date.now()) * 1_000_000n - stat.mtimeNs < RACY_NS) return new Uint8Array(await handle.readFile());
    const key = identity(stat);
    const cached = cache.get(key)?.deref();
    if (cached) return cached;
    let pending = reading.get(key);
    if (!pending) {
      pending = (async () => {
        const bytes = new Uint8Array(await handle.readFile());
        if (identity(await handle.stat({ bigint: true })) === key) {
          cache.set(key, new WeakRef(bytes));
          forget.register(bytes, key);
        }
        return bytes;
      })();
      reading.set(key, pending);
      pending.finally(() => reading.delete(key)).catch(() => {});
    }
    return await pending;
  } finally {
    await handle.close();
  }
}

/**
 * The kernel at `path` as a KernelFile when it is a non-empty ELF file, else undefined (read it
 * whole). An ELF vmlinux's segments are then read straight into guest RAM at each boot and
 * nothing of it stays in memory in between (Debian's is 66 MiB); a reboot reads the file
 * again, so a kernel replaced meanwhile is the one that boots, as with Cloud Hypervisor.
 * Throws fileError when the file cannot be opened.
 */
export function elfKernelFile(path: string): KernelFile | undefined {
  const h = openKernelFile(path);
  try {
    if (h.size < 4) return undefined;
    const magic = new Uint8Array(4);
    h.readInto(0, magic);
    if (detectKernelFormat(magic).format !== 'elf') return undefined;
  } finally {
    h.close();
  }
  return { open: () => openKernelFile(path) };
}

function openKernelFile(path: string): KernelFileHandle {
  let fd: number;
  let size: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw fileError('kernel', path, e);
  }
  try {
    size = fstatSync(fd).size;
  } catch (e) {
    closeSync(fd);
    throw fileError('kernel', path, e);
  }
  return {
    size,
    readInto(position: number, target: Uint8Array): void {
      let done = 0;
      while (done < target.length) {
        let n: number;
        try {
          n = readSync(fd, target, done, target.length - done, position + done);
        } catch (e) {
          throw fileError('kernel', path, e);
        }
        if (n === 0) {
          throw new NodevmmError('ERR_KERNEL_FILE_CHANGED', `kernel file ${path} ended at byte ${position + done} of the ${size} it had when opened: it changed while it was loaded`);
        }
        done += n;
      }
    },
    close: () => closeSync(fd),
  };
}

/** How many files the cache holds live buffers for (tests and diagnostics). */
export function cachedImageCount(): number {
  let n = 0;
  for (const r of cache.values()) if (r.deref()) n++;
  return n;
}
