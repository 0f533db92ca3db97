/**
 * A TAP device as a virtio-net backend: opening it with one-sentence errors
 * (no /dev/net/tun, busy, no permission, a name that is not a TAP),
 * non-blocking packet I/O with readv/writev, and a watcher for readability.
 * The host operations come from whoever opens it (the VM layer passes
 * lib/hv/host-ops.ts tapHostOps()). Whoever opens a TapBackend closes it (fd
 * and watcher).
 */
import { NodevmmError } from '../errors';
import type { NetBackend } from './virtio/net';

/** The host side of a TAP (lib/hv/host-ops.ts TapHostOps has this shape). */
export interface TapHostOps {
  /** Errors keep the errno code (ENOENT, EBUSY, EPERM, EINVAL ...). */
  open(name: string, opts: { vnetHdr: boolean; vnetHdrSize: number }): { fd: number; name: string };
  setOffload(fd: number, flags: number): void;
  readv(fd: number, buffers: Uint8Array[]): number;
  writev(fd: number, buffers: Uint8Array[]): number;
  watchReadable(fd: number, onReadable: (error?: string) => void): ReadableWatcher;
  close(fd: number): void;
}

/** A readability watcher that can pause (no room for what the fd has) and resume. */
export interface ReadableWatcher {
  pause(): void;
  resume(): void;
  close(): void;
}

export interface OpenTapOptions {
  /** Pass virtio-net headers through (IFF_VNET_HDR), which the offloads need. Default true. */
  vnetHdr?: boolean;
}

/** The one-sentence reason a TAP could not be opened, from the addon's errno code. */
export function tapErrorMessage(name: string, code: string | undefined, detail: string): string {
  switch (code) {
    case 'ENOENT':
    case 'ENODEV':
      return `TAP ${name} cannot be opened: /dev/net/tun does not exist (load the tun module: modprobe tun)`;
    case 'EBUSY':
      return `TAP ${name} is busy: another process (or VM) has it open`;
    case 'EPERM':
    case 'EACCES':
      return `TAP ${name} cannot be opened by this user: run as root, or create it for this user first (ip tuntap add dev ${name} mode tap user $USER)`;
    case 'EINVAL':
      return `TAP ${name} cannot be attached: a network interface of that name exists and is not a TAP`;
    default:
      return `TAP ${name} cannot be opened: ${detail}`;
  }
}

export class TapBackend implements NetBackend {
  readonly name: string;
  readonly fd: number;
  readonly vnetHdr: boolean;
  private watcher: ReadableWatcher | undefined;
  private onReadable: (() => void) | undefined;
  private closed = false;
  /** Why the watcher stopped on its own, if it did. */
  lastError: string | undefined;

  private constructor(
    name: string,
    fd: number,
    vnetHdr: boolean,
    private readonly ops: TapHostOps,
  ) {
    this.name = name;
    this.fd = fd;
    this.vnetHdr = vnetHdr;
  }

  /** Attach to TAP `name` through `ops`, creating it if it does not exist (that needs CAP_NET_ADMIN). */
  static open(name: string, ops: TapHostOps, opts: OpenTapOptions = {}): TapBackend {
    const vnetHdr = opts.vnetHdr ?? true;
    // virtio-net's model loads with the first TAP, not with every VM (CLI start-up time).
    const { VIRTIO_NET_HDR_BYTES } = require('./virtio/net') as typeof import('./virtio/net');
    let r: { fd: number; name: string };
    try {
      r = ops.open(name, { vnetHdr, vnetHdrSize: VIRTIO_NET_HDR_BYTES });
    } catch (e) {
      const err = e as Error & { code?: string };
      throw new NodevmmError('ERR_TAP', tapErrorMessage(name, err.code, err.message), { cause: e });
    }
    return new TapBackend(r.name, r.fd, vnetHdr, ops);
  }

  readv(buffers: Uint8Array[]): number {
    return this.ops.readv(this.fd, buffers);
  }

  writev(buffers: Uint8Array[]): number {
    return this.ops.writev(this.fd, buffers);
  }

  /** One watcher per TAP; a new device (after a VM restart) takes over the callback. */
  watch(onReadable: () => void): void {
    if (this.closed) return;
    this.onReadable = onReadable;
    this.watcher ??= this.ops.watchReadable(this.fd, (error) => {
      if (!error) return this.onReadable?.();
      // A poll error would repeat on every loop turn: stop watching and keep the reason.
      this.lastError = `polling TAP ${this.name} failed: ${error}`;
      this.watcher?.pause();
    });
  }

  pauseReads(): void {
    this.watcher?.pause();
  }

  resumeReads(): void {
    if (!this.closed) this.watcher?.resume();
  }

  setOffloads(flags: number): void {
    if (this.vnetHdr) this.ops.setOffload(this.fd, flags);
  }

  /** Stop the watcher and close the fd; a second call does nothing. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    this.onReadable = undefined;
    this.ops.close(this.fd);
  }
}
