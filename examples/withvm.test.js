// An ava test file that boots a VM per test with nodevmm/testing's withVm.
//   npx ava examples/withvm.test.js      (needs a /dev/kvm that runs Linux)
'use strict';
const test = require('ava');
const { withVm } = require('nodevmm/testing');

test('the guest sees two CPUs', async (t) => {
  await withVm(t, { vcpus: 2 }, async (vm) => {
    const r = await vm.exec('nproc');
    t.is(r.stdout.trim(), '2');
  });
});

test('a file written in the guest can be read back', async (t) => {
  await withVm(t, {}, async (vm) => {
    await vm.exec('echo hello > /tmp/x');
    t.is((await vm.exec('cat /tmp/x')).stdout, 'hello\n');
  });
});
