/**
 * lib/testing/qemu-stall.ts on real processes: one that sleeps uses no CPU and
 * is reported; one that spins is not. (kvm-host-stall.test.ts freezes a real
 * emulated host.)
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { processCpuTicks, watchForStall } from '../../../lib/testing/qemu-stall';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a process that uses no CPU is reported once, with how long it was idle', async (t) => {
  const child = spawn('sleep', ['60']);
  t.teardown(() => child.kill('SIGKILL'));
  const reports: number[] = [];
  const stop = watchForStall(child.pid, 1500, (s) => reports.push(s));
  for (let i = 0; i < 40 && reports.length === 0; i++) await sleep(100);
  await sleep(1500);
  stop();
  t.is(reports.length, 1);
  t.true(reports[0]! >= 1);
});

test('a process that keeps using CPU is not reported', async (t) => {
  // A spin that ends by itself: a teardown does not run when the test process is killed, and an
  // endless one would then burn a core until the machine stops.
  const child = spawn(process.execPath, ['-e', 'const end = Date.now() + 20000; while (Date.now() < end);']);
  t.teardown(() => child.kill('SIGKILL'));
  const reports: number[] = [];
  const stop = watchForStall(child.pid, 1500, (s) => reports.push(s));
  await sleep(4000);
  stop();
  t.deepEqual(reports, []);
  t.true(processCpuTicks(child.pid!)! > 0);
});

test('no pid or stallMs 0: nothing is watched', (t) => {
  const stop = watchForStall(undefined, 1000, () => t.fail());
  stop();
  watchForStall(process.pid, 0, () => t.fail())();
  t.is(processCpuTicks(2 ** 22 + 12345), undefined, 'a pid that does not exist');
});

test('onIdle is called once, after a third of stallMs, before the stall is reported', async (t) => {
  const child = spawn('sleep', ['60']);
  t.teardown(() => child.kill('SIGKILL'));
  const events: string[] = [];
  const stop = watchForStall(child.pid, 3000, () => events.push('stall'), () => events.push('idle'));
  for (let i = 0; i < 60 && !events.includes('stall'); i++) await sleep(100);
  stop();
  t.deepEqual(events, ['idle', 'stall']);
});
