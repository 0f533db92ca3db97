/**
 * The whole host side of virtio-fs without a guest kernel or KVM: guest RAM
 * is a real memfd (native GuestRam), the device hands its rings to the real
 * virtiofsd over vhost-user, and a fake driver puts FUSE requests in the
 * request queue; kicks and interrupts are plain eventfds instead of KVM's
 * ioeventfd/irqfd. This proves what a wrong memory table, ring address or
 * eventfd would break: virtiofsd reads the request from our pages and writes
 * its reply into them.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { nativeBinding } from '../../../lib/hv/native';
import type { NotifyOps } from '../../../lib/hv/partition';
import { VirtioFs } from '../../../lib/devices/virtio/fs';
import { REG, STATUS } from '../../../lib/devices/virtio/mmio';
import { findVirtiofsd, VirtiofsShare } from '../../../lib/vm/virtiofs';
import { FakeDriver, RAM } from '../virtio/driver';

const skip = !findVirtiofsd() ? 'virtiofsd is not installed' : spawnSync('unshare', ['--mount', '--pid', '--fork', 'true']).status !== 0 ? 'no namespaces for virtiofsd' : undefined;
const real = skip ? test.skip : test.serial;
if (skip) test.skip(`virtiofs ring test skipped: ${skip}`, () => {});

const FUSE_INIT = 26;
const FUSE_LOOKUP = 1;
const FUSE_MKDIR = 9;
const FUSE_ROOT_ID = 1n;
const SLOT = { base: 0xfeb0_3000, gsi: 19 };

/** fuse_in_header (40 bytes) + body. */
function fuseRequest(opcode: number, unique: bigint, nodeid: bigint, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(40 + body.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, out.length, true);
  dv.setUint32(4, opcode, true);
  dv.setBigUint64(8, unique, true);
  dv.setBigUint64(16, nodeid, true);
  out.set(body, 40);
  return out;
}

/** A VirtioFs device on a real virtiofsd for `dir`, brought up by a fake driver, with FUSE_INIT done. */
async function fuseSession(t: import('ava').ExecutionContext, dir: string, readOnly: boolean, existing?: VirtiofsShare) {
  const b = nativeBinding();
  const ram = new b.GuestRam(RAM, { shared: true });
  t.teardown(() => ram.release());
  const mem = new GuestMemory();
  mem.addRegion({ gpa: 0, size: RAM, readonly: false, name: 'ram', views: ram.views().map((buffer) => ({ gpa: 0, buffer })) });
  const share = existing ?? (await VirtiofsShare.open({ path: dir, tag: 'ring', readOnly }));
  if (!existing) t.teardown(() => void share.close());
  let callFd = -1;
  const notify: NotifyOps = {
    eventfd: () => b.eventfd(0),
    signal: (fd) => b.eventfdWrite(fd, 1),
    drain: (fd) => b.eventfdRead(fd),
    watch: () => ({ close() {} }),
    close: (fd) => b.closeFd(fd),
    ioeventfd: () => {},
    irqfd: (fd, _gsi, assign) => {
      if (assign) callFd = fd;
    },
  };
  const dev = new VirtioFs({ tag: 'ring', backend: share.frontend, notify, ram: () => [{ gpa: 0, size: RAM, hostAddress: ram.hostAddress, fd: ram.fd }] });
  const d = new FakeDriver(dev, { slot: SLOT, trigger: 'edge' }, mem);
  d.up([16, 64], { features: 0n });
  t.is(d.r(REG.status) & STATUS.needsReset, 0, d.t.lastError);
  const req = d.queues[1]!;
  let unique = 0n;
  /** One request, one reply buffer; waits (bounded) for virtiofsd to use it; returns the reply's error and bytes. */
  const call = async (opcode: number, nodeid: bigint, body: Uint8Array, replyBytes = 256) => {
    const request = fuseRequest(opcode, ++unique, nodeid, body);
    const inGpa = d.alloc(request.length, request);
    const outGpa = d.alloc(replyBytes);
    d.offer(req, d.chain(req, [{ gpa: inGpa, len: request.length }, { gpa: outGpa, len: replyBytes, write: true }]));
    d.kick(req); // no ioeventfd here: the device forwards the MMIO kick to virtiofsd's eventfd
    for (let i = 0; i < 500 && d.usedIdx(req) === req.usedSeen; i++) await new Promise((r) => setTimeout(r, 10));
    t.is(d.takeUsed(req).length, 1, 'virtiofsd used the request within 5 s');
    const reply = mem.read(outGpa, replyBytes);
    const dv = new DataView(reply.buffer, reply.byteOffset);
    t.is(dv.getBigUint64(8, true), unique, 'the reply answers our request');
    return { error: dv.getInt32(4, true), dv };
  };
  const init = new Uint8Array(16);
  new DataView(init.buffer).setUint32(0, 7, true); // major
  new DataView(init.buffer).setUint32(4, 31, true); // minor
  const r = await call(FUSE_INIT, 0n, init);
  t.is(r.error, 0, 'FUSE_INIT succeeded');
  t.is(r.dv.getUint32(16, true), 7, 'FUSE major version 7');
  t.true(b.eventfdRead(callFd) > 0, 'virtiofsd signalled the call eventfd (what the irqfd turns into an interrupt)');
  return { call, d, dev, share, ram };
}

const cstr = (s: string) => new TextEncoder().encode(`${s}\0`);
/** fuse_mkdir_in: mode, umask; then the name. */
function mkdirBody(name: string): Uint8Array {
  const n = cstr(name);
  const out = new Uint8Array(8 + n.length);
  new DataView(out.buffer).setUint32(0, 0o755, true);
  out.set(n, 8);
  return out;
}

real('virtiofsd answers FUSE requests through rings in memfd guest RAM: INIT, a LOOKUP of a host file, a MKDIR the host sees', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-virtiofs-ring-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'hello.txt'), 'hi');
  const { call, d, dev, share } = await fuseSession(t, dir, false);
  const lookup = await call(FUSE_LOOKUP, FUSE_ROOT_ID, cstr('hello.txt'));
  t.is(lookup.error, 0, 'LOOKUP of hello.txt succeeded');
  // fuse_entry_out after the 16-byte header: nodeid, generation, entry/attr valid (4 x u64, 2 x u32), then fuse_attr (ino, size, ...).
  t.is(lookup.dv.getBigUint64(16 + 40 + 8, true), 2n, 'the host file is 2 bytes');
  t.is((await call(FUSE_MKDIR, FUSE_ROOT_ID, mkdirBody('made-by-guest'))).error, 0);
  t.true(fs.statSync(path.join(dir, 'made-by-guest')).isDirectory(), 'the host sees the directory');
  // Reset stops virtiofsd's rings; the daemon stays up and healthy for the next probe.
  d.w(REG.status, 0);
  t.false(dev.backendRunning);
  t.is(share.lastError, undefined);
});

real('a read-only share refuses a MKDIR with EROFS from the host kernel and the host directory stays unchanged', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-virtiofs-ring-ro-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'hello.txt'), 'hi');
  const { call } = await fuseSession(t, dir, true);
  t.is((await call(FUSE_LOOKUP, FUSE_ROOT_ID, cstr('hello.txt'))).error, 0, 'reads still work');
  t.is((await call(FUSE_MKDIR, FUSE_ROOT_ID, mkdirBody('nope'))).error, -os.constants.errno.EROFS);
  t.deepEqual(fs.readdirSync(dir), ['hello.txt']);
});

real('a guest reboot: the next machine brings new RAM to the same virtiofsd (a new memory table), which serves it from a fresh FUSE_INIT', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-virtiofs-ring-reboot-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'hello.txt'), 'hi');
  const first = await fuseSession(t, dir, false);
  // The old machine goes away: its device resets (rings stopped), then its RAM is released.
  first.d.w(REG.status, 0);
  first.ram.release();
  const second = await fuseSession(t, dir, false, first.share);
  t.is((await second.call(FUSE_LOOKUP, FUSE_ROOT_ID, cstr('hello.txt'))).error, 0);
  t.is(first.share.lastError, undefined);
});
