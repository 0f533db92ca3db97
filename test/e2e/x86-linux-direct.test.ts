/**
 * Tier 2: Debian 12's kernel booted by nodevmm's x86 Linux Direct path,
 * under a real KVM (run through `npm run test:e2e`, which uses the emulated
 * KVM host where the local /dev/kvm is KVM-PVM).
 */
import test from 'ava';
import * as fs from 'node:fs';
import { tempDir } from '../temp-dir';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { buildX86AcpiTables } from '../../lib/acpi/x86-tables';
import { ACPI_PLATFORM } from '../../lib/arch/x86_64/layout';
import { createVm } from '../../lib/vm/vm';
import { bootToStop, e2eArtifacts, e2eSkipReason, FIRMWARE_COMPLAINTS } from '../../lib/testing/e2e';

const skip = e2eSkipReason();
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`x86 linux direct e2e skipped: ${skip}`, () => {});

/**
 * The RAM the kernel found (the total in its "Memory: avail/totalK available" line) must be
 * within 10% of what we gave: that checks our E820 map. MemTotal is logged too, but it also
 * drops what the kernel reserves for itself (tens of MiB for Debian's kernel), so for small
 * guests it is far below the RAM given under any VMM.
 */
const ramSeen = (t: { true(v: boolean, m?: string): void; log(...v: unknown[]): void }, log: string, memTotalKb: number, bytes: number) => {
  const m = /Memory: (\d+)K\/(\d+)K available/.exec(log);
  t.true(m !== null, 'the kernel printed no Memory: line');
  const totalKb = Number(m![2]);
  const given = bytes / 1024;
  t.log(`given ${given} kB, kernel saw ${totalKb} kB, MemTotal ${memTotalKb} kB`);
  t.true(Math.abs(totalKb - given) / given <= 0.1, `the kernel saw ${totalKb} kB of RAM, not within 10% of ${given} kB`);
};

e2e('bzImage boots to GUEST-INIT-OK, runs a command and powers off with reason poweroff, without firmware complaints', async (t) => {
  const r = await bootToStop({ command: 'echo hello-$((6*7))' });
  t.log(`wall ${r.wallMs} ms`);
  t.regex(r.log, /GUEST-INIT-OK/);
  t.regex(r.log, /^hello-42$/m);
  t.is(r.markers['CMD-EXIT'], '0');
  t.is(r.stop.reason, 'poweroff', r.stop.message);
  t.notRegex(r.log, FIRMWARE_COMPLAINTS);
  t.regex(r.log, /ttyS0 at I\/O 0x3f8 \(irq = 4, base_baud = 115200\) is a 16550A/);
});

e2e('the vmlinux ELF boots through the 64-bit entry', async (t) => {
  const r = await bootToStop({ kernel: e2eArtifacts!.vmlinux, boot: 'linux64' });
  t.regex(r.log, /GUEST-INIT-OK/);
  t.is(r.stop.reason, 'poweroff', r.stop.message);
});

e2e('the vmlinux ELF boots through PVH (32-bit entry, hvm_start_info)', async (t) => {
  const r = await bootToStop({ kernel: e2eArtifacts!.vmlinux, boot: 'pvh' });
  t.regex(r.log, /GUEST-INIT-OK/);
  t.is(r.markers['UNAME-R'], e2eArtifacts!.kernelVersion);
  t.is(r.stop.reason, 'poweroff', r.stop.message);
});

for (const vcpus of [2, 4]) {
  e2e(`${vcpus} vcpus: the guest's nproc is ${vcpus}`, async (t) => {
    const r = await bootToStop({ vcpus });
    t.is(r.markers.NPROC, String(vcpus), r.log.slice(-3000));
    t.is(r.stop.reason, 'poweroff');
    t.notRegex(r.log, FIRMWARE_COMPLAINTS);
  });
}

for (const [label, bytes] of [['128 MiB', 128 * 2 ** 20], ['3.5 GiB (up to the MMIO gap)', 3.5 * 2 ** 30], ['6 GiB (RAM above 4 GiB)', 6 * 2 ** 30]] as const) {
  e2e(`${label} of RAM: the kernel sees it all`, async (t) => {
    const r = await bootToStop({ memory: bytes });
    ramSeen(t, r.log, Number(r.markers['MEMTOTAL-KB']), bytes);
    t.is(r.stop.reason, 'poweroff');
  });
}

e2e('the guest reboot stops the vm with reason reset by default', async (t) => {
  const r = await bootToStop({ command: 'reboot -f' });
  t.is(r.stop.reason, 'reset', r.stop.message);
});

e2e('with onReset restart the guest reboots and reaches its marker again', async (t) => {
  // Drive a shell: reboot from the first boot, power off from the second.
  const a = e2eArtifacts!;
  const vm = await createVm({ kernel: a.vmlinuz, initrd: a.shellInitramfs, memory: '256M', onReset: 'restart' });
  await vm.start();
  const port = vm.serial(1);
  await port.expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
  // The prompt is followed by busybox's cursor-position query, so match the prompt itself.
  await port.expect('/ # ', { timeoutMs: 60_000 });
  port.write('reboot -f\n');
  await port.expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
  t.is(vm.boots, 2);
  t.is(vm.state, 'running');
  await port.expect('/ # ', { timeoutMs: 60_000 });
  port.write('poweroff -f\n');
  const stop = await vm.waitForStop();
  t.is(stop.reason, 'poweroff');
});

e2e('a kernel panic with panic=-1 stops the vm with reason reset', async (t) => {
  const r = await bootToStop({ command: 'echo c > /proc/sysrq-trigger' });
  t.regex(r.log, /Kernel panic/);
  t.is(r.stop.reason, 'reset', r.stop.message);
});

e2e('a triple fault (reboot=t) stops the vm with reason triple-fault', async (t) => {
  const r = await bootToStop({ cmdline: 'reboot=t', command: 'reboot -f' });
  t.is(r.stop.reason, 'triple-fault', r.stop.message);
});

e2e('the ACPI tables the guest sees equal the bytes we built', async (t) => {
  const r = await bootToStop({ vcpus: 2, command: 'for x in APIC DSDT FACP FACS; do echo "TABLE-$x=$(base64 /sys/firmware/acpi/tables/$x | tr -d "\\n")"; done' });
  t.is(r.stop.reason, 'poweroff');
  const built = buildX86AcpiTables({
    ...ACPI_PLATFORM,
    vcpus: 2,
    serialPorts: [
      { name: 'COM1', port: 0x3f8, irq: 4 },
      { name: 'COM2', port: 0x2f8, irq: 3 },
      { name: 'COM3', port: 0x3e8, irq: 4 },
      { name: 'COM4', port: 0x2e8, irq: 3 },
    ],
  });
  for (const sig of ['APIC', 'DSDT', 'FACP', 'FACS']) {
    const seen = new RegExp(`^TABLE-${sig}=(.*)$`, 'm').exec(r.log)?.[1];
    t.truthy(seen, `guest printed no ${sig}`);
    const ours = built.tables.find((x) => x.signature === sig);
    t.truthy(ours, `we built no ${sig}`);
    t.deepEqual(Buffer.from(seen!, 'base64'), Buffer.from(ours!.bytes), `${sig} differs`);
  }
});

e2e('nodevmm run exits 0 when the guest powers off and 2 with one sentence for a bad kernel', (t) => {
  const bin = path.resolve(__dirname, '../../../bin/nodevmm.js');
  const ok = spawnSync(process.execPath, [bin, 'run', '--kernel', e2eArtifacts!.vmlinuz, '--initrd', e2eArtifacts!.testInitramfs, '-m', '256M', '--com1', 'stdio'], { input: '', timeout: 180_000 });
  t.is(ok.status, 0, ok.stderr.toString());
  t.regex(ok.stdout.toString(), /GUEST-INIT-OK/);
  const bad = path.join(tempDir(t), 'truncated');
  fs.writeFileSync(bad, fs.readFileSync(e2eArtifacts!.vmlinuz).subarray(0, 8192));
  const r = spawnSync(process.execPath, [bin, 'run', '--kernel', bad], { timeout: 30_000 });
  t.is(r.status, 2);
  t.regex(r.stderr.toString(), /^nodevmm: .*truncated.*\n$/);
});
