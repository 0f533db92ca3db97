/**
 * Tier 1: the userspace irqchip on KVM (KVM_CAP_SPLIT_IRQCHIP): the local
 * APIC stays in the kernel, the guest programs the TypeScript IOAPIC through
 * MMIO at the layout's address, interrupts reach the guest as KVM_SIGNAL_MSI,
 * and the EOI of a level-triggered pin's vector comes back as
 * KVM_EXIT_IOAPIC_EOI, so a line still asserted is delivered again; the
 * TypeScript PIT drives IRQ0 through the IOAPIC's pin 2.
 */
import test from 'ava';
import { IOAPIC, IOAPIC_PINS, IOAPIC_SIZE, PIT_PORT, PIT_ROUTE } from '../../lib/arch/x86_64/layout';
import { Pit, PIT_PORT_COUNT } from '../../lib/devices/irqchip/i8254';
import { Ioapic, REDIR_MASK_BIT, REDIR_REMOTE_IRR_BIT, REDIR_TRIGGER_LEVEL_BIT } from '../../lib/devices/irqchip/ioapic';
import { openHypervisor } from '../../lib/hv/hypervisor';
import { KvmPartition } from '../../lib/hv/kvm-partition';
import type { VcpuStop } from '../../lib/hv/partition';
import { kvmSkipReason, X86_KVM_PAGES } from '../../lib/testing/kvm-test-helpers';
import { asm, assemble, setupInterruptGuest, setupLongMode } from '../../lib/testing/tiny-guests';
import { MiB } from '../../lib/util/bytes';
import { createVm } from '../../lib/vm/vm';
import { tinyPvhKernel } from '../../lib/testing/tiny-pvh';

const skip = kvmSkipReason() ?? (openHypervisor().x86Irqchips().includes('userspace') ? undefined : "this host's KVM has no KVM_CAP_SPLIT_IRQCHIP");
const kvm = skip ? test.serial.skip : test.serial;
if (skip) console.log(`# SKIP userspace irqchip: ${skip}`);

const READY_PORT = 0x5f1;
const HANDLED_PORT = 0x5f2;
const EOI_DONE_PORT = 0x5f3;

/** A split-irqchip partition with the TS IOAPIC wired as the x86 machine wires it. */
function splitPartition(t: { teardown(fn: () => void): void }): { p: KvmPartition; ioapic: Ioapic; eois: number[] } {
  const p = new KvmPartition({ vcpus: 1, irqchip: 'userspace', ...X86_KVM_PAGES });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 4 * MiB });
  const bus = p.localApicBus!;
  const ioapic = new Ioapic({ id: IOAPIC.id, pins: IOAPIC_PINS, deliver: (m) => bus.signalMsi(m), onRoutesChanged: (r) => bus.setPinRoutes(r) });
  const eois: number[] = [];
  bus.onEoi((v) => {
    eois.push(v);
    ioapic.eoi(v);
  });
  p.mmio.register(IOAPIC.address, IOAPIC_SIZE, ioapic);
  return { p, ioapic, eois };
}

function counter(p: KvmPartition, port: number, onWrite?: (n: number) => void): { count: () => number; reach: (n: number) => Promise<void> } {
  let n = 0;
  const waiters: Array<[number, () => void]> = [];
  p.pio.register(port, 1, {
    name: `port-${port.toString(16)}`,
    read: () => 0,
    write: () => {
      n++;
      onWrite?.(n);
      for (const [k, r] of waiters) if (k === n) r();
    },
  });
  return { count: () => n, reach: (k) => (n >= k ? Promise.resolve() : new Promise((r) => waiters.push([k, r]))) };
}

function reached(p: KvmPartition, what: Promise<void>, label: string, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label}: not reached within ${timeoutMs} ms`)), timeoutMs);
    const onStop = (s: VcpuStop) => reject(new Error(`${label}: vcpu stopped first (${s.kind}: ${s.message})`));
    p.once('vcpu-stop', onStop);
    void what.then(() => {
      clearTimeout(timer);
      p.off('vcpu-stop', onStop);
      resolve();
    });
  });
}

kvm('the guest programs the TypeScript IOAPIC through MMIO and an edge on its pin arrives as an interrupt', async (t) => {
  const { p, ioapic, eois } = splitPartition(t);
  const vector = 0x41;
  const pin = 19;
  const ready = counter(p, READY_PORT);
  const handled = counter(p, HANDLED_PORT);
  const eoiDone = counter(p, EOI_DONE_PORT);
  setupInterruptGuest(p, { vector, ioapicPin: pin, readyPort: READY_PORT, handledPort: HANDLED_PORT, eoiDonePort: EOI_DONE_PORT });
  p.start();
  await reached(p, ready.reach(1), 'ready');
  const [lo, hi] = ioapic.snapshot().redirection[pin]!;
  t.is(lo, vector, 'the guest wrote vector 0x41, edge, unmasked, fixed, physical');
  t.is(hi, 0);
  t.deepEqual(ioapic.routes()[pin], { address: 0xfee00000, data: vector | 0x4000 });
  ioapic.setLevel(pin, true);
  ioapic.setLevel(pin, false);
  await reached(p, eoiDone.reach(1), 'handler');
  t.is(handled.count(), 1);
  t.deepEqual(eois, [], 'KVM does not exit for the EOI of an edge-triggered vector');
});

kvm('a level-triggered pin is delivered again after the EOI exit while its line stays asserted, and not after it is lowered', async (t) => {
  const { p, ioapic, eois } = splitPartition(t);
  const vector = 0x42;
  const pin = 10;
  const ready = counter(p, READY_PORT);
  // The device keeps the line up through the first handler and lowers it in the second.
  const handled = counter(p, HANDLED_PORT, (n) => n === 2 && ioapic.setLevel(pin, false));
  const eoiDone = counter(p, EOI_DONE_PORT);
  setupInterruptGuest(p, { vector, ioapicPin: pin, level: true, readyPort: READY_PORT, handledPort: HANDLED_PORT, eoiDonePort: EOI_DONE_PORT });
  p.start();
  await reached(p, ready.reach(1), 'ready');
  t.is(ioapic.snapshot().redirection[pin]![0], vector | REDIR_TRIGGER_LEVEL_BIT);
  ioapic.setLevel(pin, true);
  t.truthy(ioapic.snapshot().redirection[pin]![0] & REDIR_REMOTE_IRR_BIT, 'remote IRR set on delivery');
  await reached(p, eoiDone.reach(2), 'second handler');
  // Each handler's EOI reached the model before the guest's next instruction (the EOI exit is answered synchronously).
  t.deepEqual(eois, [vector, vector]);
  t.is(handled.count(), 2, 'delivered once more after the first EOI, not after the second');
  t.is(ioapic.snapshot().redirection[pin]![0] & REDIR_REMOTE_IRR_BIT, 0, 'remote IRR cleared by the last EOI');
});

kvm('the TypeScript PIT in mode 2 interrupts the guest through IOAPIC pin 2', async (t) => {
  const { p, ioapic } = splitPartition(t);
  const vector = 0x30;
  const pit = new Pit({ irq0: { set: (l) => ioapic.setLevel(PIT_ROUTE.gsi, l), pulse: () => (ioapic.setLevel(PIT_ROUTE.gsi, true), ioapic.setLevel(PIT_ROUTE.gsi, false)) } });
  t.teardown(() => pit.dispose());
  p.pio.register(PIT_PORT, PIT_PORT_COUNT, pit);
  const ready = counter(p, READY_PORT, () => {
    // Once the guest is ready: counter 0, LSB then MSB, mode 2, count 11932 (100 Hz), as Linux's clockevent programs it.
    pit.write(3, 1, 0x34);
    pit.write(0, 1, 11932 & 0xff);
    pit.write(0, 1, 11932 >> 8);
  });
  const eoiDone = counter(p, EOI_DONE_PORT);
  counter(p, HANDLED_PORT);
  setupInterruptGuest(p, { vector, ioapicPin: PIT_ROUTE.gsi, readyPort: READY_PORT, handledPort: HANDLED_PORT, eoiDonePort: EOI_DONE_PORT });
  t.false(pit.timerArmed, 'no host timer before the guest uses the PIT');
  p.start();
  await reached(p, ready.reach(1), 'ready');
  t.true(pit.timerArmed);
  await reached(p, eoiDone.reach(3), 'three timer interrupts');
  t.is(ioapic.snapshot().redirection[PIT_ROUTE.gsi]![0] & REDIR_MASK_BIT, 0);
  pit.write(3, 1, 0x30); // mode 0 without a count: the timer stops
  t.false(pit.timerArmed);
});

kvm('an IOAPIC access of a width the chip does not decode is dropped and counted, and the guest runs on', async (t) => {
  const { p, ioapic } = splitPartition(t);
  const done = counter(p, 0x5f0);
  const code = assemble(0x100000, [
    asm.movRbxImm64(BigInt(IOAPIC.address + 0x10)),
    [0x66, 0xc7, 0x03, 0x34, 0x12], // mov word [rbx], 0x1234: a 2-byte IOWIN write
    [0x48, 0x8b, 0x03], //             mov rax, [rbx]: an 8-byte IOWIN read
    asm.movDxImm16(0x5f0),
    asm.outDxAl(),
    asm.hlt(),
  ]);
  setupLongMode(p, code);
  p.start();
  await reached(p, done.reach(1), 'done');
  t.is(ioapic.missedWrites, 1);
  t.is(ioapic.missedReads, 1);
});

kvm("createVm({ irqchip: 'userspace' }) builds the x86 machine on the split irqchip and the tiny PVH kernel runs to its power-off", async (t) => {
  const vm = await createVm({ kernel: tinyPvhKernel('SPLIT-IRQCHIP-UP\n'), boot: 'pvh', memory: '64M', irqchip: 'userspace' });
  await vm.start();
  await vm.serial(1).expect(/SPLIT-IRQCHIP-UP/, { timeoutMs: 10_000 });
  const stop = await vm.waitForStop();
  t.is(stop.reason, 'poweroff', stop.message);
});
