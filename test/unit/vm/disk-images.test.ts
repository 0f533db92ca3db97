/**
 * Disk images: a block device's size comes from BLKGETSIZE64 (fstat says 0),
 * and OFD image locks keep writers apart: read-only opens share an image, a
 * read-write open has it alone, in one process as across processes, and the
 * lock goes with the last close.
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openDisk } from '../../../lib/vm/disk-images';

function image(t: { teardown(f: () => void): void }, bytes = 1 << 20): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-lock-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'disk.img');
  fs.writeFileSync(file, Buffer.alloc(bytes));
  return file;
}

test('two read-only users share an image; a read-write user is refused while they hold it, in one sentence naming the image', (t) => {
  const file = image(t);
  const vmA = {};
  const vmB = {};
  const a = openDisk(file, true, vmA);
  const b = openDisk(file, true, vmB);
  const e = t.throws(() => openDisk(file, false, {}), { code: 'ERR_DISK' });
  t.is(e!.message, `disk image ${file} is in use: another VM in this process (pid ${process.pid}) has it open read-only (an image lock), so it cannot be opened read-write`);
  // The check createVm runs (no owner) sees the same lock.
  t.throws(() => openDisk(file, false), { message: /is in use: .* has it open read-only/ });
  a.close();
  b.close();
  const c = openDisk(file, false, {});
  c.close();
});

test('a read-write user has the image alone: read-write and read-only opens are refused until it closes', (t) => {
  const file = image(t);
  const owner = {};
  const w = openDisk(file, false, owner);
  t.throws(() => openDisk(file, false, {}), { message: `disk image ${file} is in use: another VM in this process (pid ${process.pid}) has it open read-write (an image lock), so it cannot be opened read-write` });
  t.throws(() => openDisk(file, true, {}), { message: /has it open read-write \(an image lock\), so it cannot be opened even read-only$/ });
  t.throws(() => openDisk(file, true), { code: 'ERR_DISK' });
  // The same owner (one VM rebuilding its machine on reboot) gets its own fd back, not a conflict.
  const again = openDisk(file, false, owner);
  t.is(again.fd, w.fd);
  w.close();
  t.throws(() => openDisk(file, false, {}), { message: /is in use/ }, 'one reference is still held');
  again.close();
  const third = openDisk(file, false, {});
  third.close();
  t.notThrows(() => openDisk(file, false).close());
});

test('another process holding the image read-write is named by its pid, and the image is free once it exits', async (t) => {
  const file = image(t);
  const mod = path.resolve(__dirname, '../../../lib/vm/disk-images.js');
  const child = spawn(process.execPath, ['-e', `require(${JSON.stringify(mod)}).openDisk(${JSON.stringify(file)}, false, {}); console.log('LOCKED'); setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => d.toString().includes('LOCKED') && resolve());
    child.once('exit', (c) => reject(new Error(`the lock holder exited with ${c}`)));
  });
  t.throws(() => openDisk(file, true, {}), { message: `disk image ${file} is in use: process ${child.pid} has it open read-write (an image lock), so it cannot be opened even read-only` });
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  t.notThrows(() => openDisk(file, false, {}).close());
});

const loopSkip = (() => {
  if (process.getuid?.() !== 0) return 'loop devices need root';
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'losetup is not installed';
  }
  return fs.existsSync('/dev/loop-control') ? undefined : 'no /dev/loop-control';
})();
if (loopSkip) console.log(`# SKIP block device test: ${loopSkip}`);

(loopSkip ? test.skip : test)('a block device (a loop device on a 3 MiB file) has its size from BLKGETSIZE64, not fstat', (t) => {
  const file = image(t, 3 << 20);
  const dev = execFileSync('losetup', ['--find', '--show', file], { encoding: 'utf8' }).trim();
  t.teardown(() => execFileSync('losetup', ['--detach', dev]));
  t.is(fs.statSync(dev).size, 0, 'fstat gives a block device no size');
  const d = openDisk(dev, true, {});
  t.is(d.sizeBytes, 3 << 20);
  d.close();
  const w = openDisk(dev, false, {});
  t.is(w.sizeBytes, 3 << 20);
  t.throws(() => openDisk(dev, true, {}), { message: /is in use/ }, 'block devices are locked like files');
  w.close();
});
