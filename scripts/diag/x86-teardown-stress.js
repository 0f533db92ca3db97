#!/usr/bin/env node
// Diagnostic (not a test): the shapes of scripts/diag/arm64-teardown-stress.js
// on x86 KVM with real-mode tiny guests, meant to run with the addon built
// under AddressSanitizer (LD_PRELOAD=libasan.so): the teardown code is shared.
//   stop-sync    vCPU 0 halts; destroy and build the next partition inside
//                the 'vcpu-stop' listener while vCPU 1 keeps exiting to JS
//   stop-later   the same from setImmediate
//   kill-busy    destroyed from a device handler while both vCPUs exit to JS
//   pause-regs   pause, read registers, resume, destroy
// Usage: node --expose-gc scripts/diag/x86-teardown-stress.js [rounds]
'use strict';
const { KvmPartition } = require('../../dist/lib/hv/kvm-partition');
const { setupRealMode } = require('../../dist/lib/testing/tiny-guests');
const rounds = Number(process.argv[2] || 400);
const modes = ['stop-sync', 'stop-later', 'kill-busy', 'pause-regs'];
let n = 0;
let keep = [];
function next() {
  keep = Array.from({ length: 2000 }, (_, i) => ({ i, b: new Uint8Array(256) }));
  if (global.gc && n % 3 === 0) global.gc();
  if (++n > rounds) {
    console.log(`ALL-OK ${rounds} rounds`);
    process.exit(0);
  }
  if (n % 50 === 0) console.log(`round ${n}`);
  round(modes[n % modes.length]);
}
function round(mode) {
  const p = new KvmPartition({ vcpus: 2, irqchip: false });
  p.addRam({ gpa: 0, size: 4 * 1024 * 1024 });
  let outs = 0;
  let done = false;
  const finish = (sync) => {
    if (done) return;
    done = true;
    const go = () => {
      p.destroy();
      next();
    };
    sync ? go() : setImmediate(go);
  };
  p.pio.register(0x600, 2, {
    name: 'spin',
    read: () => 0,
    write: () => {
      if (++outs === 100 && mode === 'kill-busy') finish(true);
    },
  });
  // vCPU 0: mov dx,0x600; out dx,al x3; then hlt (or spin on out for kill-busy/pause-regs).
  const tail0 = mode === 'kill-busy' || mode === 'pause-regs' ? [0xee, 0xeb, 0xfd] : [0xf4];
  setupRealMode(p, [0xba, 0x00, 0x06, 0xee, 0xee, 0xee, ...tail0], 0x1000, 0);
  setupRealMode(p, [0xba, 0x01, 0x06, 0xee, 0xeb, 0xfd], 0x1800, 1);
  p.on('vcpu-stop', (s) => {
    if (s.vcpu === 0) finish(mode === 'stop-sync');
  });
  p.start();
  if (mode === 'pause-regs') {
    setTimeout(async () => {
      await p.pause();
      p.vcpus[0].getRegs();
      p.vcpus[1].getSregs();
      p.resume();
      setTimeout(() => finish(false), 2);
    }, 2);
  }
}
next();
