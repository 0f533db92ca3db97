/**
 * Tier 2: scripting VM lifecycles against Debian's kernel — exec through the
 * agent port, pause/resume, reset, shutdown, kill, and the withVm harness.
 * Eight VMs at once: many-vms.test.ts.
 */
import test from 'ava';
import { e2eSkipReason } from '../../lib/testing/e2e';
import { withVm, type TestContextLike } from '../../lib/testing/harness';

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
