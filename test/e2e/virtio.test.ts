/**
 * Tier 2: virtio-mmio devices seen by Debian's kernel (virtio_mmio finds them
 * through the DSDT's LNRO0005 nodes): a raw disk written by the guest and
 * read back on the host, a read-only disk, an ext4 root disk, /dev/hwrng and
 * hvc0.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { bootToStop, e2eSkipReason, ext4RootImage, FIRMWARE_COMPLAINTS } from '../../lib/testing/e2e';

const skip = e2eSkipReason();
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`virtio e2e skipped: ${skip}`, () => {});

const waitFor = (dev: string) => `i=0; while [ ! -e ${dev} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done`;

function image(t: { teardown(f: () => void): void }, bytes: number, fillByte = 0): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-virtio-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'disk.img');
  fs.writeFileSync(file, Buffer.alloc(bytes, fillByte));
  return file;
}

e2e('the guest reads a raw disk as /dev/vda, writes to it, syncs and powers off: the bytes are in the image', async (t) => {
  const file = image(t, 8 * 2 ** 20);
  // Sector 0 holds a host-written pattern the guest must read back.
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from('host-pattern-0123456789'), 0, 23, 0);
  fs.closeSync(fd);
  const r = await bootToStop({
    disks: [{ path: file }],
    command: [
      waitFor('/dev/vda'),
      'echo "GUEST-VDA-SIZE=$(cat /sys/block/vda/size)"',
      'echo "GUEST-VDA-HEAD=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 23)"',
      'echo "GUEST-VDA-SERIAL=$(cat /sys/block/vda/serial 2>/dev/null)"',
      "printf 'written-by-the-guest' | dd of=/dev/vda bs=512 seek=2048 conv=notrunc,fsync 2>/dev/null",
      'sync',
    ].join('; '),
  });
  t.is(r.stop.reason, 'poweroff', r.stop.message);
  t.is(r.markers['VDA-SIZE'], String((8 * 2 ** 20) / 512), r.log.slice(-3000));
  t.is(r.markers['VDA-HEAD'], 'host-pattern-0123456789');
  t.is(r.markers['VDA-SERIAL'], 'vda');
  const after = fs.readFileSync(file);
  t.is(after.subarray(2048 * 512, 2048 * 512 + 20).toString(), 'written-by-the-guest');
  t.notRegex(r.log, FIRMWARE_COMPLAINTS);
  t.notRegex(r.log, /GUEST-INSMOD-FAILED/);
});

e2e("with irqchip 'userspace' (KVM's local APIC, the TypeScript IOAPIC and PIT) Debian boots to its init and reads /dev/vda", async (t) => {
  const file = image(t, 4 * 2 ** 20);
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from('userspace-irqchip-pattern'), 0, 25, 0);
  fs.closeSync(fd);
  const r = await bootToStop({
    irqchip: 'userspace',
    disks: [{ path: file }],
    command: [
      waitFor('/dev/vda'),
      'echo "GUEST-VDA-HEAD=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 25)"',
      // The guest's interrupts went through the IOAPIC it found in the MADT (the TypeScript one).
      'echo "GUEST-IOAPIC-LINES=$(grep -c IO-APIC /proc/interrupts)"',
      // MADT flags (offset 40): PCAT_COMPAT is clear on this machine, which has no 8259.
      'echo "GUEST-MADT-FLAGS=$(dd if=/sys/firmware/acpi/tables/APIC bs=1 skip=40 count=1 2>/dev/null | od -An -tu1 | tr -d \' \')"',
    ].join('; '),
  });
  t.is(r.stop.reason, 'poweroff', r.stop.message);
  t.regex(r.log, /GUEST-INIT-OK/);
  t.is(r.markers['VDA-HEAD'], 'userspace-irqchip-pattern', r.log.slice(-3000));
  t.true(Number(r.markers['IOAPIC-LINES']) > 0, r.log.slice(-3000));
  t.is(r.markers['MADT-FLAGS'], '0', 'the machine built the userspace-irqchip MADT');
  t.notRegex(r.log, FIRMWARE_COMPLAINTS);
});

e2e('a read-only disk is read-only in the guest and a write attempt leaves the image unchanged', async (t) => {
  const file = image(t, 2 * 2 ** 20, 0x5a);
  const r = await bootToStop({
    disks: [{ path: file, readonly: true }],
    command: [waitFor('/dev/vda'), 'echo "GUEST-VDA-RO=$(cat /sys/block/vda/ro)"', "printf 'nope' | dd of=/dev/vda bs=512 seek=1 conv=notrunc,fsync 2>/dev/null; echo \"GUEST-DD-EXIT=$?\"", 'sync'].join('; '),
  });
  t.is(r.stop.reason, 'poweroff', r.stop.message);
  t.is(r.markers['VDA-RO'], '1', r.log.slice(-3000));
  t.not(r.markers['DD-EXIT'], '0');
  t.true(fs.readFileSync(file).every((b) => b === 0x5a));
});

e2e('/dev/hwrng reads bytes from virtio-rng', async (t) => {
  const r = await bootToStop({
    rng: true,
    timeoutMs: 90_000,
    command: [
      waitFor('/dev/hwrng'),
      'echo "GUEST-HWRNG-CURRENT=$(cat /sys/class/misc/hw_random/rng_current)"',
      'echo "GUEST-HWRNG=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d " \\n")"',
    ].join('; '),
  });
  t.is(r.stop.reason, 'poweroff', r.log.slice(-3000));
  t.regex(r.markers['HWRNG-CURRENT'] ?? '', /^virtio_rng/, r.log.slice(-3000));
  const hex = r.markers['HWRNG'] ?? '';
  t.regex(hex, /^[0-9a-f]{64}$/);
  t.not(hex, '0'.repeat(64));
});

e2e('output written to /dev/hvc0 reaches vm.virtioConsole()', async (t) => {
  const r = await bootToStop({
    virtioConsole: true,
    timeoutMs: 90_000,
    command: [waitFor('/dev/hvc0'), 'echo hello-from-hvc0 > /dev/hvc0'].join('; '),
  });
  t.is(r.stop.reason, 'poweroff', r.log.slice(-3000));
  t.regex(r.vm.virtioConsole().log(), /hello-from-hvc0/);
});

/**
 * A real root disk: an ext4 image made by mkfs.ext4 -d from a busybox tree. The test
 * initramfs mounts root=/dev/vda and switch_roots to the image's /sbin/init, which writes a
 * file, remounts / read-only (a clean unmount, as a distribution's shutdown does) and powers
 * off. On the host, debugfs reads the file back and e2fsck finds the filesystem clean.
 */
e2e('a Debian kernel boots with root=/dev/vda on an ext4 image, writes a file, and the file is in the image after power-off', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-ext4-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const payload = `written-on-the-ext4-root-${process.pid}`;
  const image = ext4RootImage(dir, [
    'echo "GUEST-ROOTFS=$(awk \'$2 == "/" { t = $1 " " $3 } END { print t }\' /proc/mounts)"',
    'echo "GUEST-ROOT-HOST-FILE=$(cat /etc/from-host)"',
    `echo ${payload} > /written-by-guest`,
    'sync',
    'mount -o remount,ro / && echo GUEST-ROOT-RO=1',
    'poweroff -f',
  ]);

  const r = await bootToStop({ disks: [{ path: image }], cmdline: 'root=/dev/vda rootfstype=ext4', timeoutMs: 120_000 });
  t.is(r.stop.reason, 'poweroff', r.log.slice(-3000));
  t.is(r.markers['ROOT-MOUNTED'], '/dev/vda', r.log.slice(-3000));
  t.is(r.markers['ROOTFS'], '/dev/vda ext4');
  t.is(r.markers['ROOT-HOST-FILE'], 'made-by-mkfs');
  t.is(r.markers['ROOT-RO'], '1');
  t.notRegex(r.log, /GUEST-INIT-OK/, 'the test init must have handed over to the image');
  t.notRegex(r.log, /EXT4-fs error|I\/O error/);

  const cat = spawnSync('debugfs', ['-R', 'cat /written-by-guest', image], { encoding: 'utf8' });
  t.is(cat.stdout.trim(), payload, cat.stderr);
  const fsck = spawnSync('e2fsck', ['-f', '-n', image], { encoding: 'utf8' });
  t.is(fsck.status, 0, `e2fsck found problems:\n${fsck.stdout}${fsck.stderr}`);
});
