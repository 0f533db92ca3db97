#!/usr/bin/env node
// Boot Debian's arm64 kernel on an arm64 host, run a command through the exec agent (ttyAMA1),
// pause and resume, and shut the guest down with the power key. Only the package's public entry
// points (nodevmm, nodevmm/testing), as in examples/run-commands.js.
//   node examples/arm64-vm.js [IMAGE INITRD]
// Without arguments it uses the cache `node scripts/arm64-kvm-host.js` fills (Debian's arm64
// kernel, busybox and modules) and builds the test initramfs from it. Needs /dev/kvm on arm64.
'use strict';
const fs = require('node:fs');
const { createVm, buildTestInitramfs } = require('nodevmm');
const { agentCmdline, arm64GuestModules, findArm64Artifacts } = require('nodevmm/testing');

function guest() {
  const [image, initrd] = process.argv.slice(2);
  if (image && initrd) return { kernel: image, initrd };
  const a = findArm64Artifacts();
  if (!a) throw new Error('no arm64 artifacts in the cache: run node scripts/arm64-kvm-host.js once, or pass IMAGE INITRD');
  return { kernel: a.image, initrd: buildTestInitramfs({ busybox: fs.readFileSync(a.busybox), modules: arm64GuestModules(a) }) };
}

async function main() {
  const vm = await createVm({ ...guest(), memory: '256M', vcpus: 2, cmdline: `quiet ${agentCmdline()} nodevmm.shell=1` });
  await vm.start();
  await vm.serial(1).expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
  console.log(`arch ${vm.config.arch}, uname -m: ${(await vm.exec('uname -m')).stdout.trim()}`);
  await vm.pause();
  console.log(`state ${vm.state}`);
  await vm.resume();
  console.log(`nproc after resume: ${(await vm.exec('nproc')).stdout.trim()}`);
  const stop = await vm.shutdown({ timeoutMs: 60_000 });
  console.log(`vm stopped: ${stop.reason}`);
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
