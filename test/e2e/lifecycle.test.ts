/**
 * Tier 2: scripting VM lifecycles against Debian's kernel — exec through the
 * agent port, pause/resume, reset, shutdown, kill, several VMs at once, and
 * the withVm harness.
 */
import test from 'ava';
import { e2eSkipReason } from '../../lib/testing/e2e';
import { withVm, type TestContextLike } from '../../lib/testing/harness';
import { processResources } from '../../lib/testing/kvm-test-helpers';

const skip = e2eSkipReason();
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`lifecycle e2e skipped: ${skip}`, () => {});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

e2e('exec returns stdout and the exit status, through the agent port', async (t) => {
  await withVm(t, {}, async (vm) => {
    const a = await vm.exec('uname -r; echo two words');
    t.is(a.exitCode, 0);
    t.regex(a.stdout, /^6\.\d+\.\d+-\d+-amd64\ntwo words\n$/);
    const b = await vm.exec('echo to-stderr >&2; exit 3');
    t.is(b.exitCode, 3);
    t.is(b.stdout, 'to-stderr\n');
    // Kernel messages go to the console (com1); the agent (com2) output stays clean.
    const c = await vm.exec('echo kmsg-noise > /dev/kmsg; echo clean');
    t.is(c.stdout, 'clean\n');
  });
});

e2e('pause then resume keeps the guest running and its uptime jumps less than the pause', async (t) => {
  await withVm(t, {}, async (vm) => {
    const uptime = async () => Number((await vm.exec('cut -d" " -f1 /proc/uptime')).stdout);
    const before = await uptime();
    const hostBefore = Date.now();
    await vm.pause();
    t.is(vm.state, 'paused');
    await sleep(5000);
    await vm.resume();
    const after = await uptime();
    const hostSeconds = (Date.now() - hostBefore) / 1000;
    t.log(`guest uptime advanced ${(after - before).toFixed(2)} s over ${hostSeconds.toFixed(2)} s of host time with a 5 s pause`);
    t.true(after > before, 'the guest kept running');
    t.true(after - before < hostSeconds - 4, 'the pause did not count as guest time');
  });
});

e2e('reset reboots the guest to its marker again', async (t) => {
  await withVm(t, {}, async (vm) => {
    await vm.reset();
    await vm.serial(1).expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
    t.is(vm.boots, 2);
    t.is((await vm.exec('echo again')).stdout, 'again\n');
  });
});

e2e('shutdown presses the ACPI power button and the guest powers off cleanly', async (t) => {
  await withVm(t, {}, async (vm) => {
    const stop = await vm.shutdown({ timeoutMs: 60_000 });
    t.is(stop.reason, 'poweroff', stop.message);
  });
});

e2e('kill stops the vm at once', async (t) => {
  await withVm(t, {}, async (vm) => {
    const started = Date.now();
    const stop = await vm.kill();
    t.is(stop.reason, 'killed');
    t.true(Date.now() - started < 1000);
    t.is(vm.state, 'stopped');
  });
});

e2e('withVm attaches the serial log to a failing test and still tears the vm down', async (t) => {
  const logs: string[] = [];
  let vmRef: { state: string } | undefined;
  const fake: TestContextLike = { log: (...v: unknown[]) => logs.push(v.join(' ')) };
  await t.throwsAsync(
    withVm(fake, {}, async (vm) => {
      vmRef = vm;
      throw new Error('the test body failed');
    }),
    { message: 'the test body failed' },
  );
  t.is(vmRef?.state, 'stopped');
  t.true(logs.some((l) => l.includes('--- serial com1') && l.includes('GUEST-INIT-OK')));
});

// Inside the emulated KVM host (QEMU TCG with nested SVM) this test takes the host's own kernel
// down: "BUG: TASK stack guard page was hit" in error_entry on a vCPU thread, then "corrupted
// stack end detected inside scheduler", in every run so far, with 2 or with 8 emulated CPUs
// (so it is not vCPU overcommit), even with starts staggered by 10 s; QEMU's guests crash it
// the same way. It runs wherever the e2e tier runs on a real KVM; NODEVMM_FORCE_8VMS=1 runs it
// in the emulated host anyway, to try other settings of it.
const inEmulatedHost = process.env.NODEVMM_IN_KVM_HOST === '1' && process.env.NODEVMM_FORCE_8VMS !== '1';
const eightVms = skip || inEmulatedHost ? test.skip : test.serial;
if (!skip && inEmulatedHost) {
  test.skip('8 concurrent vms: skipped in the emulated KVM host, whose kernel crashes under eight nested guests (runs on a real KVM)', () => {});
}

eightVms('8 vms run concurrently in one process, each runs exec and powers off, leaving no fds, threads or memory behind', async (t) => {
  // Earlier tests in this file already booted VMs here, so JIT and allocators are warm.
  global.gc?.();
  const before = processResources();
  // All eight are alive at once: each waits at a barrier after its exec until the
  // others have run theirs. Starts are staggered by 10 s because the emulated KVM
  // host (QEMU TCG with nested SVM) breaks when several guests run their early
  // boot at the same instant: with QEMU's own microvm guests its kernel crashed,
  // with ours a guest triple-faulted mid-boot (see docs/testing.md). Booted guests
  // idle in HLT, so from the 8th start on all eight run at once.
  let arrived = 0;
  let release!: () => void;
  const allRan = new Promise<void>((r) => (release = r));
  const results = await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      await sleep(i * 10_000);
      return withVm({}, { memory: '128M', bootTimeoutMs: 240_000, timeoutMs: 600_000 }, async (vm) => {
        const r = await vm.exec(`echo vm-${i}`, { timeoutMs: 120_000 });
        if (++arrived === 8) release();
        await allRan;
        const stop = await vm.shutdown({ timeoutMs: 120_000 });
        return { out: r.stdout, stop: stop.reason };
      });
    }),
  );
  t.deepEqual(results.map((r) => r.out), Array.from({ length: 8 }, (_, i) => `vm-${i}\n`));
  t.true(results.every((r) => r.stop === 'poweroff'));
  global.gc?.();
  await sleep(200);
  const after = processResources();
  t.log(`before ${JSON.stringify(before)} after ${JSON.stringify(after)}`);
  t.is(after.fds, before.fds, 'file descriptors');
  t.is(after.threads, before.threads, 'threads');
  // Each guest touches tens of MiB of its 128 MiB; one leaked VM would exceed this bound.
  t.true(after.rssKiB - before.rssKiB < 24 * 1024, `rss grew by ${after.rssKiB - before.rssKiB} KiB`);
});
