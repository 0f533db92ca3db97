/**
 * Kept overlays (lib/vm/kept-overlay.ts, lib/devices/virtio/overlay-file.ts)
 * without KVM: the guest's writes survive closing and reopening the overlay,
 * a commit writes exactly them into the base and empties the overlay, a
 * commit killed half-way (SIGKILL of the process doing it) leaves every base
 * byte either old or the overlay's and is finished by the next commit, a map
 * bit is saved only after its data was synced, and every lock conflict and
 * bad file is one sentence naming the file (and the holder).
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bounceFileBackend } from '../../../lib/devices/virtio/blk-backends';
import { OverlayBackend } from '../../../lib/devices/virtio/blk-overlay';
import type { BlockBackend } from '../../../lib/devices/virtio/blk';
import { encodeOverlayHeader, overlayLayout, parseOverlayHeader, OVERLAY_HEADER_BYTES } from '../../../lib/devices/virtio/overlay-file';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { commitOverlay } from '../../../lib/vm/kept-overlay';
import { openOverlayDisk, type OverlayDisk } from '../../../lib/vm/virtio-devices';
import { tempDir } from '../../temp-dir';

const CLUSTER = 65536;
/** Not a whole number of clusters: the last one is partial. */
const BASE_BYTES = 10 * CLUSTER + 3 * 512;

function setup(t: ExecutionContext) {
  const dir = tempDir(t, 'nodevmm-kept-');
  const basePath = path.join(dir, 'base.img');
  const baseBytes = randomBytes(BASE_BYTES);
  fs.writeFileSync(basePath, baseBytes);
  const overlayPath = path.join(dir, 'disk.ovl');
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 1 << 20 }]);
  const open = (owner: object = {}): { disk: OverlayDisk; backend: OverlayBackend } => {
    const disk = openOverlayDisk(basePath, owner, overlayPath);
    const files = { baseFd: disk.base.fd, overlayFd: disk.overlayFd, sizeBytes: disk.base.sizeBytes, saveMap: disk.saveMap! };
    return { disk, backend: new OverlayBackend(files, bounceFileBackend(disk.base.fd, mem), bounceFileBackend(disk.overlayFd, mem), disk.map) };
  };
  /** Write `data` at `pos` through the backend (as the guest does). */
  const write = (b: OverlayBackend, pos: number, data: Uint8Array) => {
    mem.write(0, data);
    return b.write([{ gpa: 0, length: data.length }], pos);
  };
  /** The whole disk as the backend reads it. */
  const readAll = async (b: OverlayBackend): Promise<Buffer> => {
    const parts: Buffer[] = [];
    for (let pos = 0; pos < BASE_BYTES; pos += CLUSTER) {
      const len = Math.min(CLUSTER, BASE_BYTES - pos);
      await b.read([{ gpa: 0, length: len }], pos);
      parts.push(Buffer.from(mem.read(0, len)));
    }
    return Buffer.concat(parts);
  };
  return { dir, basePath, baseBytes, overlayPath, open, write, readAll };
}

/** Some writes: partial clusters (read-modify-write), a whole cluster, the partial last cluster. */
async function guestWrites(s: ReturnType<typeof setup>, b: OverlayBackend): Promise<Buffer> {
  const model = Buffer.from(s.baseBytes);
  const put = async (pos: number, data: Buffer) => {
    model.set(data, pos);
    await s.write(b, pos, data);
  };
  await put(512, randomBytes(1024));
  await put(3 * CLUSTER, randomBytes(CLUSTER));
  await put(5 * CLUSTER + 4096, randomBytes(2 * CLUSTER));
  await put(BASE_BYTES - 1024, randomBytes(1024));
  return model;
}

test('a kept overlay: writes survive closing and reopening it, the base never changes, and a commit writes them into the base and empties the overlay', async (t) => {
  const s = setup(t);
  const first = s.open();
  const model = await guestWrites(s, first.backend);
  await first.backend.datasync();
  first.disk.close();
  t.true(fs.readFileSync(s.basePath).equals(s.baseBytes), 'the base is untouched while the overlay takes the writes');
  t.is(fs.statSync(s.overlayPath).size, overlayLayout(BASE_BYTES, CLUSTER).fileSize);

  const again = s.open();
  t.is(again.disk.map.allocated, 6, 'clusters 0, 3, 5, 6, 7 and the last one');
  t.true((await s.readAll(again.backend)).equals(model), 'the disk reads the same after reopening');
  again.disk.close();

  const r = commitOverlay(s.overlayPath);
  t.deepEqual(r, { basePath: fs.realpathSync(s.basePath), clusters: 6, bytes: 5 * CLUSTER + (BASE_BYTES - 10 * CLUSTER), resumed: false });
  t.true(fs.readFileSync(s.basePath).equals(model), 'the base now holds what the guest wrote');
  const after = s.open();
  t.is(after.disk.map.allocated, 0, 'the overlay is empty');
  t.true((await s.readAll(after.backend)).equals(model));
  after.disk.close();
  t.is(commitOverlay(s.overlayPath).clusters, 0, 'a second commit has nothing to do');
});

test('writes not yet flushed are saved at close too (every request had finished)', async (t) => {
  const s = setup(t);
  const { disk, backend } = s.open();
  const model = await guestWrites(s, backend);
  disk.close();
  const again = s.open();
  t.true((await s.readAll(again.backend)).equals(model));
  again.disk.close();
});

test('a flush saves the map only between two syncs of the data, and flushes save in order', async (t) => {
  const s = setup(t);
  const { disk } = s.open();
  t.teardown(() => disk.close());
  const log: string[] = [];
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 1 << 20 }]);
  const real = bounceFileBackend(disk.overlayFd, mem);
  const overlay: BlockBackend = { read: (b, p) => real.read(b, p), write: (b, p) => real.write(b, p).then(() => void log.push('write')), writeZeroes: (p, l) => real.writeZeroes(p, l), datasync: () => real.datasync().then(() => void log.push('sync')) };
  let saves = 0;
  const files = {
    baseFd: disk.base.fd,
    overlayFd: disk.overlayFd,
    sizeBytes: BASE_BYTES,
    saveMap: async (bits: Uint8Array) => {
      await disk.saveMap!(bits);
      log.push(`save ${bits[0]!.toString(2)}`);
      saves++;
    },
  };
  const b = new OverlayBackend(files, bounceFileBackend(disk.base.fd, mem), overlay, disk.map);
  mem.write(0, new Uint8Array(CLUSTER).fill(1));
  await b.write([{ gpa: 0, length: CLUSTER }], 0);
  await b.datasync();
  t.deepEqual(log, ['write', 'sync', 'save 1', 'sync']);
  log.length = 0;
  await b.datasync();
  t.deepEqual(log, ['sync'], 'no new bit: no map write');
  log.length = 0;
  // Two flushes at once after two more writes: they run one after the other, the first saves both bits.
  mem.write(0, new Uint8Array(CLUSTER).fill(2));
  await b.write([{ gpa: 0, length: CLUSTER }], CLUSTER);
  await b.write([{ gpa: 0, length: CLUSTER }], 2 * CLUSTER);
  await Promise.all([b.datasync(), b.datasync()]);
  t.deepEqual(log, ['write', 'write', 'sync', 'save 111', 'sync', 'sync']);
  t.is(saves, 2);
});

test('a commit killed half-way leaves every base byte old or the overlay\'s, the overlay still describes the disk, and the next commit finishes it', async (t) => {
  const s = setup(t);
  const { disk, backend } = s.open();
  const model = await guestWrites(s, backend);
  disk.close();
  // A child process commits and SIGKILLs itself after 3 of 6 clusters: no cleanup of any kind runs.
  const script = `
    const { commitOverlay } = require(${JSON.stringify(path.resolve(__dirname, '../../../lib/vm/kept-overlay'))});
    commitOverlay(${JSON.stringify(s.overlayPath)}, { onCluster: (done) => { if (done === 3) process.kill(process.pid, 'SIGKILL'); } });
  `;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  t.is(child.signal, 'SIGKILL', child.stderr);
  const half = fs.readFileSync(s.basePath);
  let fromOverlay = 0;
  for (let i = 0; i < BASE_BYTES; i++) {
    if (half[i] !== s.baseBytes[i] && half[i] !== model[i]) return t.fail(`base byte ${i} is ${half[i]}: neither the old byte ${s.baseBytes[i]} nor the overlay's ${model[i]}`);
    if (half[i] !== s.baseBytes[i]) fromOverlay++;
  }
  t.true(fromOverlay > 0 && !half.equals(model), 'the base is a mix: some clusters committed, some not');
  const mid = s.open();
  t.true((await s.readAll(mid.backend)).equals(model), 'base and overlay together are still the disk');
  mid.disk.close();
  const r = commitOverlay(s.overlayPath);
  t.true(r.resumed);
  t.is(r.clusters, 6);
  t.true(fs.readFileSync(s.basePath).equals(model));
});

test('lock conflicts are one sentence naming the image and its holder: commit while a VM runs on the base or the overlay, one overlay for two VMs', async (t) => {
  const s = setup(t);
  // A VM on a temporary overlay of the same base holds the base shared.
  const temp = openOverlayDisk(s.basePath, {}, 'temp');
  const first = s.open();
  await guestWrites(s, first.backend);
  first.disk.close();
  t.throws(() => commitOverlay(s.overlayPath), { code: 'ERR_DISK', message: new RegExp(`^disk image ${s.basePath} is in use: another VM in this process \\(pid ${process.pid}\\) has it open read-only \\(an image lock\\), so it cannot be opened read-write$`) });
  temp.close();
  // A VM on the overlay holds it exclusive: a second VM and a commit are refused.
  const running = s.open();
  t.throws(() => s.open(), { code: 'ERR_DISK', message: new RegExp(`^disk image ${s.overlayPath} is in use: another VM in this process \\(pid ${process.pid}\\) has it open read-write \\(an image lock\\), so it cannot be opened read-write$`) });
  t.throws(() => commitOverlay(s.overlayPath), { code: 'ERR_DISK', message: new RegExp(`^disk image ${s.overlayPath} is in use`) });
  running.disk.close();
  t.is(commitOverlay(s.overlayPath).clusters, 6, 'once both are free the commit runs');
});

test('an overlay over another base, a base of another size, the base itself or a file that is no overlay: one sentence each, nothing changed', (t) => {
  const s = setup(t);
  s.open().disk.close();
  const other = path.join(s.dir, 'other.img');
  fs.writeFileSync(other, randomBytes(BASE_BYTES));
  t.throws(() => openOverlayDisk(other, {}, s.overlayPath), { code: 'ERR_DISK', message: `overlay ${s.overlayPath} belongs to the base ${fs.realpathSync(s.basePath)}, not ${other}` });
  const small = path.join(s.dir, 'small.img');
  fs.writeFileSync(small, randomBytes(4096));
  t.throws(() => openOverlayDisk(small, {}, s.overlayPath), { code: 'ERR_DISK', message: `overlay ${s.overlayPath} was made over a ${BASE_BYTES}-byte base (${fs.realpathSync(s.basePath)}), but ${small} is 4096 bytes` });
  t.throws(() => commitOverlay(s.overlayPath, { basePath: small }), { message: new RegExp(`^overlay ${s.overlayPath} was made over a ${BASE_BYTES}-byte base, but ${small} is 4096 bytes: not committed$`) });
  t.throws(() => openOverlayDisk(s.basePath, {}, s.basePath), { message: `overlay ${s.basePath} is the base image itself` });
  t.throws(() => commitOverlay(s.basePath), { code: 'ERR_OVERLAY_FORMAT', message: `overlay ${s.basePath}: is not a nodevmm overlay (its last 4 KiB do not start with NVMMOVL1)` });
  t.true(fs.readFileSync(s.basePath).equals(s.baseBytes));
  t.true(fs.readFileSync(small).length === 4096);
});

test('the overlay header: fields at their offsets, decoded back, and each broken field named', (t) => {
  const h = { clusterBytes: CLUSTER, baseSize: BASE_BYTES, basePath: '/images/base.img', committing: true };
  const bytes = encodeOverlayHeader(h);
  t.is(bytes.length, OVERLAY_HEADER_BYTES);
  const dv = new DataView(bytes.buffer);
  t.is(Buffer.from(bytes.subarray(0, 8)).toString('latin1'), 'NVMMOVL1'); // 0x00 magic
  t.is(dv.getUint32(0x08, true), 1); // 0x08 version
  t.is(dv.getUint32(0x0c, true), CLUSTER); // 0x0c cluster_bytes
  t.is(dv.getBigUint64(0x10, true), BigInt(BASE_BYTES)); // 0x10 base_size
  t.is(dv.getUint32(0x18, true), 1); // 0x18 flags: COMMITTING
  t.is(dv.getUint32(0x1c, true), 16); // 0x1c base_path_len
  t.is(Buffer.from(bytes.subarray(0x20, 0x30)).toString(), '/images/base.img'); // 0x20 base_path
  const size = overlayLayout(BASE_BYTES, CLUSTER).fileSize;
  t.deepEqual(parseOverlayHeader(bytes, size, 'f'), h);
  const broken = (offset: number, value: number, width = 4): Uint8Array => {
    const b = Uint8Array.from(bytes);
    if (width === 4) new DataView(b.buffer).setUint32(offset, value, true);
    else b[offset] = value;
    return b;
  };
  const cases: Array<[Uint8Array, number, RegExp]> = [
    [broken(0, 0x41, 1), size, /^overlay f: is not a nodevmm overlay/],
    [broken(0x08, 2), size, /^overlay f: has header version 2; this nodevmm reads version 1$/],
    [broken(0x0c, 3000), size, /^overlay f: has cluster_bytes 3000, not a power of two from 4096 to 1048576$/],
    [broken(0x18, 6), size, /^overlay f: has unknown flags 0x6$/],
    [broken(0x1c, 5000), size, /^overlay f: has base_path_len 5000, not 1 to 4064$/],
    [broken(0x20, 0x61, 1), size, /^overlay f: has base_path "aimages\/base.img", not an absolute path$/],
    [bytes, size + 4096, new RegExp(`^overlay f: is ${size + 4096} bytes; an overlay of a ${BASE_BYTES}-byte base with ${CLUSTER}-byte clusters is ${size}$`)],
  ];
  for (const [b, n, re] of cases) t.throws(() => parseOverlayHeader(b, n, 'f'), { code: 'ERR_OVERLAY_FORMAT', message: re });
});
