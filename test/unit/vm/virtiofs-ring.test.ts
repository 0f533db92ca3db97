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

real('virtiofsd answers FUSE_INIT and a LOOKUP of a host file through rings in memfd guest RAM', async (t) => {
  const b = nativeBinding();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-virtiofs-ring-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'hello.txt'), 'hi');

  const ram = new b.GuestRam(RAM);
  t.teardown(() => ram.release());
  const mem = new GuestMemory();
  mem.addRegion({ gpa: 0, size: RAM, readonly: false, name: 'ram', views: ram.views().map((buffer) => ({ gpa: 0, buffer })) });

  const share = await VirtiofsShare.open({ path: dir, tag: 'ring', readOnly: false });
  t.teardown(() => void share.close());
  let callFd = -1;
  const notify: NotifyOps = {
    eventfd: () => b.eventfd(0),
    signal: (fd) => b.eventfdWrite(fd, 1),
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
  t.true(callFd >= 0);
  const req = d.queues[1]!;

  /** One request, one reply buffer; wait (bounded) for virtiofsd to use it. */
  const roundTrip = async (request: Uint8Array, replyBytes: number) => {
    const inGpa = d.alloc(request.length, request);
    const outGpa = d.alloc(replyBytes);
    d.offer(req, d.chain(req, [{ gpa: inGpa, len: request.length }, { gpa: outGpa, len: replyBytes, write: true }]));
    d.kick(req); // no ioeventfd here: the device forwards the MMIO kick to virtiofsd's eventfd
    for (let i = 0; i < 500 && d.usedIdx(req) === req.usedSeen; i++) await new Promise((r) => setTimeout(r, 10));
    const used = d.takeUsed(req);
    t.is(used.length, 1, 'virtiofsd used the request within 5 s');
    return { len: used[0]?.[1] ?? 0, reply: mem.read(outGpa, replyBytes) };
  };

  const init = new Uint8Array(16);
  new DataView(init.buffer).setUint32(0, 7, true); // major
  new DataView(init.buffer).setUint32(4, 31, true); // minor
  const r1 = await roundTrip(fuseRequest(FUSE_INIT, 1n, 0n, init), 256);
  const h1 = new DataView(r1.reply.buffer, r1.reply.byteOffset);
  t.is(h1.getInt32(4, true), 0, 'FUSE_INIT succeeded');
  t.is(h1.getBigUint64(8, true), 1n, 'the reply answers our request');
  t.is(h1.getUint32(16, true), 7, 'FUSE major version 7');
  t.true(b.eventfdRead(callFd) > 0, 'virtiofsd signalled the call eventfd (what the irqfd turns into an interrupt)');

  const name = new TextEncoder().encode('hello.txt\0');
  const r2 = await roundTrip(fuseRequest(FUSE_LOOKUP, 2n, FUSE_ROOT_ID, name), 256);
  const h2 = new DataView(r2.reply.buffer, r2.reply.byteOffset);
  t.is(h2.getInt32(4, true), 0, 'LOOKUP of hello.txt succeeded');
  // fuse_entry_out after the 16-byte header: nodeid, generation, entry/attr valid (4 x u64, 2 x u32), then fuse_attr (ino, size, ...).
  t.is(h2.getBigUint64(16 + 40 + 8, true), 2n, 'the host file is 2 bytes');

  // Reset stops virtiofsd's rings; the daemon stays up and healthy for the next probe.
  d.w(REG.status, 0);
  t.false(dev.backendRunning);
  t.is(share.lastError, undefined);
});
