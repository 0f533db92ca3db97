#!/usr/bin/env node
// Boot the cached Debian guest, run three commands through the exec agent, print their output.
// It uses only the package's public entry points (nodevmm, nodevmm/testing), so it runs as is
// from a project that installed nodevmm; inside this checkout Node resolves them by self-reference.
//   node examples/run-commands.js      (needs a /dev/kvm that runs Linux; see README)
'use strict';
const { createVm } = require('nodevmm');
const { ensureGuestArtifacts, AGENT_CMDLINE } = require('nodevmm/testing');

async function main() {
  const a = await ensureGuestArtifacts({ arch: 'x86_64', onProgress: (m) => console.error(m) });
  const vm = await createVm({
    kernel: a.vmlinuz,
    initrd: a.testInitramfs,
    memory: '256M',
    cmdline: `quiet ${AGENT_CMDLINE} nodevmm.shell=1`,
  });
  await vm.start();
  await vm.serial(1).expect(/GUEST-INIT-OK/, { timeoutMs: 60_000 });
  for (const cmd of ['uname -r', 'nproc', 'head -1 /proc/meminfo']) {
    const r = await vm.exec(cmd);
    console.log(`$ ${cmd}\n${r.stdout.trimEnd()}   (exit ${r.exitCode})`);
  }
  const stop = await vm.shutdown({ timeoutMs: 30_000 });
  console.log(`vm stopped: ${stop.reason}`);
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
