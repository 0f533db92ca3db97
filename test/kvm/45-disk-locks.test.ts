/**
 * Tier 1: image locks between whole VMs in one process on this machine's
 * /dev/kvm (the tiny PVH guest; it never touches the disk).
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createVm } from '../../lib/vm/vm';
import { kvmSkipReason } from '../../lib/testing/kvm-test-helpers';
import { tinyPvhKernel } from '../../lib/testing/tiny-pvh';

const skip = kvmSkipReason();
const kvm = skip ? test.skip : test;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

const kernel = tinyPvhKernel('LOCK\n', { powerOff: false });

function image(t: { teardown(f: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-vmlock-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'disk.img');
  fs.writeFileSync(file, Buffer.alloc(1 << 20));
  return file;
}

const vmOn = (file: string, readonly: boolean) => createVm({ kernel, boot: 'pvh', memory: '64M', disks: [{ path: file, readonly }] });

kvm('a second VM cannot open an image a running VM has read-write; after the first stops a third can', async (t) => {
  const file = image(t);
  const a = await vmOn(file, false);
  await a.start();
  await a.expect('LOCK');
  await t.throwsAsync(vmOn(file, false), { code: 'ERR_DISK', message: `disk image ${file} is in use: another VM in this process (pid ${process.pid}) has it open read-write (an image lock), so it cannot be opened read-write` });
  await t.throwsAsync(vmOn(file, true), { code: 'ERR_DISK', message: /so it cannot be opened even read-only$/ });
  await a.kill();
  const c = await vmOn(file, false);
  await c.start();
  await c.expect('LOCK');
  await c.kill();
});

kvm('two VMs share an image read-only, and a writer is refused while they run', async (t) => {
  const file = image(t);
  const a = await vmOn(file, true);
  const b = await vmOn(file, true);
  await a.start();
  await b.start();
  await Promise.all([a.expect('LOCK'), b.expect('LOCK')]);
  await t.throwsAsync(vmOn(file, false), { code: 'ERR_DISK', message: /has it open read-only \(an image lock\), so it cannot be opened read-write$/ });
  await Promise.all([a.kill(), b.kill()]);
  const w = await vmOn(file, false);
  await w.start();
  await w.kill();
});

kvm('two VMs created before either started: the second start is refused naming the image', async (t) => {
  const file = image(t);
  const a = await vmOn(file, false);
  const b = await vmOn(file, false);
  await a.start();
  await t.throwsAsync(b.start(), { message: new RegExp(`disk image ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use`) });
  await a.kill();
  await b.kill().catch(() => undefined);
});
