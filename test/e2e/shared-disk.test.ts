/**
 * Tier 2: disks many VMs share (`overlay: 'temp'`, `--disk PATH,snapshot`).
 * Three VMs boot at once from one ext4 root image, each through its own
 * temporary overlay: each writes a file of its own (and 4 MiB of data), drops
 * its page cache and reads both back from the disk, sees none of the other
 * VMs' files, and powers off. Afterwards the base image is byte-identical,
 * e2fsck finds it clean and none of the files are in it. Three VMs, not
 * eight: eight Linux guests at once boot only in an emulated host with one
 * CPU (see many-vms.test.ts), which this file does not get.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bootToStop, e2eSkipReason, ext4RootImage } from '../../lib/testing/e2e';

const skip = e2eSkipReason();
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`shared-disk e2e skipped: ${skip}`, () => {});

const VMS = 3;

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

e2e(`${VMS} VMs boot at once from one ext4 image with temporary overlays, each writes and reads back its own files, and the image is byte-identical afterwards`, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-shared-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const image = ext4RootImage(
    dir,
    [
      'id=$(sed -n "s/.*nodevmm_vmid=\\([0-9]*\\).*/\\1/p" /proc/cmdline)',
      'echo "vm-$id" > /written-by-vm-$id',
      'dd if=/dev/urandom of=/data-$id bs=64k count=64 2>/dev/null',
      'sum=$(sha256sum /data-$id | cut -d" " -f1)',
      'sync',
      'echo 3 > /proc/sys/vm/drop_caches',
      'echo "GUEST-OWN-FILE=$(cat /written-by-vm-$id)"',
      'echo "GUEST-DATA-OK=$([ "$(sha256sum /data-$id | cut -d" " -f1)" = "$sum" ] && echo 1 || echo 0)"',
      'echo "GUEST-OTHERS=$(ls / | grep -c "^written-by-vm-")"',
      'echo "GUEST-BASE-FILE=$(cat /etc/from-host)"',
      'mount -o remount,ro / && echo GUEST-ROOT-RO=1',
      'poweroff -f',
    ],
    '48M',
  );
  // The base may be read-only to this user: an overlay never opens it for writing.
  fs.chmodSync(image, 0o444);
  const before = sha256(image);

  const runs = await Promise.all(
    Array.from({ length: VMS }, (_, i) =>
      bootToStop({ name: `shared-${i}`, disks: [{ path: image, overlay: 'temp' }], cmdline: `root=/dev/vda rootfstype=ext4 nodevmm_vmid=${i}`, timeoutMs: 420_000 }),
    ),
  );
  runs.forEach((r, i) => {
    t.is(r.stop.reason, 'poweroff', r.log.slice(-3000));
    t.is(r.markers['ROOT-MOUNTED'], '/dev/vda', r.log.slice(-3000));
    t.is(r.markers['OWN-FILE'], `vm-${i}`, `vm ${i} reads back its own file from the disk`);
    t.is(r.markers['DATA-OK'], '1', `vm ${i} reads back its 4 MiB intact`);
    t.is(r.markers['OTHERS'], '1', `vm ${i} sees only its own file`);
    t.is(r.markers['BASE-FILE'], 'made-by-mkfs');
    t.is(r.markers['ROOT-RO'], '1');
    t.notRegex(r.log, /EXT4-fs error|I\/O error/);
  });
  t.is(sha256(image), before, 'the base image is byte-identical');
  const ls = spawnSync('debugfs', ['-R', 'ls -l /', image], { encoding: 'utf8' });
  t.notRegex(ls.stdout, /written-by-vm|data-/, 'no guest file reached the base');
  const fsck = spawnSync('e2fsck', ['-f', '-n', image], { encoding: 'utf8' });
  t.is(fsck.status, 0, `e2fsck found problems:\n${fsck.stdout}${fsck.stderr}`);
});
