import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NodevmmError } from '../../../lib/errors';
import { cachedImageCount, elfKernelFile, readImageFile } from '../../../lib/vm/image-files';
import { tempDir } from '../../temp-dir';

const tmp = (t: { teardown(f: () => void): void }) => tempDir(t, 'nodevmm-images-');

/** Files modified in the last two seconds are never cached: date this one back a minute. */
const settle = (file: string) => {
  const t = new Date(Date.now() - 60_000);
  fs.utimesSync(file, t, t);
};

test.serial('readers of the same unchanged file share one buffer, concurrent readers included', async (t) => {
  const file = path.join(tmp(t), 'kernel');
  fs.writeFileSync(file, Buffer.alloc(3 << 20, 0x5a));
  fs.linkSync(file, file + '.link'); // (linking changes the file's ctime: link first)
  settle(file);
  const [a, b] = await Promise.all([readImageFile(file), readImageFile(file)]);
  const c = await readImageFile(file);
  t.is(a, b);
  t.is(a, c);
  t.is(a.length, 3 << 20);
  t.is(a[12345], 0x5a);
  // A hard link is the same file.
  t.is(await readImageFile(file + '.link'), a);
});

test.serial('a file rewritten in place or replaced is read again', async (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'initrd');
  fs.writeFileSync(file, 'first');
  settle(file);
  const first = await readImageFile(file);
  t.is(await readImageFile(file), first);
  fs.writeFileSync(file, 'again'); // same size, same inode: mtime and ctime move
  const second = await readImageFile(file);
  t.not(second, first);
  t.is(Buffer.from(second).toString(), 'again');
  t.is(Buffer.from(first).toString(), 'first', 'a reader keeps the bytes it was given');
  settle(file); // same mtime as 'first' had, but the rewrite moved ctime
  const settled = await readImageFile(file);
  t.not(settled, first);
  t.is(Buffer.from(settled).toString(), 'again');
  fs.writeFileSync(path.join(dir, 'new'), 'third');
  fs.renameSync(path.join(dir, 'new'), file);
  t.is(Buffer.from(await readImageFile(file)).toString(), 'third');
});

test.serial('the cache holds buffers weakly: once no reader holds one, it is freed', async (t) => {
  if (!global.gc) return t.pass('needs --expose-gc');
  const file = path.join(tmp(t), 'big');
  fs.writeFileSync(file, Buffer.alloc(1 << 20, 1));
  settle(file);
  let held: Uint8Array | undefined = await readImageFile(file);
  const before = cachedImageCount();
  t.true(before >= 1);
  held = undefined;
  // WeakRef targets survive until the job that created the ref ends, so collect across turns.
  for (let i = 0; i < 10 && cachedImageCount() >= before; i++) {
    await new Promise((r) => setTimeout(r, 10));
    global.gc();
  }
  t.is(held, undefined);
  t.true(cachedImageCount() < before);
});

test.serial('a file modified within the last two seconds is read afresh each time (two writes in one clock tick can share an mtime)', async (t) => {
  const file = path.join(tmp(t), 'fresh');
  fs.writeFileSync(file, 'fresh');
  const a = await readImageFile(file);
  const b = await readImageFile(file);
  t.not(a, b);
  t.deepEqual(a, b);
});

test('a missing file fails like fs does', async (t) => {
  await t.throwsAsync(readImageFile('/nonexistent/kernel'), { code: 'ENOENT' });
});

test('elfKernelFile: an ELF stays a file read where asked, anything else is read whole, and a file that shrank says so', (t) => {
  const dir = tmp(t);
  const elf = path.join(dir, 'vmlinux');
  const bytes = Buffer.alloc(8192, 0x11);
  bytes.set([0x7f, 0x45, 0x4c, 0x46], 0);
  fs.writeFileSync(elf, bytes);
  const other = path.join(dir, 'bzImage');
  fs.writeFileSync(other, Buffer.alloc(8192, 0x22));
  t.is(elfKernelFile(other), undefined);
  const file = elfKernelFile(elf)!;
  t.truthy(file);
  const h = file.open();
  t.is(h.size, 8192);
  const got = new Uint8Array(16);
  h.readInto(4096, got);
  t.deepEqual([...got], Array(16).fill(0x11));
  fs.truncateSync(elf, 4100);
  const err = t.throws(() => h.readInto(4096, got), { instanceOf: NodevmmError });
  t.is(err.code, 'ERR_KERNEL_FILE_CHANGED');
  t.regex(err.message, /kernel file .*vmlinux ended at byte 4100 of the 8192 it had when opened/);
  h.close();
  const gone = t.throws(() => elfKernelFile(path.join(dir, 'missing')), { instanceOf: NodevmmError });
  t.regex(gone.message, /kernel file .*missing does not exist/);
  // A directory opens on Linux; reading it is what fails, and says so in one sentence too.
  const isDir = t.throws(() => elfKernelFile(dir), { instanceOf: NodevmmError });
  t.regex(isDir.message, /kernel file .* is a directory/);
});
