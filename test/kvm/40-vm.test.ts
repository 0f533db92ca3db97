/**
 * Tier 1: the whole VM (createVm → Linux Direct loader → ACPI → devices →
 * vCPUs) with the tiny PVH kernel, on this machine's /dev/kvm.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { tempDir } from '../temp-dir';
import * as path from 'node:path';
import { createVm } from '../../lib/vm/vm';
import { withVm } from '../../lib/testing/harness';
import { cachedImageCount } from '../../lib/vm/image-files';
import { kvmSkipReason, settledProcessResources } from '../../lib/testing/kvm-test-helpers';
import { cmosProbeCode, tinyPvhKernel, uartProbeCode } from '../../lib/testing/tiny-pvh';
import { ConfigError } from '../../lib/errors';
import { anonymousThpAvailable, hostMappingAt } from '../../lib/testing/host-mapping';

const skip = kvmSkipReason();
const kvm = skip ? test.skip : test;
// Tests that count the process's fds, threads and RSS: ava runs serial tests first, one at a
// time, so no other test's VMs are open while they measure.
const kvmAlone = skip ? test.skip : test.serial;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

kvm('the tiny PVH kernel prints on COM1 and powers off through the ACPI PM block', async (t) => {
  const vm = await createVm({ kernel: tinyPvhKernel('HELLO-FROM-PVH\n'), boot: 'pvh', memory: '128M' });
  await vm.start();
  const m = await vm.serial(1).expect(/HELLO-FROM-PVH/, { timeoutMs: 10_000 });
  t.truthy(m);
  const stop = await vm.waitForStop();
  t.is(stop.reason, 'poweroff', stop.message);
  t.is(vm.state, 'stopped');
  t.regex(vm.serial(1).log(), /^HELLO-FROM-PVH\n/);
});

kvm('a VM without shares gets private anonymous RAM, which transparent huge pages can back: no memfd', async (t) => {
  const vm = await createVm({ kernel: tinyPvhKernel('ANON-RAM\n', { powerOff: false }), boot: 'pvh', memory: '64M' });
  t.teardown(() => vm.kill());
  await vm.start();
  await vm.serial(1).expect(/ANON-RAM/, { timeoutMs: 10_000 });
  const regions = vm.partition.ramMappings();
  t.true(regions.length > 0);
  for (const r of regions) {
    t.is(r.fd, -1, 'no fd for another process to map');
    const m = hostMappingAt(r.hostAddress);
    t.is(m?.perms, 'rw-p');
    t.is(m?.path, '', 'anonymous, not a /memfd: file');
    // A memfd would be shmem, governed by THP's `shmem_enabled` (never on most hosts) instead.
    if (anonymousThpAvailable() && m && 'THPeligible' in m.fields) t.is(m.fields.THPeligible, 1);
  }
});

/** Boot the tiny PVH kernel with a probe before its message; the guest's COM1 output and the exit counters as it stopped. */
async function probeRun(prelude: number[], vcpus = 1) {
  const vm = await createVm({ kernel: tinyPvhKernel('\n', { prelude }), boot: 'pvh', memory: '64M', vcpus });
  let stats: ReturnType<typeof vm.exitStats>;
  vm.on('state', (s) => s === 'stopping' && (stats = vm.exitStats()));
  await vm.start();
  const stop = await vm.waitForStop();
  return { stop, out: vm.serial(1).log(), stats: stats! };
}

kvm('COM1 IER writes are posted on one vCPU, and what follows them sees them: IIR reports THRE, IER reads back, the divisor latch is not IER', async (t) => {
  const { stop, out, stats } = await probeRun(uartProbeCode());
  t.is(stop.reason, 'poweroff', stop.message);
  t.is(out, 'BBORO\n');
  // To JS: the IIR read, the two LCR writes, the divisor-latch write (DLAB set: not posted) and the power-off.
  t.is(stats.exitsToJs, 5n);
  t.is(stats.exitsPosted, 2n + 6n); // the two IER writes and six THR bytes
});

kvm('COM1 IER writes wait for JS on two vCPUs (their posted-write rings are not ordered with each other)', async (t) => {
  const { stop, out, stats } = await probeRun(uartProbeCode(), 2);
  t.is(stop.reason, 'poweroff', stop.message);
  t.is(out, 'BBORO\n');
  t.is(stats.exitsToJs, 7n);
  t.is(stats.exitsPosted, 6n);
});

kvm('CMOS index writes are posted, and the data port reads the register the last one selected', async (t) => {
  const { stop, out, stats } = await probeRun(cmosProbeCode());
  t.is(stop.reason, 'poweroff', stop.message);
  t.is(out, 'HU\n');
  t.is(stats.exitsToJs, 4n); // the data write, the two data reads, the power-off
  t.is(stats.exitsPosted, 4n + 3n); // four index writes, three THR bytes
});

kvm('a VM with a disk, an entropy device and a virtio console attaches them (their models load on first use) and boots', async (t) => {
  const disk = path.join(tempDir(t, 'nodevmm-virtio-'), 'disk.img');
  fs.writeFileSync(disk, Buffer.alloc(1 << 20));
  const vm = await createVm({ kernel: tinyPvhKernel('VIRTIO-UP\n'), boot: 'pvh', memory: '64M', disks: [{ path: disk }], rng: true, virtioConsole: true });
  await vm.start();
  await vm.serial(1).expect(/VIRTIO-UP/, { timeoutMs: 10_000 });
  const stop = await vm.waitForStop();
  t.is(stop.reason, 'poweroff', stop.message);
});

kvm('boot auto (the default) enters the tiny PVH kernel, which is not Linux, through PVH', async (t) => {
  const vm = await createVm({ kernel: tinyPvhKernel('AUTO-PVH\n'), memory: '64M' });
  await vm.start();
  await vm.serial(1).expect(/AUTO-PVH/, { timeoutMs: 10_000 });
  const stop = await vm.waitForStop();
  t.is(stop.reason, 'poweroff', stop.message);
});

kvm('kill stops a running vm at once and a second kill is harmless', async (t) => {
  const vm = await createVm({ kernel: tinyPvhKernel('X\n', { powerOff: false }), boot: 'pvh', memory: '64M' });
  await vm.start();
  await vm.expect('X');
  const r = await vm.kill();
  t.is(r.reason, 'killed');
  t.is((await vm.kill()).reason, 'killed');
  await t.throwsAsync(() => vm.pause(), { code: 'ERR_VM_STATE', message: /cannot pause a vm that is stopped/ });
});

kvm('diagnose() says where a running guest is and leaves it paused', async (t) => {
  const vm = await createVm({ kernel: tinyPvhKernel('D\n', { powerOff: false }), boot: 'pvh', memory: '64M' });
  t.is(await vm.diagnose(), 'vm created');
  await vm.start();
  await vm.expect('D');
  const d = await vm.diagnose();
  t.regex(
    d,
    /^vcpu0 rip 0x[0-9a-f]+ rsp 0x[0-9a-f]+ rflags 0x[0-9a-f]+ mp_state \d+ lapic isr (0x[0-9a-f]+|-) irr (0x[0-9a-f]+|-) tpr 0x[0-9a-f]+ timer (oneshot|periodic|deadline)( masked)? vector 0x[0-9a-f]+ init \d+ cur \d+; com1 ier 0x[0-9a-f]+ lcr 0x[0-9a-f]+ mcr 0x[0-9a-f]+ thre-pending (true|false) rx \d+ irq (high|low)(, com\d ier 0x[0-9a-f]+ lcr 0x[0-9a-f]+ mcr 0x[0-9a-f]+ thre-pending (true|false) rx \d+ irq (high|low))*; exits to js \d+, native \d+, posted \d+; notifications \d+, rescues \d+$/,
  );
  t.is(vm.state, 'paused');
  await vm.kill();
  t.is(await vm.diagnose(), 'vm stopped');
});

kvm('jsExitsByDevice() names the devices whose exits reached JS, busiest first', async (t) => {
  const vm = await createVm({ kernel: tinyPvhKernel('JS\n', { powerOff: false }), boot: 'pvh', memory: '64M' });
  t.deepEqual(vm.jsExitsByDevice(), []);
  await vm.start();
  await vm.expect('JS');
  const byDevice = vm.jsExitsByDevice();
  // The guest's COM1 output reaches the UART model in JS (posted THR writes count too).
  const com1 = byDevice.find((d) => d.name === 'com1');
  t.truthy(com1, JSON.stringify(byDevice));
  t.is(com1!.start, 0x3f8);
  t.true(com1!.accesses >= 3);
  t.deepEqual(byDevice.map((d) => d.accesses), [...byDevice.map((d) => d.accesses)].sort((a, b) => b - a));
  await vm.kill();
});

kvm('pause and resume keep the vm alive; calls in the wrong state fail clearly', async (t) => {
  const vm = await createVm({ kernel: tinyPvhKernel('Y\n', { powerOff: false }), boot: 'pvh', memory: '64M' });
  await t.throwsAsync(() => vm.resume(), { code: 'ERR_VM_STATE', message: /cannot resume a vm that is created/ });
  await vm.start();
  await vm.pause();
  t.is(vm.state, 'paused');
  t.is(vm.memory.readU8(0x100000), 0x66, 'guest memory is readable while paused');
  await vm.resume();
  t.is(vm.state, 'running');
  await vm.kill();
});

kvm('await using kills the vm at scope exit', async (t) => {
  let ref;
  {
    await using vm = await createVm({ kernel: tinyPvhKernel('Z\n', { powerOff: false }), boot: 'pvh', memory: '64M' });
    ref = vm;
    await vm.start();
  }
  t.is(ref.state, 'stopped');
  t.is((await ref.waitForStop()).reason, 'killed');
});

test('a bad configuration lists every problem at once', async (t) => {
  const e = await t.throwsAsync(() => createVm({ memory: '1X', vcpus: 0, boot: 'uefi' as never, serial: { com9: true } as never }), { instanceOf: ConfigError });
  const paths = e!.issues.map((i) => i.path).sort();
  t.deepEqual(paths, ['boot', 'kernel', 'memory', 'serial.com9', 'vcpus']);
  t.regex(e!.message, /memory: "1X" is not a size/);
});

test('a missing kernel file is one clear sentence', async (t) => {
  await t.throwsAsync(() => createVm({ kernel: '/nonexistent/vmlinuz' }), { code: 'ERR_FILE', message: 'kernel file /nonexistent/vmlinuz does not exist' });
});

kvmAlone('8 vms alive at once in one process, each on its own serial log; rounds of them leave no fds, threads or memory behind', async (t) => {
  // The whole Vm stack (machine, devices, serial, lifecycle) eight times over, with the tiny
  // PVH guest: real Linux cannot boot on this machine's KVM-PVM (test/e2e/many-vms.test.ts
  // does the Linux version wherever a real KVM is).
  const round = async () => {
    const vms = await Promise.all(Array.from({ length: 8 }, (_, i) => createVm({ kernel: tinyPvhKernel(`VM-${i}-UP\n`, { powerOff: false }), boot: 'pvh', memory: '64M', name: `vm${i}` })));
    try {
      await Promise.all(vms.map((vm) => vm.start()));
      await Promise.all(vms.map((vm, i) => vm.serial(1).expect(new RegExp(`VM-${i}-UP`), { timeoutMs: 20_000 })));
      const alive = vms.filter((vm) => vm.state === 'running').length;
      const logs = vms.map((vm) => vm.serial(1).log());
      return { alive, logs };
    } finally {
      await Promise.all(vms.map((vm) => vm.kill()));
    }
  };
  // Warm-up rounds: V8's heap and malloc arenas reach their high-water mark first.
  for (let i = 0; i < 3; i++) await round();
  global.gc?.();
  const before = await settledProcessResources();
  for (let i = 0; i < 5; i++) {
    const r = await round();
    t.is(r.alive, 8);
    t.deepEqual(r.logs, Array.from({ length: 8 }, (_, j) => `VM-${j}-UP\n`));
  }
  global.gc?.();
  await new Promise((r) => setTimeout(r, 100));
  const after = await settledProcessResources();
  t.log(`before ${JSON.stringify(before)} after ${JSON.stringify(after)}`);
  t.is(after.fds, before.fds, 'file descriptors');
  t.is(after.threads, before.threads, 'threads');
  // 40 VMs of 64 MiB: leaking one VM's guest RAM (or touched pages of several) would show.
  t.true(after.rssKiB - before.rssKiB < 8 * 1024, `rss grew by ${after.rssKiB - before.rssKiB} KiB`);
});

kvm('a stopped vm is not kept alive by withVm teardowns the test framework still holds, nor by the exit-kill set', async (t) => {
  if (!global.gc) return t.pass('needs --expose-gc');
  // Stands in for ava, which keeps every t.teardown until the test ends.
  const held: Array<() => unknown> = [];
  const ctx = { teardown: (f: () => unknown) => void held.push(f), log: () => {} };
  const refs: Array<WeakRef<object>> = [];
  await Promise.all(
    Array.from({ length: 4 }, () =>
      withVm(ctx, { kernel: tinyPvhKernel('UP\n', { powerOff: false }), boot: 'pvh', memory: '64M', waitFor: 'UP', agent: false }, async (vm) => {
        refs.push(new WeakRef(vm));
        await vm.kill();
      }),
    ),
  );
  t.is(held.length, 4);
  // WeakRef targets live at least until the current job ends: collect across turns.
  for (let i = 0; i < 20 && refs.some((r) => r.deref()); i++) {
    await new Promise((r) => setTimeout(r, 20));
    global.gc();
  }
  t.deepEqual(refs.map((r) => r.deref() === undefined), [true, true, true, true]);
  for (const f of held) await f(); // harmless once the VM is gone
});

kvm('a stopped vm that is still held lets go of its image bytes (a stopped vm never boots again); an ELF kernel is never held', async (t) => {
  if (!global.gc) return t.pass('needs --expose-gc');
  const dir = tempDir(t, 'nodevmm-held-');
  const file = path.join(dir, 'tiny-pvh');
  fs.writeFileSync(file, tinyPvhKernel('HELD\n', { powerOff: false }));
  const initrd = path.join(dir, 'initrd');
  fs.writeFileSync(initrd, Buffer.alloc(64 * 1024, 0x5a));
  const old = new Date(Date.now() - 60_000); // files modified in the last 2 s are not shared, so not cached
  for (const f of [file, initrd]) fs.utimesSync(f, old, old);
  const before = cachedImageCount();
  const vm = await createVm({ kernel: file, initrd, boot: 'pvh', memory: '64M' });
  t.is(cachedImageCount(), before + 1, 'the initrd is read into the shared cache; the ELF kernel stays in its file');
  await vm.start();
  await vm.expect('HELD');
  await vm.kill();
  for (let i = 0; i < 20 && cachedImageCount() > before; i++) {
    await new Promise((r) => setTimeout(r, 20));
    global.gc();
  }
  t.is(cachedImageCount(), before, 'the held, stopped vm no longer keeps the initrd bytes alive');
  t.is(vm.state, 'stopped');
});
