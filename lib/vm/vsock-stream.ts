/**
 * Host-side AF_VSOCK connections as Node Duplex streams (Node's net cannot
 * open AF_VSOCK): a non-blocking socket from the addon plus an fd watcher
 * on the event loop. Reads happen only while the stream wants data
 * (backpressure), writes wait for writability when the socket is full,
 * end() shuts down our direction, destroy() closes the watcher and then the
 * fd, exactly once. Also a small listener for guest-to-host connections.
 */
import { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import { NodevmmError } from '../errors';
import { vsockSocketOps, type FdWatcher, type VsockSocketOps } from '../hv/host-ops';

/** VMADDR_CID_HOST: where a guest connects to reach this host. */
export const VMADDR_CID_HOST = 2;
const READ_CHUNK = 64 * 1024;

const REASONS: Record<string, string> = {
  ECONNREFUSED: 'nothing listens on that port in the guest',
  ECONNRESET: 'the guest reset the connection',
  ETIMEDOUT: 'the guest did not answer in time',
  ENODEV: 'this host has no vsock transport (load vhost_vsock)',
  EHOSTUNREACH: 'no VM with that cid is running',
  ENETUNREACH: 'no VM with that cid is running',
};

function vsockError(what: string, code: string, cause?: unknown): NodevmmError {
  const reason = REASONS[code] ?? code;
  return new NodevmmError('ERR_VSOCK', `${what} failed: ${reason} (${code})`, cause !== undefined ? { cause } : undefined);
}

export class VsockStream extends Duplex {
  readonly remoteCid: number;
  readonly remotePort: number;
  private fd: number;
  private readonly ops: VsockSocketOps;
  private watcher: FdWatcher | undefined;
  private wantRead = false;
  private pending: { data: Uint8Array; cb: (e?: Error | null) => void } | undefined;

  /** Wrap a connected, non-blocking AF_VSOCK fd; the stream owns it from here. */
  constructor(fd: number, remote: { cid: number; port: number }, ops: VsockSocketOps = vsockSocketOps()) {
    // As net.Socket by default: when the peer ends, we end too, so its close completes at once.
    super({ allowHalfOpen: false });
    this.fd = fd;
    this.ops = ops;
    this.remoteCid = remote.cid;
    this.remotePort = remote.port;
    try {
      this.watcher = ops.watch(fd, {}, (status, readable, writable) => this.onReady(status, readable, writable));
    } catch (e) {
      ops.close(fd);
      this.fd = -1;
      throw e;
    }
  }

  /** Connect to `port` on the VM with `cid`; resolves once the guest accepted. */
  static connect(cid: number, port: number, ops: VsockSocketOps = vsockSocketOps()): Promise<VsockStream> {
    const what = `vsock connect to cid ${cid} port ${port}`;
    return new Promise((resolve, reject) => {
      let fd: number;
      try {
        fd = ops.connect(cid, port);
      } catch (e) {
        reject(vsockError(what, (e as { code?: string }).code ?? 'EUNKNOWN', e));
        return;
      }
      let watcher: FdWatcher;
      try {
        watcher = ops.watch(fd, { writable: true }, (status) => {
          watcher.close();
          // libuv reports a socket error (POLLERR) as UV_EBADF: the socket knows the real one.
          const err = ops.error(fd) ?? (status < 0 ? 'EIO' : null);
          if (err) {
            ops.close(fd);
            reject(vsockError(what, err));
            return;
          }
          try {
            resolve(new VsockStream(fd, { cid, port }, ops));
          } catch (e) {
            reject(e);
          }
        });
      } catch (e) {
        ops.close(fd);
        reject(e as Error);
      }
    });
  }

  private updateInterest(): void {
    this.watcher?.set({ readable: this.wantRead, writable: this.pending !== undefined });
  }

  private onReady(status: number, readable: boolean, writable: boolean): void {
    if (this.fd < 0) return;
    if (status < 0) {
      this.destroy(vsockError('vsock socket', this.ops.error(this.fd) ?? 'EIO'));
      return;
    }
    if (writable && this.pending) this.flushPending();
    if (readable && this.wantRead) this.pull();
  }

  private pull(): void {
    while (this.fd >= 0 && this.wantRead) {
      const buf = Buffer.allocUnsafe(READ_CHUNK);
      let n: number;
      try {
        n = this.ops.read(this.fd, buf);
      } catch (e) {
        this.destroy(vsockError('vsock read', (e as { code?: string }).code ?? 'EIO', e));
        return;
      }
      if (n < 0) break; // drained: the watcher tells us when there is more
      if (n === 0) {
        this.wantRead = false;
        this.updateInterest();
        this.push(null);
        return;
      }
      this.wantRead = this.push(buf.subarray(0, n));
    }
    this.updateInterest();
  }

  override _read(): void {
    this.wantRead = true;
    this.pull();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.pending = { data: new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength), cb };
    this.flushPending();
  }

  private flushPending(): void {
    const p = this.pending;
    if (!p || this.fd < 0) return;
    while (p.data.length > 0) {
      let n: number;
      try {
        n = this.ops.write(this.fd, p.data);
      } catch (e) {
        this.pending = undefined;
        this.updateInterest();
        p.cb(vsockError('vsock write', (e as { code?: string }).code ?? 'EIO', e));
        return;
      }
      if (n < 0) {
        this.updateInterest(); // full: wait for writable
        return;
      }
      p.data = p.data.subarray(n);
    }
    this.pending = undefined;
    this.updateInterest();
    p.cb();
  }

  override _final(cb: (e?: Error | null) => void): void {
    try {
      if (this.fd >= 0) this.ops.shutdownWrite(this.fd);
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    // Watcher first: libuv must not poll an fd number that may be reused.
    this.watcher?.close();
    this.watcher = undefined;
    if (this.fd >= 0) this.ops.close(this.fd);
    this.fd = -1;
    const p = this.pending;
    this.pending = undefined;
    p?.cb(err ?? new NodevmmError('ERR_VSOCK', 'vsock stream was destroyed before the write finished'));
    cb(err);
  }
}

export interface VsockServerEvents {
  connection: [VsockStream];
  error: [Error];
}

/** Accepts guest-to-host connections on a host vsock port (guests connect to cid 2). */
export class VsockServer extends EventEmitter<VsockServerEvents> {
  readonly port: number;
  private fd: number;
  private watcher: FdWatcher | undefined;
  private readonly ops: VsockSocketOps;

  constructor(port: number, ops: VsockSocketOps = vsockSocketOps()) {
    super();
    this.port = port;
    this.ops = ops;
    try {
      this.fd = ops.listen(port);
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'EUNKNOWN';
      throw new NodevmmError('ERR_VSOCK', code === 'EADDRINUSE' ? `vsock port ${port} is already listened on by another program on this host` : `vsock listen on port ${port} failed: ${(e as Error).message}`, { cause: e });
    }
    this.watcher = ops.watch(this.fd, { readable: true }, () => this.acceptAll());
  }

  private acceptAll(): void {
    for (;;) {
      let c: { fd: number; cid: number; port: number } | null;
      try {
        c = this.ops.accept(this.fd);
      } catch (e) {
        // An unhandled 'error' would kill the process for one failed accept (EMFILE): warn instead.
        const err = e as Error;
        if (this.listenerCount('error') > 0) this.emit('error', err);
        else process.emitWarning(`vsock port ${this.port}: accept failed: ${err.message}`);
        return;
      }
      if (!c) return;
      this.emit('connection', new VsockStream(c.fd, { cid: c.cid, port: c.port }, this.ops));
    }
  }

  /** Stop listening; connections already accepted stay open. A second call does nothing. */
  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.fd >= 0) this.ops.close(this.fd);
    this.fd = -1;
  }
}
