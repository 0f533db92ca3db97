/**
 * Copy-on-write overlays (lib/devices/virtio/blk-overlay.ts) without KVM:
 * batches of concurrent random writes, zero-writes and reads (scattered over
 * several guest buffers, many of them into the same not-yet-copied cluster)
 * against an in-memory model of the disk; after every batch the whole disk
 * reads as the model says, and at the end the base file is byte-identical to
 * what it was. Plus the cluster map, buffer slicing and the unlinked,
 * sparse temporary overlay file.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bounceFileBackend } from '../../../lib/devices/virtio/blk-backends';
import { ClusterMap, createTempOverlay, OverlayBackend } from '../../../lib/devices/virtio/blk-overlay';
import { sliceBuffers } from '../../../lib/devices/virtio/blk';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import type { GuestBuffer } from '../../../lib/memory/guest-memory';
import { tempImage } from '../../temp-image';
import { parseRunArgs } from '../../../lib/cli/args';
import { resolveVmConfig } from '../../../lib/vm/config';
import { attachVirtioDevices, virtioSlots } from '../../../lib/vm/virtio-devices';
import { IoBus } from '../../../lib/hv/io-bus';

const SECTOR = 512;

test('the cluster map sets bits once and counts them', (t) => {
  const m = new ClusterMap(10 * 65536 + 1);
  t.is(m.clusters, 11);
  t.false(m.has(10));
  m.set(10);
  m.set(10);
  m.set(0);
  t.true(m.has(10));
  t.true(m.has(0));
  t.false(m.has(9));
  t.is(m.allocated, 2);
});

test('sliceBuffers cuts a byte range out of a scatter list', (t) => {
  const bufs: GuestBuffer[] = [{ gpa: 0x1000, length: 100 }, { gpa: 0x5000, length: 50 }, { gpa: 0x9000, length: 10 }];
  t.deepEqual(sliceBuffers(bufs, 0, 160), bufs);
  t.deepEqual(sliceBuffers(bufs, 90, 20), [{ gpa: 0x1000 + 90, length: 10 }, { gpa: 0x5000, length: 10 }]);
  t.deepEqual(sliceBuffers(bufs, 150, 10), [{ gpa: 0x9000, length: 10 }]);
  t.deepEqual(sliceBuffers(bufs, 100, 0), []);
});

test('a temporary overlay is sparse, as large as asked, and already unlinked (nothing left on disk)', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-ovl-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const fd = createTempOverlay(1 << 30, dir);
  try {
    const st = fs.fstatSync(fd);
    t.is(st.size, 1 << 30);
    t.is(st.nlink, 0);
    t.true(st.blocks * 512 < 1 << 20, 'no data blocks yet');
    t.deepEqual(fs.readdirSync(dir), []);
  } finally {
    fs.closeSync(fd);
  }
  t.throws(() => createTempOverlay(4096, path.join(dir, 'missing')), { message: new RegExp(`^cannot create a temporary disk overlay in ${dir}/missing: ENOENT`) });
});

function randInt(n: number): number {
  return Math.floor(Math.random() * n);
}

/** Guest buffers covering `length` bytes at random places in RAM, cut into 1-4 pieces. */
function scatterList(length: number, ramBytes: number): GuestBuffer[] {
  const pieces = Math.min(1 + randInt(4), length / SECTOR);
  const cuts = new Set<number>();
  while (cuts.size < pieces - 1) cuts.add(SECTOR * (1 + randInt(length / SECTOR - 1)));
  const bounds = [0, ...[...cuts].sort((a, b) => a - b), length];
  const out: GuestBuffer[] = [];
  let gpa = randInt(16) * 4096;
  for (let i = 0; i + 1 < bounds.length; i++) {
    const n = bounds[i + 1]! - bounds[i]!;
    if (gpa + n > ramBytes) gpa = 0;
    out.push({ gpa, length: n });
    gpa += n + randInt(8) * 64;
  }
  return out;
}

for (const [name, sizeBytes, clusterBytes] of [
  ['a disk of whole clusters', 2 * 1024 * 1024, 65536],
  ['a disk whose last cluster is partial, small clusters', 777 * SECTOR, 4096],
] as const) {
  test(`random concurrent writes, zero-writes and reads match a model, and the base stays byte-identical (${name})`, async (t) => {
    const baseBytes = randomBytes(sizeBytes);
    const baseHash = createHash('sha256').update(baseBytes).digest('hex');
    const base = tempImage(t, baseBytes);
    const baseFd = fs.openSync(base.file, 'r');
    t.teardown(() => fs.closeSync(baseFd));
    const overlayFd = createTempOverlay(sizeBytes);
    t.teardown(() => fs.closeSync(overlayFd));
    const RAM_BYTES = 4 << 20;
    const mem = GuestMemory.anonymous([{ gpa: 0, size: RAM_BYTES }]);
    const ovl = new OverlayBackend({ baseFd, overlayFd, sizeBytes }, bounceFileBackend(baseFd, mem), bounceFileBackend(overlayFd, mem), clusterBytes);
    const model = Uint8Array.from(baseBytes);
    // Writes stay in the first three quarters: the rest must still come from the base at the end.
    const sectors = Math.floor((sizeBytes / SECTOR) * 0.75);
    for (let batch = 0; batch < 60; batch++) {
      // Disjoint ranges per batch (overlapping concurrent writes have no defined result), often in the same cluster.
      const taken: Array<[number, number]> = [];
      const ops: Promise<void>[] = [];
      const checks: Array<() => void> = [];
      const hot = randInt(sectors);
      for (let k = 0; k < 8; k++) {
        const count = 1 + randInt(randInt(4) === 0 ? 300 : 8);
        const near = randInt(2) === 0 ? hot + randInt(64) - 32 : randInt(sectors);
        const first = Math.max(0, Math.min(sectors - count, near));
        if (first < 0) continue;
        if (taken.some(([a, b]) => first < b && a < first + count)) continue;
        taken.push([first, first + count]);
        const pos = first * SECTOR;
        const len = count * SECTOR;
        const kind = randInt(5);
        if (kind <= 1) {
          // A write from guest buffers: fill RAM, then write.
          const bufs = scatterList(len, RAM_BYTES);
          // Buffers of different ops must not share RAM: give each op its own RAM window.
          const window = k * (RAM_BYTES / 8);
          const own = bufs.map((b) => ({ gpa: window + (b.gpa % (RAM_BYTES / 8 - b.length)), length: b.length }));
          const data = randomBytes(len);
          let at = 0;
          for (const b of own) {
            mem.write(b.gpa, data.subarray(at, at + b.length));
            at += b.length;
          }
          model.set(data, pos);
          ops.push(ovl.write(own, pos));
        } else if (kind === 2) {
          model.fill(0, pos, pos + len);
          ops.push(ovl.writeZeroes(pos, len));
        } else {
          const window = k * (RAM_BYTES / 8);
          const bufs = scatterList(len, RAM_BYTES / 8 - 4096).map((b) => ({ gpa: window + b.gpa, length: b.length }));
          const expect = Uint8Array.from(model.subarray(pos, pos + len));
          ops.push(
            ovl.read(bufs, pos).then(() => {
              const got = Buffer.concat(bufs.map((b) => mem.read(b.gpa, b.length)));
              checks.push(() => t.true(Buffer.compare(got, expect) === 0, `batch ${batch}: read of ${count} sectors at ${first}`));
            }),
          );
        }
      }
      await Promise.all(ops);
      for (const c of checks) c();
      if (batch % 10 === 9 || batch === 59) {
        await ovl.datasync();
        // The whole disk, through the backend, in 64 KiB reads.
        for (let pos = 0; pos < sizeBytes; pos += 65536) {
          const len = Math.min(65536, sizeBytes - pos);
          await ovl.read([{ gpa: 0, length: len }], pos);
          if (Buffer.compare(mem.read(0, len), model.subarray(pos, pos + len)) !== 0) return t.fail(`batch ${batch}: the disk differs from the model at ${pos}`);
        }
      }
    }
    t.is(createHash('sha256').update(fs.readFileSync(base.file)).digest('hex'), baseHash, 'the base image is byte-identical');
    t.true(ovl.stats.copiedClusters > 0, 'partial writes copied clusters from the base');
    const untouched = Array.from({ length: ovl.map.clusters }, (_, c) => c).filter((c) => c * clusterBytes >= sectors * SECTOR);
    t.true(untouched.length > 0 && untouched.every((c) => !ovl.map.has(c)), 'clusters no write touched stayed in the base');
    t.log(`${ovl.map.allocated}/${ovl.map.clusters} clusters in the overlay; ${ovl.stats.copiedClusters} copied, ${ovl.stats.wholeClusters} written whole`);
  });
}

/** A 256 KiB random base image, its overlay file and 1 MiB of guest memory; `backend(map?)` makes an OverlayBackend over them (sharing `map`: a backend after a guest reboot). */
function smallOverlay(t: ExecutionContext) {
  const sizeBytes = 256 * 1024;
  const baseBytes = randomBytes(sizeBytes);
  const base = tempImage(t, baseBytes);
  const overlayFd = createTempOverlay(sizeBytes);
  t.teardown(() => fs.closeSync(overlayFd));
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 1 << 20 }]);
  const files = { baseFd: base.fd, overlayFd, sizeBytes };
  const backend = (map?: ClusterMap) => new OverlayBackend(files, bounceFileBackend(base.fd, mem), bounceFileBackend(overlayFd, mem), map);
  return { baseBytes, mem, backend };
}

test('two partial writes racing into one fresh cluster both survive (the base copy cannot land over either)', async (t) => {
  const { baseBytes, mem, backend } = smallOverlay(t);
  const ovl = backend();
  mem.write(0, new Uint8Array(512).fill(0xaa));
  mem.write(4096, new Uint8Array(512).fill(0xbb));
  await Promise.all([ovl.write([{ gpa: 0, length: 512 }], 65536 + 1024), ovl.write([{ gpa: 4096, length: 512 }], 65536 + 8192)]);
  await ovl.read([{ gpa: 8192, length: 65536 }], 65536);
  const got = mem.read(8192, 65536);
  const expect = Uint8Array.from(baseBytes.subarray(65536, 131072));
  expect.fill(0xaa, 1024, 1536);
  expect.fill(0xbb, 8192, 8704);
  t.true(Buffer.compare(got, expect) === 0);
  t.is(ovl.stats.copiedClusters, 1, 'the cluster was copied once');
});

test('--disk PATH,snapshot, PATH,overlay=FILE and overlay: \'temp\' | PATH resolve; bad overlays and overlay with readonly are one sentence each', async (t) => {
  t.deepEqual(parseRunArgs(['--kernel', 'k', '--disk', 'base.img,snapshot', '--disk', 'b.img,ro', '--disk', 'c.img', '--disk', 'd.img,overlay=/tmp/d.ovl', '--disk', 'e.img,overlay=temp']).config.disks, [
    { path: 'base.img', overlay: 'temp' },
    { path: 'b.img', readonly: true },
    { path: 'c.img', readonly: false },
    { path: 'd.img', overlay: '/tmp/d.ovl' },
    { path: 'e.img', overlay: './temp' },
  ]);
  t.throws(() => parseRunArgs(['--kernel', 'k', '--disk', 'a.img,snapshot,ro']), { message: /"a.img,snapshot,ro" is not PATH, PATH,ro, PATH,snapshot or PATH,overlay=FILE/ });
  t.deepEqual(resolveVmConfig({ kernel: 'k', disks: [{ path: 'a', overlay: 'temp' }, { path: 'b', overlay: '/tmp/x.ovl' }] }).disks, [
    { path: 'a', readonly: false, overlay: 'temp' },
    { path: 'b', readonly: false, overlay: '/tmp/x.ovl' },
  ]);
  const e = t.throws(() => resolveVmConfig({ kernel: 'k', disks: [{ path: 'a', overlay: 7 as never }, { path: 'b', overlay: 'temp', readonly: true }, { path: 'c', snapshot: true } as never, { path: 'd', overlay: 'd' }] }));
  t.deepEqual((e as unknown as { issues: Array<{ path: string; message: string }> }).issues, [
    { path: 'disks[0].overlay', message: `7 is not 'temp' (a temporary overlay discarded at stop) or the path of a kept overlay file` },
    { path: 'disks[1].overlay', message: 'cannot be combined with readonly: an overlay exists to take writes (use one or the other)' },
    { path: 'disks[2].snapshot', message: 'is not a known option (known: path, readonly, overlay)' },
    { path: 'disks[3].overlay', message: `"d" is the disk's own path: the overlay must be another file` },
  ]);
});

test.serial('an overlay disk attached to a machine: the device is writable, writes land in the overlay, the read-only base is untouched, and dispose closes what the attachment opened', async (t) => {
  const baseBytes = randomBytes(1 << 20);
  const base = tempImage(t, baseBytes);
  fs.chmodSync(base.file, 0o444);
  const cfg = resolveVmConfig({ kernel: 'k', disks: [{ path: base.file, overlay: 'temp' }] });
  const mem = GuestMemory.anonymous([{ gpa: 0, size: 1 << 20 }]);
  const fdsBefore = fs.readdirSync('/proc/self/fd').length;
  const v = attachVirtioDevices({ cfg, slots: virtioSlots(cfg), memory: mem, mmio: new IoBus('mmio'), irq: () => ({ set: () => {}, pulse: () => {} }) as never });
  t.is(fs.readdirSync('/proc/self/fd').length, fdsBefore + 2, 'base and overlay');
  const blk = v.disks[0]!;
  t.false(blk.readonly);
  t.is(blk.capacitySectors, (1 << 20) / 512);
  v.dispose();
  await v.disksIdle();
  await new Promise((r) => setTimeout(r, 50));
  t.is(fs.readdirSync('/proc/self/fd').length, fdsBefore, 'both fds closed');
  t.true(Buffer.compare(fs.readFileSync(base.file), baseBytes) === 0);
});

test('after a guest reboot the new backend waits for the old one\'s cluster copy (the locks live with the map)', async (t) => {
  const { baseBytes, mem, backend } = smallOverlay(t);
  const before = backend();
  const after = backend(before.map);
  mem.write(0, new Uint8Array(512).fill(0xaa));
  mem.write(4096, new Uint8Array(512).fill(0xbb));
  await Promise.all([before.write([{ gpa: 0, length: 512 }], 1024), after.write([{ gpa: 4096, length: 512 }], 8192)]);
  await after.read([{ gpa: 8192, length: 65536 }], 0);
  const expect = Uint8Array.from(baseBytes.subarray(0, 65536));
  expect.fill(0xaa, 1024, 1536);
  expect.fill(0xbb, 8192, 8704);
  t.true(Buffer.compare(mem.read(8192, 65536), expect) === 0);
  t.is(before.stats.copiedClusters + after.stats.copiedClusters, 1);
});
