/**
 * The real backends of virtio-vsock: /dev/vhost-vsock opened, owned and
 * given the guest's CID (with one-sentence errors for the two things a user
 * can fix: the module is not loaded or not accessible, the CID is taken),
 * and eventfds registered on the VM fd as ioeventfds and irqfds.
 */
import { NodevmmError } from '../errors';
import type { VhostVsockOps } from '../devices/virtio/vsock';
import { vhostHostOps, type VhostHostOps } from '../hv/host-ops';

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
export function openVhostVsock(cid: number, path = VHOST_VSOCK_PATH, v: VhostHostOps = vhostHostOps()): OpenedVhostVsock {
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
    v.setOwner(fd);
    features = v.getFeatures(fd);
    try {
      v.vsockSetGuestCid(fd, cid);
    } catch (e) {
      if (codeOf(e) === 'EADDRINUSE') throw new NodevmmError('ERR_VSOCK', `vsock cid ${cid} is already used by another VM on this host (give vsock.cid another value)`, { cause: e });
      throw e;
    }
  } catch (e) {
    v.close(fd);
    throw e;
  }
  let open = true;
  return {
    fd,
    features,
    setFeatures: (f) => v.setFeatures(fd, f),
    setMemTable: (regions) => v.setMemTable(fd, regions),
    setVringNum: (i, n) => v.setVringNum(fd, i, n),
    setVringBase: (i, n) => v.setVringBase(fd, i, n),
    setVringAddr: (i, a) => v.setVringAddr(fd, i, a),
    getVringBase: (i) => v.getVringBase(fd, i),
    setVringKick: (i, efd) => v.setVringKick(fd, i, efd),
    setVringCall: (i, efd) => v.setVringCall(fd, i, efd),
    setRunning: (r) => v.vsockSetRunning(fd, r),
    close: () => {
      if (!open) return;
      open = false;
      v.close(fd);
    },
  };
}

