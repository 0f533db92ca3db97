/**
 * lib/devices/virtio/vhost-user.ts: the frontend's wire format (checked
 * byte by byte against vhost-user.rst's layouts) and its request/reply
 * sequencing against a scripted backend that decodes what it is sent.
 */
import test from 'ava';
import {
  decodeHeader,
  encodeMemTable,
  encodeMessage,
  encodeVringAddr,
  encodeVringFd,
  VHOST_USER_FLAG_NEED_REPLY,
  VHOST_USER_FLAG_REPLY,
  VhostUserError,
  VhostUserFrontend,
  VhostUserRequest as R,
  type VhostUserTransport,
} from '../../../lib/devices/virtio/vhost-user';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

test('a message is a 12-byte little-endian header (request, flags with version 1, size) and the payload', (t) => {
  const m = encodeMessage(R.SET_VRING_NUM, new Uint8Array([1, 0, 0, 0, 0, 1, 0, 0]), VHOST_USER_FLAG_NEED_REPLY);
  t.is(
    hex(m),
    [
      '08000000', // 0x00 request: SET_VRING_NUM (8)
      '09000000', // 0x04 flags: version 1 | NEED_REPLY (bit 3)
      '08000000', // 0x08 size: 8
      '01000000', // 0x0c vhost_vring_state.index: 1
      '00010000', // 0x10 vhost_vring_state.num: 256
    ].join(''),
  );
  t.deepEqual(decodeHeader(m), { request: 8, flags: 9, size: 8 });
});

test('SET_VRING_ADDR carries index, flags, then desc, used, avail, log in that order', (t) => {
  const p = encodeVringAddr(1, { desc: 0x1000n, avail: 0x2000n, used: 0x3000n });
  t.is(
    hex(p),
    [
      '01000000', // 0x00 index
      '00000000', // 0x04 flags: no VHOST_VRING_F_LOG
      '0010000000000000', // 0x08 desc_user_addr
      '0030000000000000', // 0x10 used_user_addr
      '0020000000000000', // 0x18 avail_user_addr
      '0000000000000000', // 0x20 log_guest_addr
    ].join(''),
  );
});

test('SET_MEM_TABLE carries the region count, padding, and gpa, size, userspace address, mmap offset per region', (t) => {
  const p = encodeMemTable([{ gpa: 0x100000, size: 0x200000, userAddr: 0x7f0000000000n, mmapOffset: 0, fd: 9 }]);
  t.is(
    hex(p),
    [
      '01000000', // 0x00 nregions
      '00000000', // 0x04 padding
      '0000100000000000', // 0x08 guest_phys_addr
      '0000200000000000', // 0x10 memory_size
      '00000000007f0000', // 0x18 userspace_addr
      '0000000000000000', // 0x20 mmap_offset
    ].join(''),
  );
  t.throws(() => encodeMemTable([]), { instanceOf: VhostUserError });
  const nine = Array.from({ length: 9 }, (_, i) => ({ gpa: i * 4096, size: 4096, userAddr: 0n, mmapOffset: 0, fd: 3 }));
  t.throws(() => encodeMemTable(nine), { message: /1 to 8 regions, got 9/ });
});

test('kick and call name the ring in bits 0-7 and set bit 8 when no fd rides along', (t) => {
  t.is(hex(encodeVringFd(1, true)), '0100000000000000');
  t.is(hex(encodeVringFd(1, false)), '0101000000000000');
});

/** A backend that decodes every message it gets and answers from `replies` (by request), recording what it saw. */
function scriptedBackend(opts: { features?: bigint; protocol?: bigint; ackStatus?: (req: number) => bigint; reply?: (req: number, payload: Uint8Array) => Uint8Array | undefined } = {}) {
  const seen: Array<{ request: number; flags: number; payload: Uint8Array; fds: readonly number[] }> = [];
  let pending = Buffer.alloc(0);
  const closed: number[] = [];
  const answer = (request: number, payload: Uint8Array) => {
    pending = Buffer.concat([pending, Buffer.from(encodeMessage(request, payload, VHOST_USER_FLAG_REPLY))]);
  };
  const u64 = (v: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    return b;
  };
  const transport: VhostUserTransport = {
    send(bytes, fds) {
      const h = decodeHeader(bytes);
      const payload = bytes.slice(12, 12 + h.size);
      seen.push({ request: h.request, flags: h.flags, payload, fds: [...fds] });
      const custom = opts.reply?.(h.request, payload);
      if (custom) pending = Buffer.concat([pending, Buffer.from(custom)]);
      else if (h.request === R.GET_FEATURES) answer(h.request, u64(opts.features ?? (1n << 32n) | (1n << 30n)));
      else if (h.request === R.GET_PROTOCOL_FEATURES) answer(h.request, u64(opts.protocol ?? 0b1000n));
      else if (h.request === R.GET_VRING_BASE) answer(h.request, payload.slice(0, 4).length ? Buffer.concat([Buffer.from(payload.slice(0, 4)), Buffer.from([7, 0, 0, 0])]) : new Uint8Array(0));
      else if (h.flags & VHOST_USER_FLAG_NEED_REPLY) answer(h.request, u64(opts.ackStatus?.(h.request) ?? 0n));
    },
    receive(length) {
      if (pending.length < length) throw new Error(`the backend has ${pending.length} bytes, ${length} wanted`);
      const bytes = new Uint8Array(pending.subarray(0, length));
      pending = pending.subarray(length);
      return { bytes, fds: [] };
    },
    closeFd: (fd) => closed.push(fd),
  };
  return { transport, seen, closed, leftover: () => pending.length };
}

test('open() reads the features, agrees on REPLY_ACK, claims ownership; sets are acknowledged from then on', (t) => {
  const b = scriptedBackend({ protocol: (1n << 3n) | (1n << 0n) });
  const f = new VhostUserFrontend(b.transport);
  f.open();
  t.deepEqual(
    b.seen.map((m) => m.request),
    [R.GET_FEATURES, R.GET_PROTOCOL_FEATURES, R.SET_PROTOCOL_FEATURES, R.SET_OWNER],
  );
  t.is(f.features, 1n << 32n, 'VHOST_USER_F_PROTOCOL_FEATURES is not a virtio feature');
  t.is(Buffer.from(b.seen[2]!.payload).readBigUInt64LE(), 1n << 3n, 'only REPLY_ACK of what was offered is taken (MQ is not asked for)');
  t.is(b.seen[3]!.flags & VHOST_USER_FLAG_NEED_REPLY, VHOST_USER_FLAG_NEED_REPLY);
  f.setFeatures(1n << 32n);
  t.is(Buffer.from(b.seen[4]!.payload).readBigUInt64LE(), (1n << 32n) | (1n << 30n), 'SET_FEATURES keeps bit 30 set');
  f.setMemTable([{ gpa: 0, size: 4096, userAddr: 0n, mmapOffset: 0, fd: 42 }]);
  t.deepEqual(b.seen[5]!.fds, [42], 'the RAM fd rides along');
  f.setVringKick(0, 17);
  f.setVringCall(0, -1);
  t.deepEqual(b.seen[6]!.fds, [17]);
  t.deepEqual(b.seen[7]!.fds, []);
  t.is(f.getVringBase(0), 7);
  t.is(b.leftover(), 0, 'every reply was read');
});

test('a backend without protocol features gets no GET_PROTOCOL_FEATURES, no acks asked for, and no SET_VRING_ENABLE', (t) => {
  const b = scriptedBackend({ features: 1n << 32n });
  const f = new VhostUserFrontend(b.transport);
  f.open();
  f.setVringEnable(0, true);
  f.setVringNum(0, 128);
  t.deepEqual(
    b.seen.map((m) => m.request),
    [R.GET_FEATURES, R.SET_OWNER, R.SET_VRING_NUM],
  );
  t.true(b.seen.every((m) => !(m.flags & VHOST_USER_FLAG_NEED_REPLY)));
});

test('a refused request throws with its name and status', (t) => {
  const b = scriptedBackend({ ackStatus: (req) => (req === R.SET_MEM_TABLE ? 1n : 0n) });
  const f = new VhostUserFrontend(b.transport);
  f.open();
  t.throws(() => f.setMemTable([{ gpa: 0, size: 4096, userAddr: 0n, mmapOffset: 0, fd: 3 }]), { instanceOf: VhostUserError, message: 'the backend refused SET_MEM_TABLE (status 1)' });
});

test('replies that break the protocol are refused: another request, no reply flag, a huge size, a wrong length', (t) => {
  const cases: Array<[(req: number, payload: Uint8Array) => Uint8Array | undefined, RegExp]> = [
    [(req) => (req === R.GET_FEATURES ? encodeMessage(R.GET_QUEUE_NUM, new Uint8Array(8), VHOST_USER_FLAG_REPLY) : undefined), /answered GET_FEATURES with a reply to GET_QUEUE_NUM/],
    [(req) => (req === R.GET_FEATURES ? encodeMessage(R.GET_FEATURES, new Uint8Array(8), 0) : undefined), /reply to GET_FEATURES has flags 0x1/],
    [
      (req) => {
        if (req !== R.GET_FEATURES) return undefined;
        const m = encodeMessage(R.GET_FEATURES, new Uint8Array(0), VHOST_USER_FLAG_REPLY);
        new DataView(m.buffer).setUint32(8, 1 << 30, true);
        return m;
      },
      /claims 1073741824 payload bytes \(at most 4096\)/,
    ],
    [(req) => (req === R.GET_FEATURES ? encodeMessage(R.GET_FEATURES, new Uint8Array(4), VHOST_USER_FLAG_REPLY) : undefined), /reply to GET_FEATURES has 4 payload bytes, expected 8/],
  ];
  for (const [reply, message] of cases) {
    const f = new VhostUserFrontend(scriptedBackend({ reply }).transport);
    t.throws(() => f.open(), { instanceOf: VhostUserError, message });
  }
});

test('GET_VRING_BASE must answer for the ring asked about', (t) => {
  const b = scriptedBackend({ reply: (req) => (req === R.GET_VRING_BASE ? encodeMessage(R.GET_VRING_BASE, new Uint8Array([1, 0, 0, 0, 5, 0, 0, 0]), VHOST_USER_FLAG_REPLY) : undefined) });
  const f = new VhostUserFrontend(b.transport);
  f.open();
  t.throws(() => f.getVringBase(0), { message: /names ring 1, asked for 0/ });
});
