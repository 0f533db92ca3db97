// An ava test file that boots the guest once, snapshots it after init and a
// warm-up command, and starts every test from a VM restored from that
// snapshot (milliseconds instead of a boot per test).
//   npx ava examples/snapshot.test.js      (needs a /dev/kvm that runs Linux, x86_64)
'use strict';
const test = require('ava');
const { withVm } = require('nodevmm/testing');

// The first test to run boots and snapshots; the options of that call make the snapshot.
const READY = { snapshot: 'ready', snapshotWarmUp: 'echo warm > /tmp/warm' };

test('the warm-up ran before the snapshot', async (t) => {
  await withVm(t, READY, async (vm) => {
    t.is((await vm.exec('cat /tmp/warm')).stdout, 'warm\n');
  });
});

test('each test gets its own copy: a file one test writes is not in the next', async (t) => {
  await withVm(t, READY, async (vm) => {
    t.is((await vm.exec('ls /tmp/mine 2>/dev/null; echo $?')).stdout, '1\n');
    await vm.exec('echo x > /tmp/mine');
  });
  await withVm(t, READY, async (vm) => {
    t.is((await vm.exec('ls /tmp/mine 2>/dev/null; echo $?')).stdout, '1\n');
  });
});
