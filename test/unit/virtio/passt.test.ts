/**
 * User networking: the stream framing (random chunking against the frames
 * sent), the bounded queues in both directions against a real socket peer,
 * `--net user,...` and `net: [{ user }]` parsing, real passt answering a DHCP
 * DISCOVER through the backend (on this host, in a network namespace without
 * routes, and as root without a user database that knows nobody), and
 * helpers (and passt) dying with a SIGKILLed Node.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError } from '../../../lib/errors';
import { parseNetFlag, parseRunArgs } from '../../../lib/cli/args';
import { resolveVmConfig } from '../../../lib/vm/config';
import { copyFrameInto, encodeFrame, FrameDecoder, FrameStreamError, hasIpv4DefaultRoute, MAX_FRAME_BYTES, PasstBackend, passtAddressArgs, passtForwardArgs, passtRunAsArgs, RX_QUEUE_MAX_BYTES, RX_QUEUE_MAX_FRAMES, TX_QUEUE_MAX_BYTES } from '../../../lib/devices/passt';
import { findExecutable, spawnHelper } from '../../../lib/util/helper-process';

function randomInt(n: number): number {
  return Math.floor(Math.random() * n);
}

test('the frame decoder gives back exactly the frames sent, however the stream is cut', (t) => {
  for (let round = 0; round < 50; round++) {
    const frames = Array.from({ length: 1 + randomInt(40) }, () => randomBytes(1 + randomInt(round % 5 === 0 ? MAX_FRAME_BYTES : 2000)));
    const stream = Buffer.concat(frames.map((f) => encodeFrame([f.subarray(0, 3), f.subarray(3)])));
    const d = new FrameDecoder();
    const got: Uint8Array[] = [];
    for (let at = 0; at < stream.length; ) {
      const n = randomInt(4) === 0 ? 1 + randomInt(3) : 1 + randomInt(70_000);
      for (const f of d.push(stream.subarray(at, at + n))) got.push(Buffer.from(f));
      at += n;
    }
    t.is(d.pendingBytes, 0);
    t.is(got.length, frames.length);
    t.true(got.every((g, i) => Buffer.compare(g, frames[i]!) === 0), `round ${round}`);
  }
});

test('a frame length of 0 or beyond any MTU is a broken stream', (t) => {
  const hdr = (n: number) => Buffer.from([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
  t.throws(() => new FrameDecoder().push(hdr(0)), { instanceOf: FrameStreamError, message: 'a frame of 0 bytes (expected 1 to 65550)' });
  t.throws(() => new FrameDecoder().push(hdr(MAX_FRAME_BYTES + 1)), { instanceOf: FrameStreamError });
  t.throws(() => new FrameDecoder().push(hdr(0xffff_ffff)), { instanceOf: FrameStreamError });
  // A partial header is held, not misread.
  const d = new FrameDecoder();
  t.deepEqual(d.push(Buffer.from([0, 0])), []);
  t.deepEqual(d.push(Buffer.from([0, 2, 7, 8])).map((f) => [...f]), [[7, 8]]);
});

test('copyFrameInto fills buffers in order and reports the whole length', (t) => {
  const a = new Uint8Array(2);
  const b = new Uint8Array(5);
  t.is(copyFrameInto(Uint8Array.of(1, 2, 3, 4), [a, b]), 4);
  t.deepEqual([...a, ...b], [1, 2, 3, 4, 0, 0, 0]);
  t.is(copyFrameInto(new Uint8Array(10).fill(9), [a]), 10);
});

test('passt forward arguments', (t) => {
  t.deepEqual(passtForwardArgs([{ protocol: 'tcp', hostPort: 8080, guestPort: 80 }, { protocol: 'udp', hostPort: 5353, guestPort: 53, hostAddress: '127.0.0.1' }]), ['-t', '8080:80', '-u', '127.0.0.1/5353:53']);
});

// /proc/net/route as the kernel prints it (this machine's eth0; the hex fields are in network byte order).
const ROUTES_HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT                                                       ';
const ROUTE_DEFAULT = 'eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0                                                                               ';
const ROUTE_SUBNET = 'eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0                                                                               ';

test('passt is given QEMU\'s user-network layout only where the host has no IPv4 default route', (t) => {
  const table = (...lines: string[]) => [ROUTES_HEADER, ...lines, ''].join('\n');
  t.true(hasIpv4DefaultRoute(table(ROUTE_DEFAULT, ROUTE_SUBNET)));
  t.deepEqual(passtAddressArgs(table(ROUTE_DEFAULT, ROUTE_SUBNET)), [], 'passt copies the host interface');
  const fallback = ['--interface', 'lo', '--address', '10.0.2.15', '--netmask', '24', '--gateway', '10.0.2.2', '--mac-addr', '9a:55:9a:55:9a:55'];
  // A namespace without routes prints nothing at all, not even the header.
  t.deepEqual(passtAddressArgs(''), fallback);
  t.deepEqual(passtAddressArgs(table(ROUTE_SUBNET)), fallback, 'a subnet route is no default route');
  // A default route that is down (no RTF_UP) does not count.
  t.deepEqual(passtAddressArgs(table(ROUTE_DEFAULT.replace('0003', '0002'))), fallback);
  // /0 destination with a /24 mask is not a default route.
  t.deepEqual(passtAddressArgs(table(ROUTE_DEFAULT.replace(/00000000(\t0\t0\t0\s*)$/, '00FFFFFF$1'))), fallback);
  t.deepEqual(passtAddressArgs(undefined), [], 'without /proc passt decides');
});

test('--net user[,hostfwd=...][,mac=] becomes config; malformed values say what is expected', (t) => {
  t.deepEqual(parseNetFlag('user'), { user: { forward: [] } });
  t.deepEqual(parseNetFlag('user,hostfwd=tcp::2222-:22,hostfwd=udp:127.0.0.1:5353-:53,mac=52:54:00:00:00:09'), {
    user: { forward: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }, { protocol: 'udp', hostPort: 5353, guestPort: 53, hostAddress: '127.0.0.1' }] },
    mac: '52:54:00:00:00:09',
  });
  t.deepEqual(parseNetFlag('user,hostfwd=tcp:[::1]:8080-:80'), { user: { forward: [{ protocol: 'tcp', hostPort: 8080, guestPort: 80, hostAddress: '::1' }] } });
  t.is(parseNetFlag('user,hostfwd=tcp::22-10.0.2.15:22'), '"hostfwd=tcp::22-10.0.2.15:22" in "user,hostfwd=tcp::22-10.0.2.15:22" is not hostfwd=tcp:[HOSTADDR]:HOSTPORT-:GUESTPORT (or udp:) or mac=MAC');
  t.regex(parseNetFlag('usr') as string, /is not tap:NAME\[,mac=MAC\] or user/);
  const a = parseRunArgs(['--kernel', 'k', '--net', 'user,hostfwd=tcp::8080-:80', '--net', 'tap:tap0']);
  t.deepEqual(a.config.net, [{ user: { forward: [{ protocol: 'tcp', hostPort: 8080, guestPort: 80 }] } }, { tap: 'tap0' }]);
  // Bad port numbers are caught by the config check, naming the field.
  const e = t.throws(() => resolveVmConfig(parseRunArgs(['--kernel', 'k', '--net', 'user,hostfwd=tcp::70000-:80']).config), { instanceOf: ConfigError });
  t.deepEqual(e!.issues, [{ path: 'net[0].user.forward[0].hostPort', message: '70000 must be a port number from 1 to 65535' }]);
});

test('config: user NICs resolve with defaults and reject bad shapes, naming the field', (t) => {
  const c = resolveVmConfig({ kernel: 'k', name: 'w', net: [{ user: {} }, { user: { forward: [{ hostPort: 1, guestPort: 2 }] } }] });
  t.deepEqual(c.net[0]!.user, { forward: [] });
  t.deepEqual(c.net[1]!.user, { forward: [{ protocol: 'tcp', hostPort: 1, guestPort: 2 }] });
  t.regex(c.net[0]!.mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
  t.not(c.net[0]!.mac, c.net[1]!.mac);
  const e = t.throws(
    () =>
      resolveVmConfig({
        kernel: 'k',
        net: [
          { tap: 't0', user: {} },
          {},
          { user: { forward: [{ hostPort: 80, guestPort: 0 }] } },
          { user: { forward: [{ hostPort: 80, guestPort: 8, protocol: 'sctp' as never }] } },
          { user: { forward: [{ hostPort: 80, guestPort: 8, hostAddress: 'localhost' }] } },
          { user: { forward: [{ hostPort: 81, guestPort: 8 }, { hostPort: 81, guestPort: 9 }] } },
          { user: { ports: [] } as never },
          { user: { forward: [{ hostPort: 82, guestPort: 8 }] } },
          { user: { forward: [{ hostPort: 82, guestPort: 9 }] } },
        ],
      }),
    { instanceOf: ConfigError },
  );
  t.deepEqual(
    e!.issues.map((i) => `${i.path}: ${i.message}`),
    [
      'net[0]: has both tap and user: a NIC is on a TAP or on user networking',
      'net[1]: needs tap (a host TAP) or user (passt user networking)',
      'net[2].user.forward[0].guestPort: 0 must be a port number from 1 to 65535',
      'net[3].user.forward[0].protocol: "sctp" must be tcp or udp',
      'net[4].user.forward[0].hostAddress: "localhost" is not an IPv4 or IPv6 address',
      'net[5].user.forward[1].hostPort: tcp host port 81 is forwarded twice',
      'net[6].user.ports: is not a known option (known: forward)',
      'net[8].user.forward: tcp host port 82 is forwarded twice',
    ],
  );
});

/** A peer at fd 3 of a helper: a node script (the test's stand-in for passt's end of the socket). */
function peer(script: string) {
  return spawnHelper({ name: 'test-peer', command: process.execPath, args: ['-e', script], installHint: 'node', extraStdio: ['pipe'] });
}

test.serial('frames from the peer wait in a bounded queue while the guest takes none, and all arrive in order once it does', async (t) => {
  const FRAMES = 6000;
  const SIZE = 1000;
  // Writes FRAMES numbered frames as fast as the socket takes them.
  const helper = peer(`
    const fs = require('fs'); const net = require('net'); const s = new net.Socket({ fd: 3 });
    let i = 0; const next = () => { while (i < ${FRAMES}) { const b = Buffer.alloc(4 + ${SIZE}, i & 255); b.writeUInt32BE(${SIZE}, 0); b.writeUInt32BE(i, 4); i++; if (!s.write(b)) return s.once('drain', next); } };
    next(); setInterval(() => {}, 1000);`);
  const b = PasstBackend.attach(helper);
  t.teardown(() => b.close());
  b.watch(() => {});
  b.pauseReads();
  // Wait until the queue hit its bound, in bytes or in frames, whichever comes first for these
  // frames, and the socket was paused (the peer then blocks). A deadline, so a queue that never
  // fills fails the test instead of hanging it.
  const bound = Math.min(RX_QUEUE_MAX_BYTES, RX_QUEUE_MAX_FRAMES * SIZE);
  const deadline = Date.now() + 30_000;
  let maxQueued = 0;
  while (b.queuedBytes < bound) {
    if (Date.now() > deadline) return t.fail(`the queue held ${b.queuedBytes} bytes after 30 s, never reaching its bound of ${bound}`);
    await new Promise((r) => setTimeout(r, 20));
    maxQueued = Math.max(maxQueued, b.queuedBytes);
  }
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 10));
    maxQueued = Math.max(maxQueued, b.queuedBytes);
  }
  t.true(maxQueued <= RX_QUEUE_MAX_BYTES + 65_536, `queued ${maxQueued} bytes`);
  const buf = new Uint8Array(2048);
  let expect = 0;
  const readDeadline = Date.now() + 30_000;
  while (expect < FRAMES) {
    const n = b.readv([buf]);
    if (n < 0) {
      if (Date.now() > readDeadline) return t.fail(`only ${expect} of ${FRAMES} frames arrived within 30 s`);
      await new Promise((r) => setImmediate(r));
      continue;
    }
    maxQueued = Math.max(maxQueued, b.queuedBytes);
    t.is(n, SIZE);
    const seq = new DataView(buf.buffer).getUint32(0);
    if (seq !== expect) return t.fail(`frame ${seq} arrived where ${expect} was expected`);
    expect++;
  }
  t.true(maxQueued <= RX_QUEUE_MAX_BYTES + 65_536);
  t.is(b.counters.rxFrames, FRAMES);
});

test.serial('frames to a peer that reads nothing are refused once the bound is reached, never queued without limit', async (t) => {
  const helper = peer('setInterval(() => {}, 1000);');
  const b = PasstBackend.attach(helper);
  t.teardown(() => b.close());
  const frame = new Uint8Array(1500);
  let refused = 0;
  for (let i = 0; i < 20_000 && refused === 0; i++) if (b.writev([frame]) < 0) refused++;
  t.is(refused, 1);
  t.true(b.unsentBytes <= TX_QUEUE_MAX_BYTES + 1504, `${b.unsentBytes} bytes queued`);
  t.is(b.counters.txRefused, 1);
});

test.serial('frames written in one turn leave together at its end, and the peer gets each whole and in order', async (t) => {
  const FRAMES = 40;
  // Counts the frames it reads and how many reads they took; reports once all arrived.
  const helper = peer(`
    const net = require('net'); const s = new net.Socket({ fd: 3 });
    let buf = Buffer.alloc(0), frames = 0, reads = 0, ok = true;
    s.on('data', (d) => { reads++; buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) { const len = buf.readUInt32BE(0); if (len !== 1000 + frames || buf[4] !== (frames & 255)) ok = false; frames++; buf = buf.subarray(4 + len); }
      if (frames === ${FRAMES}) process.stderr.write(JSON.stringify({ ok, reads }) + '\\n'); });
    setInterval(() => {}, 1000);`);
  const b = PasstBackend.attach(helper);
  t.teardown(() => b.close());
  let expected = 0;
  for (let i = 0; i < FRAMES; i++) {
    t.is(b.writev([new Uint8Array(1000 + i).fill(i & 255)]), 1000 + i);
    expected += 4 + 1000 + i;
  }
  // Nothing reached the kernel yet: the whole turn's frames wait for one write.
  t.is(b.unsentBytes, expected);
  t.is(b.counters.txFrames, FRAMES);
  await new Promise((r) => setImmediate(r));
  t.is(b.unsentBytes, 0);
  const deadline = Date.now() + 10_000;
  while (!/\}/.test(helper.stderrTail())) {
    if (Date.now() > deadline) return t.fail(`the peer did not get ${FRAMES} frames: ${helper.stderrTail()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  t.true((JSON.parse(helper.stderrTail()) as { ok: boolean }).ok, helper.stderrTail());
});

test.serial('a peer that exits while open is one sentence through onFailure, with its stderr', async (t) => {
  const helper = peer('process.stderr.write("No external routable interface for IPv4\\n"); process.exit(1);');
  const b = PasstBackend.attach(helper);
  t.teardown(() => b.close());
  const msg = await new Promise<string>((r) => (b.onFailure = r));
  t.regex(msg, /^test-peer \(pid \d+\) exited with status 1: No external routable interface for IPv4$/);
});

test.serial('a peer that exits with our frames unread is its exit and stderr, not the socket\'s ECONNRESET', async (t) => {
  // passt that fails its start-up never reads the guest's first frames; the kernel then resets our end.
  const helper = peer('process.stderr.write("External interface not usable\\n"); setTimeout(() => process.exit(1), 300);');
  const b = PasstBackend.attach(helper);
  t.teardown(() => b.close());
  b.writev([new Uint8Array(100)]);
  const msg = await new Promise<string>((r) => (b.onFailure = r));
  t.regex(msg, /^test-peer \(pid \d+\) exited with status 1: External interface not usable$/);
});

test.serial('passt refused its user namespace says where that happens', async (t) => {
  const helper = peer('process.stderr.write("Couldn\'t create user namespace: Operation not permitted\\n"); process.exit(1);');
  const b = PasstBackend.attach(helper);
  t.teardown(() => b.close());
  const msg = await new Promise<string>((r) => (b.onFailure = r));
  t.regex(msg, /exited with status 1: Couldn't create user namespace: Operation not permitted \(passt isolates itself in a user namespace: the kernel refuses one to a process in a chroot, and where user namespaces are disabled\)$/);
});

test('a missing passt binary is one sentence naming the package', (t) => {
  t.throws(() => PasstBackend.open({ command: 'passt-that-does-not-exist' }), { message: 'passt is not installed: no passt-that-does-not-exist in PATH (apt-get install passt)' });
  t.is(findExecutable('definitely-not-here-xyz'), undefined);
});

function passtSkipReason(): string | undefined {
  if (!findExecutable('passt')) return 'passt is not installed';
  if (!findExecutable('setpriv')) return 'setpriv is not installed';
  return undefined;
}
const passtSkip = passtSkipReason();
const withPasst = passtSkip ? test.skip : test.serial;
if (passtSkip) test.skip(`real passt tests skipped: ${passtSkip}`, () => {});

/** An Ethernet frame with a DHCPDISCOVER from `mac`. */
function dhcpDiscover(mac: Uint8Array): Uint8Array {
  const bootp = Buffer.alloc(240 + 4);
  bootp[0] = 1; // BOOTREQUEST
  bootp[1] = 1; // Ethernet
  bootp[2] = 6;
  bootp.writeUInt32BE(0x1234_5678, 4); // xid
  bootp.set(mac, 28);
  bootp.writeUInt32BE(0x6382_5363, 236); // magic cookie
  bootp.set([53, 1, 1, 255], 240); // DHCPDISCOVER, end
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(68, 0);
  udp.writeUInt16BE(67, 2);
  udp.writeUInt16BE(8 + bootp.length, 4);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + bootp.length, 2);
  ip[8] = 64;
  ip[9] = 17;
  ip.writeUInt32BE(0xffff_ffff, 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  ip.writeUInt16BE(~sum & 0xffff, 10);
  const eth = Buffer.alloc(14, 0xff);
  eth.set(mac, 6);
  eth.writeUInt16BE(0x0800, 12);
  return Buffer.concat([eth, ip, udp, bootp]);
}

/** The fields of a DHCP reply frame (Ethernet, IPv4, UDP, BOOTP) the tests check. */
function dhcpReply(frame: Buffer) {
  const bootp = frame.subarray(42);
  const opts = bootp.subarray(240);
  const opt = (code: number) => {
    for (let i = 0; i < opts.length && opts[i] !== 255; ) {
      if (opts[i] === 0) {
        i++;
        continue;
      }
      if (opts[i] === code) return [...opts.subarray(i + 2, i + 2 + opts[i + 1]!)];
      i += 2 + opts[i + 1]!;
    }
    return undefined;
  };
  return {
    to: [...frame.subarray(0, 6)],
    from: [...frame.subarray(6, 12)].map((b) => b.toString(16).padStart(2, '0')).join(':'),
    xid: bootp.readUInt32BE(4),
    yiaddr: [...bootp.subarray(16, 20)].join('.'),
    // Option 53 (message type), 1 (subnet mask), 3 (router), 26 (MTU).
    type: opt(53),
    mask: opt(1)?.join('.'),
    router: opt(3)?.slice(0, 4).join('.'),
    mtu: opt(26),
  };
}

/** Whether `frame` is IPv4 UDP from port 67: passt's DHCP server. */
const isDhcpReply = (f: Buffer) => f.readUInt16BE(12) === 0x0800 && f[23] === 17 && f.readUInt16BE(34) === 67;

withPasst('real passt answers a DHCPDISCOVER through the backend with an offer', async (t) => {
  const b = PasstBackend.open();
  t.teardown(() => b.close());
  const mac = Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x56);
  const offer = await new Promise<Buffer>((resolve, reject) => {
    b.onFailure = (m) => reject(new Error(m));
    const buf = new Uint8Array(2048);
    b.watch(() => {
      for (let n = b.readv([buf]); n >= 0; n = b.readv([buf])) {
        const f = Buffer.from(buf.subarray(0, n));
        if (isDhcpReply(f)) resolve(f);
      }
    });
    b.writev([dhcpDiscover(mac)]);
  });
  const r = dhcpReply(offer);
  t.deepEqual(r.to, [...mac], 'to our MAC');
  t.is(r.xid, 0x1234_5678, 'same transaction');
  t.not(r.yiaddr, '0.0.0.0');
  t.deepEqual(r.type, [2], 'an offer');
  t.deepEqual(r.mtu, [1500 >> 8, 1500 & 255]);
  t.log(`passt offered ${r.yiaddr}`);
});

function userNamespaceSkipReason(): string | undefined {
  if (passtSkip) return passtSkip;
  if (!findExecutable('unshare')) return 'unshare (util-linux) is not installed';
  if (spawnSync('unshare', ['-rn', 'true']).status !== 0) return 'the kernel refuses this process a user namespace';
  return undefined;
}
const nsSkip = userNamespaceSkipReason();
const inFreshNamespace = nsSkip ? test.skip : test.serial;
if (nsSkip) test.skip(`passt in a namespace without routes skipped: ${nsSkip}`, () => {});

/**
 * What passt answers to a DHCPDISCOVER from `mac`, with the backend opened by a child Node that
 * `wrapper` (a command line ending where node's argv begins) runs in namespaces of its own.
 */
async function dhcpReplyInChild(wrapper: string[], mac: Uint8Array): Promise<{ reply?: Buffer; output: string }> {
  const script = `
    const { PasstBackend } = require(${JSON.stringify(path.join(__dirname, '../../../lib/devices/passt.js'))});
    const b = PasstBackend.open();
    const done = (line) => { console.log(line); b.close(); process.exit(0); };
    b.onFailure = (m) => done('FAIL ' + m);
    const buf = new Uint8Array(2048);
    b.watch(() => {
      for (let n = b.readv([buf]); n >= 0; n = b.readv([buf])) {
        const f = Buffer.from(buf.subarray(0, n));
        if (f.readUInt16BE(12) === 0x0800 && f[23] === 17 && f.readUInt16BE(34) === 67) done('REPLY ' + f.toString('hex'));
      }
    });
    b.writev([Buffer.from(${JSON.stringify(Buffer.from(dhcpDiscover(mac)).toString('hex'))}, 'hex')]);
    setTimeout(() => done('FAIL no reply within 20 s'), 20000);`;
  const output = await new Promise<string>((resolve) => {
    const c = spawn(wrapper[0]!, [...wrapper.slice(1), process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => c.kill('SIGKILL'), 60_000);
    c.on('close', () => {
      clearTimeout(timer);
      resolve(out.trim());
    });
  });
  const m = /^REPLY ([0-9a-f]+)$/m.exec(output);
  return { reply: m ? Buffer.from(m[1]!, 'hex') : undefined, output };
}

inFreshNamespace('passt on a host without a default route (a fresh network namespace) still starts and offers 10.0.2.15 via 10.0.2.2', async (t) => {
  const mac = Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x57);
  // A network namespace of its own: only a loopback, no routes.
  const r = await dhcpReplyInChild(['unshare', '-rn'], mac);
  if (!r.reply) return t.fail(`no DHCP reply from passt in a namespace without routes: ${r.output}`);
  const reply = dhcpReply(r.reply);
  t.deepEqual(reply.to, [...mac]);
  t.deepEqual(reply.type, [2]);
  t.is(reply.yiaddr, '10.0.2.15');
  t.is(reply.mask, '255.255.255.0');
  t.is(reply.router, '10.0.2.2');
  t.is(reply.from, '9a:55:9a:55:9a:55', "passt's own MAC, since lo has none");
});

test('started by root in the initial user namespace, passt is told a numeric user; elsewhere it keeps its own', (t) => {
  const initial = '         0          0 4294967295\n';
  t.deepEqual(passtRunAsArgs(0, initial), ['--runas', '65534:65534']);
  t.deepEqual(passtRunAsArgs(1000, initial), [], 'an ordinary user: passt stays that user');
  // Root of a user namespace (unshare -r maps one uid): 65534 is not mapped there.
  t.deepEqual(passtRunAsArgs(0, '         0       1000          1\n'), []);
  t.deepEqual(passtRunAsArgs(0, undefined), []);
  t.deepEqual(passtRunAsArgs(undefined, initial), []);
});

function noUserDatabaseSkipReason(): string | undefined {
  if (passtSkip) return passtSkip;
  if (process.geteuid?.() !== 0) return 'needs root (to hide the user database in a mount namespace, and for passt to drop from root)';
  if (!/^\s*0\s+0\s+4294967295\s*$/.test(fs.readFileSync('/proc/self/uid_map', 'latin1'))) return 'not in the initial user namespace';
  if (!findExecutable('unshare')) return 'unshare (util-linux) is not installed';
  return undefined;
}
const noDbSkip = noUserDatabaseSkipReason();
const asRootWithoutNobody = noDbSkip ? test.skip : test.serial;
if (noDbSkip) test.skip(`passt as root without a user database skipped: ${noDbSkip}`, () => {});

asRootWithoutNobody('passt started by root where no user database knows "nobody" (a minimal container) still starts and answers DHCP', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-nopasswd-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  // A mount namespace where /etc/passwd is empty and NSS reads only files (systemd's NSS module would make up nobody).
  fs.writeFileSync(path.join(dir, 'passwd'), '');
  fs.writeFileSync(path.join(dir, 'nsswitch.conf'), 'passwd: files\ngroup: files\n');
  const hide = `mount --bind ${dir}/passwd /etc/passwd && mount --bind ${dir}/nsswitch.conf /etc/nsswitch.conf && exec "$@"`;
  const r = await dhcpReplyInChild(['unshare', '-m', 'sh', '-c', hide, 'sh'], Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x58));
  if (!r.reply) return t.fail(`no DHCP reply from passt without a user database: ${r.output}`);
  t.deepEqual(dhcpReply(r.reply).type, [2]);
});

/** Whether process `pid` is gone (or a zombie: dead, waiting to be reaped by init). */
function gone(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function waitGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (gone(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return gone(pid);
}

/** Runs `body` in a child Node that prints pids as "PIDS a b", then SIGKILLs itself; returns the pids. */
function pidsFromKilledChild(body: string): Promise<number[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-helper-'));
  const file = path.join(dir, 'child.js');
  const lib = path.join(__dirname, '../../../lib');
  fs.writeFileSync(file, `const lib = ${JSON.stringify(lib)};\n${body}\n`);
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('exit', (_code, signal) => {
      fs.rmSync(dir, { recursive: true, force: true });
      const m = /PIDS ([\d ]+)/.exec(out);
      if (signal !== 'SIGKILL' || !m) return reject(new Error(`the child ended with ${signal} and printed ${JSON.stringify(out)}`));
      resolve(m[1]!.trim().split(' ').map(Number));
    });
  });
}

test.serial('a helper dies with a SIGKILLed Node (PR_SET_PDEATHSIG through setpriv)', async (t) => {
  const [pid] = await pidsFromKilledChild(`
    const { spawnHelper } = require(lib + '/util/helper-process.js');
    const h = spawnHelper({ name: 'sleep', command: 'sleep', args: ['1000'], installHint: 'coreutils' });
    setTimeout(() => { console.log('PIDS ' + h.pid); setTimeout(() => process.kill(process.pid, 'SIGKILL'), 100); }, 200);`);
  t.true(await waitGone(pid!), `sleep ${pid} outlived the Node that started it`);
});

withPasst('passt dies with a SIGKILLed Node', async (t) => {
  const [pid] = await pidsFromKilledChild(`
    const { PasstBackend } = require(lib + '/devices/passt.js');
    const b = PasstBackend.open();
    b.onFailure = (m) => { console.error(m); process.exit(1); };
    setTimeout(() => { console.log('PIDS ' + b.helper.pid); setTimeout(() => process.kill(process.pid, 'SIGKILL'), 100); }, 500);`);
  t.true(await waitGone(pid!), `passt ${pid} outlived the Node that started it`);
});
