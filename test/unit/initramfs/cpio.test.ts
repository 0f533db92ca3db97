import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { NodevmmError } from '../../../lib/errors';
import { CpioWriter, NEWC_HEADER_SIZE } from '../../../lib/initramfs/cpio';
import { buildTestInitramfs, CMDLINE_PARAMS, GUEST_MARKERS } from '../../../lib/initramfs/initramfs';
import { testNeeding } from '../../needs';

const cpioTest = testNeeding(['cpio']);

// Unpacking device nodes needs root; everything else is checked as any user.
const isRoot = process.getuid?.() === 0;

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-cpio-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Unpack with GNU cpio, exactly as a user would: `cpio -idv` in an empty folder. */
function unpack(archive: Uint8Array, dir: string): string {
  return execFileSync('cpio', ['-idv', '--no-preserve-owner'], { cwd: dir, input: archive, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
}

function randomData(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

cpioTest('GNU cpio lists every entry we wrote, with implicit parents first', (t) => {
  const archive = new CpioWriter()
    .addFile('/a/b/file.txt', 'hi\n')
    .addSymlink('/a/link', 'b/file.txt')
    .addDir('/empty', 0o700)
    .finish();
  const listed = execFileSync('cpio', ['-t'], { input: archive, stdio: ['pipe', 'pipe', 'pipe'] }).toString().trim().split('\n');
  t.deepEqual(listed, ['a', 'a/b', 'a/b/file.txt', 'a/link', 'empty']);
});

cpioTest('files round-trip through cpio -idv byte for byte, with their modes, for sizes around the 4-byte padding', (t) => {
  const dir = tempDir(t);
  const w = new CpioWriter();
  const files: { name: string; data: Uint8Array; mode: number }[] = [];
  const modes = [0o644, 0o755, 0o600, 0o4755, 0o777, 0o640, 0o711];
  for (let size = 0; size < 9; size++) {
    files.push({ name: `d${size % 3}/f${size}`, data: randomData(size, size + 1), mode: modes[size % modes.length] ?? 0o644 });
  }
  files.push({ name: 'big/blob', data: randomData(300_001, 99), mode: 0o444 });
  files.push({ name: 'name-of-odd-length-x', data: randomData(5, 7), mode: 0o664 });
  for (const f of files) w.addFile(f.name, f.data, f.mode);
  unpack(w.finish(), dir);
  for (const f of files) {
    const p = path.join(dir, f.name);
    t.deepEqual(new Uint8Array(fs.readFileSync(p)), f.data, f.name);
    t.is(fs.statSync(p).mode & 0o7777, f.mode, `mode of ${f.name}`);
  }
});

cpioTest('directories, symlinks and device nodes round-trip with their modes, targets and numbers', (t) => {
  const dir = tempDir(t);
  const w = new CpioWriter().addDir('/etc', 0o750).addDir('/srv/x', 0o711).addSymlink('/bin/sh', 'busybox').addSymlink('/etc/abs', '/proc/self/mounts');
  if (isRoot) w.addDevice('/dev/console', 'c', 5, 1, 0o600).addDevice('/dev/vda', 'b', 254, 0, 0o660).addDevice('/dev/big', 'c', 511, 70000, 0o620);
  unpack(w.finish(), dir);
  t.is(fs.statSync(path.join(dir, 'etc')).mode & 0o7777, 0o750);
  t.is(fs.statSync(path.join(dir, 'srv/x')).mode & 0o7777, 0o711);
  t.true(fs.statSync(path.join(dir, 'srv')).isDirectory(), 'implicit parent directory');
  t.is(fs.readlinkSync(path.join(dir, 'bin/sh')), 'busybox');
  t.is(fs.readlinkSync(path.join(dir, 'etc/abs')), '/proc/self/mounts');
  if (!isRoot) return t.log('device nodes not checked: mknod needs root');
  const devices: [string, 'c' | 'b', number, number, number][] = [
    ['dev/console', 'c', 5, 1, 0o600],
    ['dev/vda', 'b', 254, 0, 0o660],
    ['dev/big', 'c', 511, 70000, 0o620],
  ];
  for (const [name, kind, major, minor, mode] of devices) {
    const st = fs.statSync(path.join(dir, name));
    t.is(kind === 'c' ? st.isCharacterDevice() : st.isBlockDevice(), true, name);
    t.is(st.mode & 0o7777, mode, `mode of ${name}`);
    // Linux dev_t: major in bits 8..19 and 32..43, minor in bits 0..7 and 20..31.
    const rdev = BigInt(st.rdev);
    t.is(Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)), major, `major of ${name}`);
    t.is(Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)), minor, `minor of ${name}`);
  }
});

test('every header is 110 bytes starting with 070701 on a 4-byte boundary, and the archive ends with TRAILER!!!', (t) => {
  const bytes = new CpioWriter().addFile('x', 'abc').addSymlink('y', 'x').finish();
  const text = Buffer.from(bytes).toString('latin1');
  let at = 0;
  const names: string[] = [];
  while (at < bytes.length) {
    t.is(at % 4, 0);
    t.is(text.slice(at, at + 6), '070701');
    const field = (i: number) => parseInt(text.slice(at + 6 + i * 8, at + 14 + i * 8), 16);
    const namesize = field(11);
    const filesize = field(6);
    names.push(text.slice(at + NEWC_HEADER_SIZE, at + NEWC_HEADER_SIZE + namesize - 1));
    at = Math.ceil((at + NEWC_HEADER_SIZE + namesize) / 4) * 4;
    at = Math.ceil((at + filesize) / 4) * 4;
  }
  t.is(at, bytes.length);
  t.deepEqual(names, ['x', 'y', 'TRAILER!!!']);
});

test('the same inputs give the same bytes', (t) => {
  const build = () => new CpioWriter().addFile('/init', '#!/bin/sh\n', 0o755).addDevice('/dev/null', 'c', 1, 3, 0o666).finish();
  t.deepEqual(build(), build());
});

test('misuse is refused with a stable error code', (t) => {
  const code = (fn: () => unknown) => (t.throws(fn, { instanceOf: NodevmmError }) as NodevmmError).code;
  t.is(code(() => new CpioWriter().addFile('a', '').addFile('/a', '')), 'ERR_CPIO_DUPLICATE');
  t.is(code(() => new CpioWriter().addFile('../etc/passwd', '')), 'ERR_CPIO_PATH');
  t.is(code(() => new CpioWriter().addFile('/', '')), 'ERR_CPIO_PATH');
  t.is(code(() => new CpioWriter().addFile('TRAILER!!!', '')), 'ERR_CPIO_PATH');
  t.is(code(() => new CpioWriter().addFile('f', '').addFile('f/g', '')), 'ERR_CPIO_PATH');
  t.is(code(() => new CpioWriter().addFile('f', '', 0o10000)), 'ERR_CPIO_MODE');
  t.is(code(() => new CpioWriter().addFile('f', '', 1.5)), 'ERR_CPIO_MODE');
  t.is(code(() => new CpioWriter().addDevice('d', 'x' as 'c', 1, 1)), 'ERR_CPIO_DEVICE');
  t.is(code(() => new CpioWriter().addDevice('d', 'c', -1, 1)), 'ERR_CPIO_DEVICE');
  t.is(code(() => new CpioWriter().addSymlink('l', '')), 'ERR_CPIO_SYMLINK');
  const w = new CpioWriter();
  w.finish();
  t.is(code(() => w.addFile('late', '')), 'ERR_CPIO_FINISHED');
});

cpioTest('the test initramfs unpacks to busybox, an executable /init that reads nodevmm.cmd, and /dev/console', (t) => {
  const dir = tempDir(t);
  const busybox = randomData(1000, 3);
  const archive = gunzipSync(buildTestInitramfs({ busybox, extraFiles: [{ path: '/etc/hello', data: 'hi', mode: 0o600 }] }));
  unpack(archive, dir);
  t.deepEqual(new Uint8Array(fs.readFileSync(path.join(dir, 'bin/busybox'))), busybox);
  t.is(fs.statSync(path.join(dir, 'init')).mode & 0o777, 0o755);
  const init = fs.readFileSync(path.join(dir, 'init'), 'utf8');
  t.true(init.startsWith('#!/bin/sh\n'));
  for (const m of [GUEST_MARKERS.initOk, GUEST_MARKERS.cmdExit, GUEST_MARKERS.unameR, CMDLINE_PARAMS.cmd, CMDLINE_PARAMS.shell, 'poweroff -f']) {
    t.true(init.includes(m), `init mentions ${m}`);
  }
  t.is(fs.readFileSync(path.join(dir, 'etc/hello'), 'utf8'), 'hi');
  if (isRoot) t.true(fs.statSync(path.join(dir, 'dev/console')).isCharacterDevice());
});
