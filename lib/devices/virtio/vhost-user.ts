/**
 * The vhost-user protocol, frontend side (QEMU docs/interop/vhost-user.rst):
 * message framing, the payloads nodevmm sends, and `VhostUserFrontend`,
 * which sequences requests and replies over any transport that moves bytes
 * and file descriptors (lib/vm/vhost-user-client.ts gives it a UNIX socket).
 *
 * Wire format: a 12-byte little-endian header (u32 request, u32 flags, u32
 * payload size) and the payload; fds ride along as SCM_RIGHTS. Flags: bits
 * 0-1 the version (1), bit 2 "this is a reply", bit 3 "reply wanted" (with
 * REPLY_ACK negotiated, a request without its own reply then gets a u64 ack,
 * 0 for success). Not here: the backend-initiated channel (BACKEND_REQ),
 * dirty logging, inflight tracking, postcopy; none is negotiated.
 *
 * The backend is a helper we started, not the guest, but a broken or dying
 * one must not take the VMM with it: replies are checked (request code,
 * reply flag, size) and bounded, and any violation throws VhostUserError.
 */
import { NodevmmError } from '../../errors';

export const VHOST_USER_HEADER_BYTES = 12;
export const VHOST_USER_VERSION = 1;
export const VHOST_USER_FLAG_REPLY = 1 << 2;
export const VHOST_USER_FLAG_NEED_REPLY = 1 << 3;
/** The largest reply payload we accept (GET_CONFIG's is 12 + 256 bytes, the rest are 8). */
export const VHOST_USER_MAX_REPLY_BYTES = 4096;
/** Regions a SET_MEM_TABLE may carry (VHOST_MEMORY_BASELINE_NREGIONS). */
export const VHOST_USER_MAX_MEM_REGIONS = 8;

/** Request codes (vhost-user.rst, "Front-end message types"). */
export const VhostUserRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  GET_CONFIG: 24,
} as const;
export type VhostUserRequestCode = (typeof VhostUserRequest)[keyof typeof VhostUserRequest];

const REQUEST_NAMES = new Map<number, string>(Object.entries(VhostUserRequest).map(([k, v]) => [v, k]));
export function requestName(code: number): string {
  return REQUEST_NAMES.get(code) ?? `request ${code}`;
}

/** Virtio feature bit 30: the backend speaks protocol features (GET/SET_PROTOCOL_FEATURES). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30n;
/** Protocol feature bits we use. */
export const VHOST_USER_PROTOCOL_F_MQ = 0n;
export const VHOST_USER_PROTOCOL_F_REPLY_ACK = 3n;
export const VHOST_USER_PROTOCOL_F_CONFIG = 9n;
/** SET_VRING_KICK/CALL u64: bits 0-7 the ring, bit 8 "no fd attached". */
export const VHOST_USER_VRING_NOFD = 1n << 8n;

/** The backend broke the protocol, refused a request, or went away. */
export class VhostUserError extends NodevmmError {
  constructor(message: string, opts?: { cause?: unknown }) {
    super('ERR_VHOST_USER', message, opts);
  }
}

export interface VhostUserHeader {
  request: number;
  flags: number;
  size: number;
}

/** One message: header and payload in one buffer. */
export function encodeMessage(request: number, payload: Uint8Array = new Uint8Array(0), flags = 0): Uint8Array {
  const out = new Uint8Array(VHOST_USER_HEADER_BYTES + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, VHOST_USER_VERSION | flags, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, VHOST_USER_HEADER_BYTES);
  return out;
}

export function decodeHeader(bytes: Uint8Array): VhostUserHeader {
  if (bytes.length < VHOST_USER_HEADER_BYTES) throw new VhostUserError(`a vhost-user header is ${VHOST_USER_HEADER_BYTES} bytes, got ${bytes.length}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, VHOST_USER_HEADER_BYTES);
  return { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
}

export function encodeU64(v: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
  return out;
}

export function decodeU64(payload: Uint8Array, what: string): bigint {
  if (payload.length !== 8) throw new VhostUserError(`the reply to ${what} has ${payload.length} payload bytes, expected 8`);
  return new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0, true);
}

/** struct vhost_vring_state: u32 index, u32 num. */
export function encodeVringState(index: number, num: number): Uint8Array {
  const out = new Uint8Array(8);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, index, true);
  dv.setUint32(4, num, true);
  return out;
}

export function decodeVringState(payload: Uint8Array, what: string): { index: number; num: number } {
  if (payload.length !== 8) throw new VhostUserError(`the reply to ${what} has ${payload.length} payload bytes, expected 8`);
  const dv = new DataView(payload.buffer, payload.byteOffset, 8);
  return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
}

/** Ring addresses, as the frontend's own virtual addresses (translated through the memory table's userAddr). */
export interface VringAddresses {
  desc: bigint;
  avail: bigint;
  used: bigint;
}

/** struct vhost_vring_addr: u32 index, u32 flags, u64 desc, u64 used, u64 avail, u64 log. */
export function encodeVringAddr(index: number, a: VringAddresses): Uint8Array {
  const out = new Uint8Array(40);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, index, true);
  dv.setUint32(4, 0, true); // no VHOST_VRING_F_LOG: we never log dirty pages
  dv.setBigUint64(8, a.desc, true);
  dv.setBigUint64(16, a.used, true);
  dv.setBigUint64(24, a.avail, true);
  dv.setBigUint64(32, 0n, true);
  return out;
}

/** A guest RAM region for SET_MEM_TABLE; its fd goes along as SCM_RIGHTS. */
export interface VhostUserMemRegion {
  gpa: number;
  size: number;
  /** Where this process maps it: ring addresses are given in this space. */
  userAddr: bigint;
  /** Offset of the region in `fd`. */
  mmapOffset: number;
  fd: number;
}

/** VhostUserMemory: u32 nregions, u32 padding, then per region u64 gpa, size, userspace_addr, mmap_offset. */
export function encodeMemTable(regions: readonly VhostUserMemRegion[]): Uint8Array {
  if (regions.length === 0 || regions.length > VHOST_USER_MAX_MEM_REGIONS) throw new VhostUserError(`a vhost-user memory table takes 1 to ${VHOST_USER_MAX_MEM_REGIONS} regions, got ${regions.length}`);
  const out = new Uint8Array(8 + 32 * regions.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, regions.length, true);
  regions.forEach((r, i) => {
    const at = 8 + 32 * i;
    dv.setBigUint64(at, BigInt(r.gpa), true);
    dv.setBigUint64(at + 8, BigInt(r.size), true);
    dv.setBigUint64(at + 16, r.userAddr, true);
    dv.setBigUint64(at + 24, BigInt(r.mmapOffset), true);
  });
  return out;
}

/** The kick/call u64: the ring index, plus NOFD when no eventfd is attached. */
export function encodeVringFd(index: number, hasFd: boolean): Uint8Array {
  return encodeU64(BigInt(index & 0xff) | (hasFd ? 0n : VHOST_USER_VRING_NOFD));
}

/** What a frontend needs from the connection: whole messages out (with fds), exact byte counts in. */
export interface VhostUserTransport {
  send(bytes: Uint8Array, fds: readonly number[]): void;
  /** Exactly `length` bytes (throws when the peer closes or stops answering); fds that arrived with them. */
  receive(length: number): { bytes: Uint8Array; fds: number[] };
  /** Close fds the backend sent (we never ask for any). */
  closeFd(fd: number): void;
}

/**
 * The frontend's requests, one method each. `open()` negotiates: it reads the
 * backend's features, takes protocol features when offered (REPLY_ACK, so
 * every set is confirmed or refused), and claims ownership.
 */
export class VhostUserFrontend {
  /** The backend's virtio features, without VHOST_USER_F_PROTOCOL_FEATURES. */
  features = 0n;
  /** Protocol features both sides agreed on (0 when the backend has none). */
  protocolFeatures = 0n;
  private protocol = false;

  constructor(private readonly transport: VhostUserTransport) {}

  /** Handshake: GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER. */
  open(want: bigint = (1n << VHOST_USER_PROTOCOL_F_REPLY_ACK) | (1n << VHOST_USER_PROTOCOL_F_CONFIG)): void {
    const features = decodeU64(this.call(VhostUserRequest.GET_FEATURES), 'GET_FEATURES');
    this.protocol = (features & (1n << VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n;
    this.features = features & ~(1n << VHOST_USER_F_PROTOCOL_FEATURES);
    if (this.protocol) {
      const offered = decodeU64(this.call(VhostUserRequest.GET_PROTOCOL_FEATURES), 'GET_PROTOCOL_FEATURES');
      const agreed = offered & want;
      this.request(VhostUserRequest.SET_PROTOCOL_FEATURES, encodeU64(agreed));
      this.protocolFeatures = agreed;
    }
    this.request(VhostUserRequest.SET_OWNER);
  }

  /** True once `feature` (a protocol feature bit) was agreed. */
  hasProtocolFeature(bit: bigint): boolean {
    return (this.protocolFeatures & (1n << bit)) !== 0n;
  }

  /** The driver's features; VHOST_USER_F_PROTOCOL_FEATURES is added when the backend has it (it must stay set). */
  setFeatures(features: bigint): void {
    this.request(VhostUserRequest.SET_FEATURES, encodeU64(features | (this.protocol ? 1n << VHOST_USER_F_PROTOCOL_FEATURES : 0n)));
  }

  setMemTable(regions: readonly VhostUserMemRegion[]): void {
    this.request(VhostUserRequest.SET_MEM_TABLE, encodeMemTable(regions), regions.map((r) => r.fd));
  }

  setVringNum(index: number, num: number): void {
    this.request(VhostUserRequest.SET_VRING_NUM, encodeVringState(index, num));
  }

  setVringBase(index: number, base: number): void {
    this.request(VhostUserRequest.SET_VRING_BASE, encodeVringState(index, base));
  }

  setVringAddr(index: number, a: VringAddresses): void {
    this.request(VhostUserRequest.SET_VRING_ADDR, encodeVringAddr(index, a));
  }

  /** Stops the ring; returns the next available index the backend would have read. */
  getVringBase(index: number): number {
    const s = decodeVringState(this.call(VhostUserRequest.GET_VRING_BASE, encodeVringState(index, 0)), 'GET_VRING_BASE');
    if (s.index !== index) throw new VhostUserError(`the reply to GET_VRING_BASE names ring ${s.index}, asked for ${index}`);
    return s.num;
  }

  /** fd -1: no eventfd (the ring is polled, or detached). */
  setVringKick(index: number, fd: number): void {
    this.request(VhostUserRequest.SET_VRING_KICK, encodeVringFd(index, fd >= 0), fd >= 0 ? [fd] : []);
  }

  setVringCall(index: number, fd: number): void {
    this.request(VhostUserRequest.SET_VRING_CALL, encodeVringFd(index, fd >= 0), fd >= 0 ? [fd] : []);
  }

  /** Only with protocol features (without them every ring is enabled from the start). */
  setVringEnable(index: number, enable: boolean): void {
    if (!this.protocol) return;
    this.request(VhostUserRequest.SET_VRING_ENABLE, encodeVringState(index, enable ? 1 : 0));
  }

  /** The backend's config space bytes [offset, offset + size) (needs the CONFIG protocol feature). */
  getConfig(offset: number, size: number): Uint8Array {
    if (!this.hasProtocolFeature(VHOST_USER_PROTOCOL_F_CONFIG)) throw new VhostUserError('the backend has no config space (no VHOST_USER_PROTOCOL_F_CONFIG)');
    const req = new Uint8Array(12 + size);
    const dv = new DataView(req.buffer);
    dv.setUint32(0, offset, true);
    dv.setUint32(4, size, true);
    const reply = this.call(VhostUserRequest.GET_CONFIG, req);
    if (reply.length !== 12 + size) throw new VhostUserError(`the reply to GET_CONFIG has ${reply.length} payload bytes, expected ${12 + size}`);
    return reply.slice(12);
  }

  /** A request whose reply carries data. */
  private call(request: VhostUserRequestCode, payload?: Uint8Array): Uint8Array {
    this.transport.send(encodeMessage(request, payload), []);
    return this.readReply(request);
  }

  /** A request without its own reply: acknowledged when REPLY_ACK was agreed. */
  private request(request: VhostUserRequestCode, payload?: Uint8Array, fds: readonly number[] = []): void {
    const ack = this.hasProtocolFeature(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    this.transport.send(encodeMessage(request, payload, ack ? VHOST_USER_FLAG_NEED_REPLY : 0), fds);
    if (!ack) return;
    const status = decodeU64(this.readReply(request), requestName(request));
    if (status !== 0n) throw new VhostUserError(`the backend refused ${requestName(request)} (status ${status})`);
  }

  private readReply(request: number): Uint8Array {
    const head = this.transport.receive(VHOST_USER_HEADER_BYTES);
    for (const fd of head.fds) this.transport.closeFd(fd);
    const h = decodeHeader(head.bytes);
    const name = requestName(request);
    if (h.request !== request) throw new VhostUserError(`the backend answered ${name} with a reply to ${requestName(h.request)}`);
    if (!(h.flags & VHOST_USER_FLAG_REPLY) || (h.flags & 3) !== VHOST_USER_VERSION) throw new VhostUserError(`the backend's reply to ${name} has flags 0x${h.flags.toString(16)} (expected version ${VHOST_USER_VERSION} with the reply bit)`);
    if (h.size > VHOST_USER_MAX_REPLY_BYTES) throw new VhostUserError(`the backend's reply to ${name} claims ${h.size} payload bytes (at most ${VHOST_USER_MAX_REPLY_BYTES})`);
    if (h.size === 0) return new Uint8Array(0);
    const body = this.transport.receive(h.size);
    for (const fd of body.fds) this.transport.closeFd(fd);
    return body.bytes;
  }
}
