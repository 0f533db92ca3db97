#!/usr/bin/env node
'use strict';
/**
 * Interrupt round-trip benchmark: the in-kernel irqchip against the
 * userspace one (KVM_CAP_SPLIT_IRQCHIP with the TypeScript IOAPIC), edge and
 * level. One tiny long-mode guest (lib/testing/tiny-guests.ts
 * setupInterruptGuest) takes an interrupt, reports it on a port, EOIs and
 * reports that; the host sends the next interrupt from the second report, so
 * each iteration is one interrupt through the whole path (for the userspace
 * level case that includes the EOI exit). Modes run interleaved, R rounds;
 * medians per interrupt and ratios to the in-kernel edge case are printed.
 *
 *   node scripts/bench-irqchip.js [--iterations N] [--rounds R]
 */
const { KvmPartition } = require('../dist/lib/hv/kvm-partition');
const { Ioapic } = require('../dist/lib/devices/irqchip/ioapic');
const { IOAPIC, IOAPIC_PINS, IOAPIC_SIZE } = require('../dist/lib/arch/x86_64/layout');
const { kvmSkipReason, X86_KVM_PAGES } = require('../dist/lib/testing/kvm-test-helpers');
const { setupInterruptGuest } = require('../dist/lib/testing/tiny-guests');
const { openHypervisor } = require('../dist/lib/hv/hypervisor');
const { numberOption } = require('./lib/options');

const N = numberOption('--iterations', 2000);
const ROUNDS = numberOption('--rounds', 3);
const PIN = 19;
const VECTOR = 0x41;
const [READY, HANDLED, EOI_DONE] = [0x5f1, 0x5f2, 0x5f3];

const skip = kvmSkipReason() ?? (openHypervisor().x86Irqchips().includes('userspace') ? undefined : 'no KVM_CAP_SPLIT_IRQCHIP');
if (skip) {
  console.log(`bench-irqchip: skipped: ${skip}`);
  process.exit(0);
}

/** Run N interrupts in one mode; resolves with ns per interrupt. */
function run(irqchip, level) {
  return new Promise((resolve, reject) => {
    const p = new KvmPartition({ vcpus: 1, irqchip, ...X86_KVM_PAGES });
    p.addRam({ gpa: 0, size: 4 * 1024 * 1024 });
    let setLine;
    if (irqchip === 'userspace') {
      const bus = p.localApicBus;
      const ioapic = new Ioapic({ id: IOAPIC.id, pins: IOAPIC_PINS, deliver: (m) => bus.signalMsi(m), onRoutesChanged: (r) => bus.setPinRoutes(r) });
      bus.onEoi((v) => ioapic.eoi(v));
      p.mmio.register(IOAPIC.address, IOAPIC_SIZE, ioapic);
      setLine = (l) => ioapic.setLevel(PIN, l);
    } else {
      setLine = (l) => p.setIrqLine(PIN, l);
    }
    const send = () => {
      setLine(true);
      if (!level) setLine(false);
    };
    let done = 0;
    let t0 = 0n;
    const port = (fn) => ({ name: 'bench', read: () => 0, write: fn });
    p.pio.register(READY, 1, port(() => {
      t0 = process.hrtime.bigint();
      send();
    }));
    // A level device lowers its line when the driver handles it (here: the handler's first report).
    p.pio.register(HANDLED, 1, port(() => level && setLine(false)));
    p.pio.register(EOI_DONE, 1, port(() => {
      if (++done < N) return send();
      const ns = Number(process.hrtime.bigint() - t0) / N;
      p.destroy();
      resolve(ns);
    }));
    p.once('vcpu-stop', (s) => {
      p.destroy();
      reject(new Error(`${irqchip}: ${s.message}`));
    });
    setupInterruptGuest(p, { vector: VECTOR, ioapicPin: PIN, level, readyPort: READY, handledPort: HANDLED, eoiDonePort: EOI_DONE });
    p.start();
  });
}

const MODES = [
  ['kernel', false],
  ['userspace', false],
  ['kernel', true],
  ['userspace', true],
];

(async () => {
  const results = new Map(MODES.map((m) => [m.join('/'), []]));
  for (let r = 0; r < ROUNDS; r++) for (const [chip, level] of MODES) results.get(`${chip}/${level}`).push(await run(chip, level));
  const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const base = median(results.get('kernel/false'));
  console.log(`bench-irqchip: ${N} interrupts x ${ROUNDS} rounds, median per interrupt (guest handler: 2 port exits + EOI)`);
  for (const [chip, level] of MODES) {
    const m = median(results.get(`${chip}/${level}`));
    console.log(`  ${chip.padEnd(9)} ${level ? 'level' : 'edge '}  ${(m / 1000).toFixed(1).padStart(7)} us   x${(m / base).toFixed(2)} of kernel edge`);
  }
})().catch((e) => {
  console.error(`bench-irqchip: ${e.message}`);
  process.exit(1);
});
