/**
 * Writer for the "newc" cpio archive format (magic 070701), the format the
 * Linux kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/
 * buffer-format.rst). Writes regular files, directories, symlinks and device
 * nodes with uid/gid 0 and mtime 0 so the same inputs always give the same
 * bytes. It does not compress (see initramfs.ts), read archives, or write hard
 * links. Missing parent directories are added implicitly, because the kernel's
 * unpacker does not create them.
 */
import { NodevmmError } from '../errors';

const NEWC_MAGIC = '070701';
/** Fixed header length: 6-byte magic plus 13 fields of 8 hex digits. */
export const NEWC_HEADER_SIZE = 110;
const NEWC_ALIGN = 4;
const TRAILER_NAME = 'TRAILER!!!';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const PERMISSION_MASK = 0o7777;
const IMPLICIT_DIR_MODE = 0o755;
/** Every numeric newc field is 8 hex digits. */
const U32_MAX = 0xffff_ffff;

export type DeviceKind = 'c' | 'b';

/** Builds one newc archive; call `finish()` once to get the bytes with the TRAILER!!! record. */
export class CpioWriter {
  // A list of parts rather than one growing buffer: file data (busybox, modules) is large
  // and is referenced, not copied, until finish().
  private readonly parts: Uint8Array[] = [];
  private length = 0;
  private readonly seen = new Map<string, number>();
  private nextIno = 1;
  private finished = false;

  /** A regular file; `mode` holds permission bits only (default 0644). */
  addFile(path: string, data: Uint8Array | string, mode = 0o644): this {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    return this.add(path, S_IFREG | checkPermissions(path, mode), bytes, 1);
  }

  /** A directory (default 0755); adding one that was created implicitly is allowed. */
  addDir(path: string, mode = IMPLICIT_DIR_MODE): this {
    const name = normalizePath(path);
    if (this.seen.get(name) === S_IFDIR) return this;
    return this.add(path, S_IFDIR | checkPermissions(path, mode), new Uint8Array(0), 2);
  }

  /** A symbolic link whose target is stored verbatim as the entry's data. */
  addSymlink(path: string, target: string): this {
    if (target.length === 0 || target.includes('\0')) {
      throw new NodevmmError('ERR_CPIO_SYMLINK', `cpio: symlink ${JSON.stringify(path)} has an invalid target ${JSON.stringify(target)}`);
    }
    return this.add(path, S_IFLNK | 0o777, new TextEncoder().encode(target), 1);
  }

  /** A character ('c') or block ('b') device node with the given major/minor numbers. */
  addDevice(path: string, kind: DeviceKind, major: number, minor: number, mode = 0o600): this {
    if (kind !== 'c' && kind !== 'b') {
      throw new NodevmmError('ERR_CPIO_DEVICE', `cpio: device ${JSON.stringify(path)} has kind ${JSON.stringify(kind)}, expected 'c' or 'b'`);
    }
    for (const [field, v] of [['major', major], ['minor', minor]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > U32_MAX) {
        throw new NodevmmError('ERR_CPIO_DEVICE', `cpio: device ${JSON.stringify(path)} has ${field} ${v}, expected an integer 0..0xffffffff`);
      }
    }
    const type = kind === 'c' ? S_IFCHR : S_IFBLK;
    return this.add(path, type | checkPermissions(path, mode), new Uint8Array(0), 1, major, minor);
  }

  /** Appends the trailer and returns the archive; the writer cannot be used afterwards. */
  finish(): Uint8Array {
    this.assertOpen();
    this.writeEntry(TRAILER_NAME, 0, 0, new Uint8Array(0), 1, 0, 0);
    this.finished = true;
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  private add(path: string, mode: number, data: Uint8Array, nlink: number, rdevMajor = 0, rdevMinor = 0): this {
    this.assertOpen();
    const name = normalizePath(path);
    if (this.seen.has(name)) {
      throw new NodevmmError('ERR_CPIO_DUPLICATE', `cpio: path ${JSON.stringify(name)} was already added`);
    }
    if (data.length > U32_MAX) {
      throw new NodevmmError('ERR_CPIO_TOO_LARGE', `cpio: ${JSON.stringify(name)} is ${data.length} bytes, the newc limit is 4 GiB - 1`);
    }
    this.addParents(name);
    this.seen.set(name, mode & S_IFMT);
    this.writeEntry(name, this.nextIno++, mode, data, nlink, rdevMajor, rdevMinor);
    return this;
  }

  private addParents(name: string): void {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      const kind = this.seen.get(dir);
      if (kind === undefined) {
        this.seen.set(dir, S_IFDIR);
        this.writeEntry(dir, this.nextIno++, S_IFDIR | IMPLICIT_DIR_MODE, new Uint8Array(0), 2, 0, 0);
      } else if (kind !== S_IFDIR) {
        throw new NodevmmError('ERR_CPIO_PATH', `cpio: parent ${JSON.stringify(dir)} of ${JSON.stringify(name)} is not a directory`);
      }
    }
  }

  private writeEntry(name: string, ino: number, mode: number, data: Uint8Array, nlink: number, rdevMajor: number, rdevMinor: number): void {
    const nameBytes = new TextEncoder().encode(name);
    const fields = [ino, mode, 0, 0, nlink, 0, data.length, 0, 0, rdevMajor, rdevMinor, nameBytes.length + 1, 0];
    const header = NEWC_MAGIC + fields.map((f) => f.toString(16).padStart(8, '0')).join('');
    this.push(new TextEncoder().encode(header));
    // The name (with its NUL) is padded so that header + name ends on a 4-byte boundary,
    // and the data is padded the same way; the header itself is 110 bytes, not a multiple of 4.
    this.push(nameBytes);
    this.push(new Uint8Array(1));
    this.padTo(NEWC_ALIGN);
    this.push(data);
    this.padTo(NEWC_ALIGN);
  }

  private push(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.parts.push(bytes);
    this.length += bytes.length;
  }

  private padTo(align: number): void {
    const rem = this.length % align;
    if (rem !== 0) this.push(new Uint8Array(align - rem));
  }

  private assertOpen(): void {
    if (this.finished) throw new NodevmmError('ERR_CPIO_FINISHED', 'cpio: the archive was already finished');
  }
}

/** Archive names are relative ("bin/sh"); a leading "/" is dropped, "." and ".." segments are refused. */
function normalizePath(path: string): string {
  const name = path.replace(/^\/+/, '').replace(/\/+$/, '');
  const bad = name.length === 0 || name.includes('\0') || name.split('/').some((s) => s === '' || s === '.' || s === '..');
  if (typeof path !== 'string' || bad || name === TRAILER_NAME) {
    throw new NodevmmError('ERR_CPIO_PATH', `cpio: path ${JSON.stringify(path)} is not a valid archive name`);
  }
  return name;
}

function checkPermissions(path: string, mode: number): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > PERMISSION_MASK) {
    throw new NodevmmError('ERR_CPIO_MODE', `cpio: mode of ${JSON.stringify(path)} is ${mode}, expected permission bits 0..0o7777`);
  }
  return mode;
}
