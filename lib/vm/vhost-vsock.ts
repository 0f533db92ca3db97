/**
 * The real backends of virtio-vsock: /dev/vhost-vsock opened, owned and
 * given the guest's CID (with one-sentence errors for the two things a user
 * can fix: the module is not loaded or not accessible, the CID is taken),
 * and eventfds registered on the VM fd as ioeventfds and irqfds.
 */
import { NodevmmError } from '../errors';
import type { VhostVsockOps } from '../devices/virtio/vsock';
import type { NotifyOps } from '../hv/partition';
import { asKvmError, native, nativeBinding, type NativeBinding, type NativeVm } from '../hv/native';

export const VHOST_VSOCK_PATH = '/dev/vhost-vsock';

export interface OpenedVhostVsock extends VhostVsockOps {
  readonly fd: number;
  /** Close the device (frees the CID); a second call does nothing. */
  close(): void;
}

function codeOf(e: unknown): string | undefined {
  return (e as { code?: string }).code;
}

/** Open /dev/vhost-vsock for a guest with `cid`. Throws ERR_VSOCK with one sentence. */
export function openVhostVsock(cid: number, path = VHOST_VSOCK_PATH, binding: NativeBinding = nativeBinding()): OpenedVhostVsock {
  const v = binding.vhost;
  let fd: number;
  try {
    fd = v.open(path);
  } catch (e) {
    const code = codeOf(e);
    const why =
      code === 'ENOENT' ? `${path} does not exist: load the vhost_vsock module (modprobe vhost_vsock)`
      : code === 'EACCES' || code === 'EPERM' ? `${path} exists but this user may not open it (run as root or give the user read-write access to it)`
      : `cannot open ${path}: ${(e as Error).message}`;
    throw new NodevmmError('ERR_VSOCK', `vsock: ${why}`, { cause: e });
  }
  let features: bigint;
  try {
    native(() => v.setOwner(fd));
    features = native(() => v.getFeatures(fd));
    try {
      v.vsockSetGuestCid(fd, cid);
    } catch (e) {
      if (codeOf(e) === 'EADDRINUSE') throw new NodevmmError('ERR_VSOCK', `vsock cid ${cid} is already used by another VM on this host (give vsock.cid another value)`, { cause: e });
      throw asKvmError(e);
    }
  } catch (e) {
    binding.closeFd(fd);
    throw e;
  }
  let open = true;
  const call = <T>(f: () => T): T => native(f);
  return {
    fd,
    features,
    setFeatures: (f) => call(() => v.setFeatures(fd, f)),
    setMemTable: (regions) => call(() => v.setMemTable(fd, regions)),
    setVringNum: (i, n) => call(() => v.setVringNum(fd, i, n)),
    setVringBase: (i, n) => call(() => v.setVringBase(fd, i, n)),
    setVringAddr: (i, a) => call(() => v.setVringAddr(fd, i, a)),
    getVringBase: (i) => call(() => v.getVringBase(fd, i)),
    setVringKick: (i, efd) => call(() => v.setVringKick(fd, i, efd)),
    setVringCall: (i, efd) => call(() => v.setVringCall(fd, i, efd)),
    setRunning: (r) => call(() => v.vsockSetRunning(fd, r)),
    close: () => {
      if (!open) return;
      open = false;
      binding.closeFd(fd);
    },
  };
}

