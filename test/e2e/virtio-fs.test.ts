/**
 * Tier 2: host directories shared over virtio-fs with a real virtiofsd and
 * Debian's kernel. One guest boot (each costs ~20 s in the emulated host)
 * mounts two shares at once, a writable one and a read-only one, and checks:
 * it reads a file the host wrote, writes one the host then reads, reads a
 * 64 MiB host file and writes a 64 MiB file of its own (both compared by
 * SHA-256 on the other side), and a write to the read-only share fails with
 * EROFS and changes nothing on the host. Afterwards every virtiofsd process
 * of the VM is gone.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bootToStop, e2eSkipReason } from '../../lib/testing/e2e';
import { findVirtiofsd } from '../../lib/vm/virtiofs';

function skipReason(): string | undefined {
  const e2e = e2eSkipReason();
  if (e2e) return e2e;
  if (!findVirtiofsd()) return 'virtiofsd is not installed (apt-get install virtiofsd, or qemu-system-common)';
  // virtiofsd sandboxes itself with new namespaces and pivot_root, which the kernel refuses inside a chroot.
  if (spawnSync('unshare', ['--mount', '--pid', '--fork', 'true']).status !== 0) return 'the kernel refuses this process new mount and pid namespaces, which virtiofsd sandboxes itself in';
  return undefined;
}

const skip = skipReason();
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`virtio-fs e2e skipped: ${skip}`, () => {});

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const BIG_BYTES = 64 * 1024 * 1024;

/** Pids of virtiofsd processes serving `dir` (their command line names it). */
function virtiofsdPids(dir: string): number[] {
  const pids: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (cmd.includes('virtiofsd') && cmd.includes(dir)) pids.push(Number(p));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

e2e('a guest mounts a writable and a read-only share at once: reads and writes files both ways, 64 MiB each way intact, the read-only share refuses writes, and virtiofsd stops with the VM', async (t) => {
  t.timeout(600_000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-virtiofs-e2e-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const rw = path.join(dir, 'rw');
  const ro = path.join(dir, 'ro');
  fs.mkdirSync(rw);
  fs.mkdirSync(ro);
  fs.writeFileSync(path.join(rw, 'from-host.txt'), 'written by the host\n');
  const big = randomBytes(BIG_BYTES);
  fs.writeFileSync(path.join(rw, 'big.bin'), big);
  fs.writeFileSync(path.join(ro, 'ro.txt'), 'read-only content\n');

  const command = [
    'mkdir -p /mnt/rw /mnt/ro',
    'mount -t virtiofs data /mnt/rw && echo GUEST-MOUNT-RW=1',
    'mount -t virtiofs config /mnt/ro && echo GUEST-MOUNT-RO=1',
    'echo "GUEST-READ=$(cat /mnt/rw/from-host.txt)"',
    'echo "written by the guest" > /mnt/rw/from-guest.txt && echo GUEST-WRITE=1',
    'echo "GUEST-BIG-READ=$(sha256sum /mnt/rw/big.bin | cut -d" " -f1)"',
    `dd if=/dev/urandom of=/tmp/mine bs=1M count=${BIG_BYTES >> 20} 2>/dev/null`,
    'cp /tmp/mine /mnt/rw/guest-big.bin && sync && echo GUEST-BIG-WRITTEN=1',
    'echo "GUEST-BIG-SUM=$(sha256sum /tmp/mine | cut -d" " -f1)"',
    'echo "GUEST-RO-READ=$(cat /mnt/ro/ro.txt)"',
    'touch /mnt/ro/nope 2>/tmp/err; echo "GUEST-RO-TOUCH=$? $(cat /tmp/err)"',
    'echo x >> /mnt/ro/ro.txt 2>/dev/null; echo "GUEST-RO-APPEND=$?"',
    'umount /mnt/rw /mnt/ro && echo GUEST-UMOUNT=1',
  ].join('; ');

  let during: number[] = [];
  const r = await bootToStop({
    name: 'virtiofs',
    memory: '512M',
    shares: [
      { path: rw, tag: 'data' },
      { path: ro, tag: 'config', readOnly: true },
    ],
    command,
    timeoutMs: 420_000,
    onRunning: () => (during = virtiofsdPids(dir)),
  });
  const m = r.markers;
  const log = r.log.slice(-4000);
  t.is(r.stop.reason, 'poweroff', log);
  t.is(m['MOUNT-RW'], '1', log);
  t.is(m['MOUNT-RO'], '1', log);
  t.is(m['READ'], 'written by the host', 'the guest reads a file the host wrote');
  t.is(m['WRITE'], '1');
  t.is(fs.readFileSync(path.join(rw, 'from-guest.txt'), 'utf8'), 'written by the guest\n', 'the host reads a file the guest wrote');
  t.is(m['BIG-READ'], sha256(big), 'the guest read 64 MiB from the host intact');
  t.is(m['BIG-WRITTEN'], '1', log);
  t.is(fs.statSync(path.join(rw, 'guest-big.bin')).size, BIG_BYTES);
  t.is(sha256(fs.readFileSync(path.join(rw, 'guest-big.bin'))), m['BIG-SUM'] ?? '(none)', 'the host reads the 64 MiB the guest wrote intact');
  t.is(m['RO-READ'], 'read-only content');
  t.regex(m['RO-TOUCH'] ?? '', /^1 .*Read-only file system/, 'creating a file in the read-only share fails with EROFS');
  t.not(m['RO-APPEND'], '0', 'appending to a file in the read-only share fails');
  t.false(fs.existsSync(path.join(ro, 'nope')));
  t.is(fs.readFileSync(path.join(ro, 'ro.txt'), 'utf8'), 'read-only content\n');
  t.is(m['UMOUNT'], '1');
  t.true(during.length >= 2, `a virtiofsd per share while the VM ran (found pids ${during.join(', ') || 'none'})`);
  // The daemons get SIGTERM at stop and have a grace period before SIGKILL: wait for them, bounded.
  for (let i = 0; i < 100 && virtiofsdPids(dir).length; i++) await new Promise((res) => setTimeout(res, 50));
  t.deepEqual(virtiofsdPids(dir), [], 'no virtiofsd is left once the VM stopped');
});
