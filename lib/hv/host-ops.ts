/**
 * The host operations beside the hypervisor that device backends need (a
 * TAP's fd, /dev/vhost-vsock, AF_VSOCK sockets), as typed objects. The VM
 * layer takes them from here and hands them to the backends, so nothing
 * outside lib/hv touches the native binding; a test hands in its own.
 * Every failure arrives as a typed error (native.ts `native`).
 */
import { native, nativeBinding, watchReadable, type NativeVhost } from './native';

/**
 * A TAP device's fd (native/tap.cc), in the shape lib/devices/tap.ts's
 * TapHostOps asks for. `open` throws the addon's error as it is (its errno
 * code names the cause).
 */
export function tapHostOps() {
  const b = nativeBinding();
  return {
    open: (name: string, opts: { vnetHdr: boolean; vnetHdrSize: number }) => b.openTap(name, opts),
    setOffload: (fd: number, flags: number) => native(() => b.tapSetOffload(fd, flags)),
    readv: (fd: number, buffers: Uint8Array[]) => b.fdReadv(fd, buffers),
    writev: (fd: number, buffers: Uint8Array[]) => b.fdWritev(fd, buffers),
    watchReadable,
    close: (fd: number) => b.closeFd(fd),
  };
}

/** /dev/vhost-vsock's ioctls on the fd `open` returned (native/vhost.cc), each failure a typed error but `open`'s (its errno code names the cause), and the fd's close. */
export interface VhostHostOps extends NativeVhost {
  close(fd: number): void;
}

export function vhostHostOps(): VhostHostOps {
  const b = nativeBinding();
  const v = b.vhost;
  return {
    open: (path) => v.open(path),
    setOwner: (fd) => native(() => v.setOwner(fd)),
    getFeatures: (fd) => native(() => v.getFeatures(fd)),
    setFeatures: (fd, f) => native(() => v.setFeatures(fd, f)),
    setMemTable: (fd, regions) => native(() => v.setMemTable(fd, regions)),
    setVringNum: (fd, i, n) => native(() => v.setVringNum(fd, i, n)),
    setVringBase: (fd, i, n) => native(() => v.setVringBase(fd, i, n)),
    getVringBase: (fd, i) => native(() => v.getVringBase(fd, i)),
    setVringAddr: (fd, i, a) => native(() => v.setVringAddr(fd, i, a)),
    setVringKick: (fd, i, efd) => native(() => v.setVringKick(fd, i, efd)),
    setVringCall: (fd, i, efd) => native(() => v.setVringCall(fd, i, efd)),
    vsockSetGuestCid: (fd, cid) => native(() => v.vsockSetGuestCid(fd, cid)),
    vsockSetRunning: (fd, r) => native(() => v.vsockSetRunning(fd, r)),
    close: (fd) => b.closeFd(fd),
  };
}

/** A libuv poll watcher on an fd; open ones keep the loop alive until closed. */
export interface FdWatcher {
  readonly closed: boolean;
  set(events: { readable?: boolean; writable?: boolean }): void;
  unref(): void;
  close(): void;
}

/** Non-blocking AF_VSOCK stream sockets on the host (native/vsock_socket.cc). */
export interface VsockSocketOps {
  connect(cid: number, port: number): number;
  listen(port: number): number;
  accept(fd: number): { fd: number; cid: number; port: number } | null;
  /** The pending SO_ERROR as an errno name, or null. */
  error(fd: number): string | null;
  /** Bytes read, 0 at end of stream, -1 when nothing is there yet. */
  read(fd: number, into: Uint8Array): number;
  /** Bytes written (maybe fewer than given), -1 when the socket is full. */
  write(fd: number, bytes: Uint8Array): number;
  shutdownWrite(fd: number): void;
  /** callback(status, readable, writable): status 0 or a negative errno. */
  watch(fd: number, events: { readable?: boolean; writable?: boolean }, callback: (status: number, readable: boolean, writable: boolean) => void): FdWatcher;
  close(fd: number): void;
}

export function vsockSocketOps(): VsockSocketOps {
  const b = nativeBinding();
  return {
    connect: (cid, port) => native(() => b.vsockConnect(cid, port)),
    listen: (port) => native(() => b.vsockListen(port)),
    accept: (fd) => native(() => b.vsockAccept(fd)),
    error: (fd) => native(() => b.socketError(fd)),
    read: (fd, into) => native(() => b.socketRead(fd, into)),
    write: (fd, bytes) => native(() => b.socketWrite(fd, bytes)),
    shutdownWrite: (fd) => native(() => b.socketShutdownWrite(fd)),
    watch: (fd, events, callback) => native(() => b.watchFd(fd, events, callback)),
    close: (fd) => b.closeFd(fd),
  };
}
