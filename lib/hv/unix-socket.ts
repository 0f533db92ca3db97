/**
 * A UNIX stream socket that carries file descriptors (SCM_RIGHTS), for
 * protocols that hand fds to a helper process (vhost-user: guest RAM memfds
 * and eventfds). Node's net module cannot pass fds, so the sends and
 * receives are native (native/unix_socket.cc), blocking this thread for at
 * most the timeout the caller gives; a hang-up is reported on the event
 * loop through a readability watcher.
 */
import { NodevmmError } from '../errors';
import { asKvmError, nativeBinding, watchReadable, type NativeBinding, type ReadableWatcher } from './native';

export class FdSocket {
  private open = true;
  private watcher: ReadableWatcher | undefined;

  private constructor(
    readonly fd: number,
    private readonly binding: NativeBinding,
  ) {}

  /** Connect to the socket at `path`; throws a KvmError-shaped error (code ENOENT, ECONNREFUSED, ...). */
  static connect(path: string, binding: NativeBinding = nativeBinding()): FdSocket {
    let fd: number;
    try {
      fd = binding.unixConnect(path);
    } catch (e) {
      throw asKvmError(e);
    }
    return new FdSocket(fd, binding);
  }

  get closed(): boolean {
    return !this.open;
  }

  /** Send all of `bytes` with `fds` attached; waits at most timeoutMs for room. */
  send(bytes: Uint8Array, fds: readonly number[], timeoutMs: number): void {
    this.assertOpen();
    try {
      this.binding.unixSendmsg(this.fd, bytes, fds, timeoutMs);
    } catch (e) {
      throw asKvmError(e);
    }
  }

  /** Exactly `length` bytes, waiting at most timeoutMs in all; throws when the peer closes first. */
  receive(length: number, timeoutMs: number): { bytes: Uint8Array; fds: number[] } {
    this.assertOpen();
    const out = new Uint8Array(length);
    const fds: number[] = [];
    const deadline = Date.now() + timeoutMs;
    let got = 0;
    while (got < length) {
      let r: { bytes: number; fds: number[] };
      try {
        r = this.binding.unixRecvmsg(this.fd, out.subarray(got), Math.max(0, deadline - Date.now()));
      } catch (e) {
        for (const fd of fds) this.binding.closeFd(fd);
        throw asKvmError(e);
      }
      fds.push(...r.fds);
      if (r.bytes === 0) {
        for (const fd of fds) this.binding.closeFd(fd);
        throw new NodevmmError('ECONNRESET', `the peer closed the socket after ${got} of ${length} bytes`);
      }
      got += r.bytes;
    }
    return { bytes: out, fds };
  }

  closeFd(fd: number): void {
    this.binding.closeFd(fd);
  }

  /**
   * Call `onHangup(why)` once when the peer closes the socket or sends
   * something nobody asked for (for a request/reply protocol without
   * unsolicited messages, both mean the peer is gone or broken). Readability
   * seen while a synchronous request already took the reply is ignored. The
   * watcher never keeps the process alive.
   */
  watchHangup(onHangup: (why: string) => void): void {
    this.assertOpen();
    if (this.watcher) return;
    let fired = false;
    const probe = new Uint8Array(1);
    this.watcher = watchReadable(this.fd, (error) => {
      if (fired || !this.open) return;
      let why: string | undefined = error ? `the socket failed (${error})` : undefined;
      if (!why) {
        try {
          const r = this.binding.unixRecvmsg(this.fd, probe, 0);
          for (const fd of r.fds) this.binding.closeFd(fd);
          why = r.bytes === 0 ? 'the peer closed the socket' : 'the peer sent a message nobody asked for';
        } catch (e) {
          const code = (e as { code?: string }).code;
          if (code === 'ETIMEDOUT') return; // nothing there after all
          why = `the socket failed (${code ?? (e as Error).message})`;
        }
      }
      fired = true;
      this.watcher?.pause();
      onHangup(why);
    });
  }

  /** Close the socket (the peer sees a hang-up); a second call does nothing. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.watcher?.close();
    this.watcher = undefined;
    this.binding.closeFd(this.fd);
  }

  private assertOpen(): void {
    if (!this.open) throw new NodevmmError('ERR_INVALID_ARG', 'the socket is closed');
  }
}
