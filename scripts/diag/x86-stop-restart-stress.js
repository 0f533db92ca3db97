#!/usr/bin/env node
// Diagnostic (not a test): on x86 KVM, a vCPU ends its own run loop (hlt
// without an in-kernel irqchip), and from the 'vcpu-stop' it reports the
// partition is destroyed and a new one built and started, N times in a row,
// while the other vCPU keeps exiting to JS. The shape of an arm64 guest
// reboot with onReset 'restart' (PSCI SYSTEM_RESET), without the emulated host.
// Usage: node scripts/diag/x86-stop-restart-stress.js [rounds] [sync|immediate]
'use strict';
const { KvmPartition } = require('../../dist/lib/hv/kvm-partition');
const { setupRealMode } = require('../../dist/lib/testing/tiny-guests');
const rounds = Number(process.argv[2] || 500);
const mode = process.argv[3] || 'immediate';
let n = 0;
function round() {
  const p = new KvmPartition({ vcpus: 2, irqchip: false });
  p.addRam({ gpa: 0, size: 2 * 1024 * 1024 });
  let outs = 0;
  p.pio.register(0x600, 2, { name: 'spin', read: () => 0, write: () => void outs++ });
  // vCPU 0: mov dx,0x600; out dx,al x3; hlt.  vCPU 1: mov dx,0x601; L: out dx,al; jmp L.
  setupRealMode(p, [0xba, 0x00, 0x06, 0xee, 0xee, 0xee, 0xf4], 0x1000, 0);
  setupRealMode(p, [0xba, 0x01, 0x06, 0xee, 0xeb, 0xfd], 0x1800, 1);
  p.on('vcpu-stop', (s) => {
    if (s.vcpu !== 0) return;
    const next = () => {
      p.destroy();
      if (++n % 50 === 0) process.stdout.write(`round ${n}\n`);
      if (n < rounds) round();
      else console.log(`ALL-OK ${n} rounds (${mode})`);
    };
    if (mode === 'sync') next();
    else setImmediate(next);
  });
  p.start();
}
round();
