/**
 * lib/hv/whp-partition.ts and whp-interrupt.ts on any host: the MSI →
 * WHV_INTERRUPT_CONTROL decode, and the WHP partition's TypeScript glue
 * (options to the native constructor, vCPUs, RAM mapping, the EOI doorbell,
 * localApicBus, what WHP refuses) over a recording stand-in for the Windows
 * addon's WhpPartition, since no Windows hypervisor runs here. The native
 * side is compiled and loaded under Wine (test/unit/hv/wine-load.test.ts).
 */
import test from 'ava';
import { EXIT_KIND_EOI, MAILBOX_IDLE, MAILBOX_PENDING, VcpuSharedView } from '../../../lib/hv/exit-mailbox';
import { openHypervisor } from '../../../lib/hv/hypervisor';
import { nativeBinding, type NativeWhpBinding, type NativeWhpPartition, type NativeWhpVcpu, type WhpInterrupt, type WhpPartitionNativeOptions } from '../../../lib/hv/native';
import { describeStop } from '../../../lib/hv/stop-description';
import { WhpBackend, WhpPartition } from '../../../lib/hv/whp-partition';
import { whpInterruptFromMsi } from '../../../lib/hv/whp-interrupt';

test('an MSI message becomes the WHV_INTERRUPT_CONTROL it asks for', (t) => {
  // Fixed, physical, edge, vector 0x31 to APIC 2.
  t.deepEqual(whpInterruptFromMsi({ address: 0xfee02000, data: 0x0031 }), { type: 0, destinationMode: 0, triggerMode: 0, destination: 2, vector: 0x31 });
  // Lowest priority, logical, level, vector 0xec to logical 0x0f.
  t.deepEqual(whpInterruptFromMsi({ address: 0xfee0f004, data: 0x81ec }), { type: 1, destinationMode: 1, triggerMode: 1, destination: 0x0f, vector: 0xec });
  // NMI and INIT keep their WHP types (4, 5).
  t.is(whpInterruptFromMsi({ address: 0xfee00000, data: 0x0400 }).type, 4);
  t.is(whpInterruptFromMsi({ address: 0xfee00000, data: 0x0500 }).type, 5);
  t.throws(() => whpInterruptFromMsi({ address: 0xfec00000, data: 0x31 }), { code: 'ERR_INVALID_ARG', message: /msi address 0xfec00000 is outside/ });
  t.throws(() => whpInterruptFromMsi({ address: 0xfee00000, data: 0x0231 }), { code: 'ERR_INVALID_ARG', message: /delivery mode 2/ });
  t.throws(() => whpInterruptFromMsi({ address: 0xfee00000, data: 0x0731 }), { code: 'ERR_INVALID_ARG', message: /delivery mode 7/ });
});

test('openHypervisor picks WHP on win32 and says one sentence for a platform without a backend', (t) => {
  t.is(openHypervisor('win32').name, 'whp');
  t.deepEqual(openHypervisor('win32').x86Irqchips(), ['userspace'], 'WHP has no IOAPIC, PIC or PIT of its own');
  t.is(openHypervisor('linux').name, 'kvm');
  t.throws(() => openHypervisor('darwin'), { code: 'ERR_NO_HYPERVISOR', message: /no hypervisor backend for darwin \(KVM on Linux, Windows Hypervisor Platform on Windows\)/ });
});

/** The Windows addon's WhpPartition as far as TypeScript sees it, recording every call. */
function fakeWhp() {
  const linux = nativeBinding();
  const layout = linux.layout();
  const calls: string[] = [];
  const interrupts: WhpInterrupt[] = [];
  let notify: () => void = () => {};
  let opened: WhpPartitionNativeOptions | undefined;
  const shared: ArrayBuffer[] = [];
  const partition: NativeWhpPartition = {
    mapGpaRange: (gpa, ram, ro) => void calls.push(`map ${gpa.toString(16)} ${ram.size} ${ro}`),
    createVcpu: (i) => {
      calls.push(`vcpu ${i}`);
      const buf = new ArrayBuffer(layout.vcpuSharedSize);
      shared.push(buf);
      const v: Partial<NativeWhpVcpu> = { state: 'created', sharedBuffer: () => buf, start: () => void calls.push(`start ${i}`), resume: () => void calls.push(`resume ${i}`), pause: () => {}, stop: () => {}, completeExit: () => {} };
      return v as NativeWhpVcpu;
    },
    requestInterrupt: (irq) => void interrupts.push(irq),
    msrCounts: () => ({ readsIgnored: 0n, writesIgnored: 0n }),
    setRoutes: () => {},
    controlBuffer: () => new ArrayBuffer(layout.controlShadow + layout.controlShadowSize),
    setNotify: (fn) => void (notify = fn),
    takeEvents: () => [],
    ref: () => {},
    unref: () => {},
    destroy: () => void calls.push('destroy'),
  };
  const binding: NativeWhpBinding = {
    backend: 'whp',
    arch: 'x86_64',
    probe: () => ({ ok: true }),
    hostCpuid: () => ({ eax: 0, ebx: 0, ecx: 0, edx: 0 }),
    GuestRam: linux.GuestRam,
    WhpPartition: function (opts: WhpPartitionNativeOptions) {
      opened = opts;
      return partition;
    } as unknown as NativeWhpBinding['WhpPartition'],
    layout: () => layout,
  };
  return { binding, calls, interrupts, shared, ringEntries: layout.ringEntries, notify: () => notify(), opened: () => opened };
}

test('a WHP partition: processor count, xAPIC and MSR exits; vCPUs; RAM mapped from the pages JS sees', (t) => {
  const f = fakeWhp();
  const p = new WhpPartition({ vcpus: 2 }, f.binding);
  t.deepEqual(f.opened(), { processorCount: 2, apic: 1, msrExits: true });
  t.deepEqual(f.calls, ['vcpu 0', 'vcpu 1']);
  p.addRam({ gpa: 0, size: 2 << 20 });
  t.is(f.calls[2], `map 0 ${2 << 20} false`);
  p.memory.write(0x1000, Uint8Array.of(1, 2, 3));
  t.deepEqual([...p.memory.read(0x1000, 3)], [1, 2, 3]);
  p.destroy();
  t.true(f.calls.includes('destroy'));
});

test('a failed WHvRunVirtualProcessor is named with its HRESULT in the stop message', (t) => {
  const words = { name: 'whp', runCall: 'WHvRunVirtualProcessor', systemEvent: () => 'other' as const, runFailure: (c: bigint) => new WhpBackend({} as NativeWhpBinding, { controlBuffer: () => new ArrayBuffer(0) } as unknown as NativeWhpPartition).runFailure(c) };
  const stop = describeStop(0, { type: 'internal-error', rawReason: 0, subtype: 0xffff, detail: [0x80370102n] }, undefined, words);
  t.is(stop.message, 'vcpu 0: WHvRunVirtualProcessor failed with HRESULT 0x80370102');
});

test('WHP refuses what it has not: an in-kernel irqchip, irq lines without a userspace IOAPIC, eventfds, disk transfers', (t) => {
  const f = fakeWhp();
  t.throws(() => new WhpPartition({ vcpus: 1, irqchip: 'kernel' }, f.binding), { code: 'ERR_INVALID_ARG', message: /no in-kernel IOAPIC, PIC or PIT/ });
  t.throws(() => new WhpPartition({ vcpus: 0 }, f.binding), { code: 'ERR_INVALID_ARG' });
  const p = new WhpPartition({ vcpus: 1 }, f.binding);
  t.throws(() => p.setIrqLine(4, true), { code: 'ERR_NO_IRQCHIP', message: /irq 4 .* localApicBus/ });
  t.throws(() => p.notifyOps(), { code: 'ERR_UNSUPPORTED' });
  p.destroy();
});

test('localApicBus: an MSI becomes WHvRequestInterrupt; an EOI exit reaches onEoi with the vector', (t) => {
  const f = fakeWhp();
  const p = new WhpPartition({ vcpus: 1 }, f.binding);
  p.localApicBus.signalMsi({ address: 0xfee00000, data: 0x8041 });
  t.deepEqual(f.interrupts, [{ type: 0, destinationMode: 0, triggerMode: 1, destination: 0, vector: 0x41 }]);
  const eois: number[] = [];
  p.localApicBus.onEoi((v) => eois.push(v));
  p.start();
  // Play native/vcpu_thread.cc after whp_vcpu_run.cc decoded an ApicEoi exit: mailbox kind 3, address = vector.
  const sh = new VcpuSharedView(f.shared[0]!, f.ringEntries);
  sh.u32.set([EXIT_KIND_EOI, 1, 1, 0x41, 0, 0x41, 0, 0], 1);
  Atomics.store(sh.i32, 0, MAILBOX_PENDING);
  t.deepEqual(p.vcpus[0]!.pendingExit(), { kind: 'eoi', write: true, size: 1, address: 0x41 });
  f.notify();
  t.deepEqual(eois, [0x41]);
  t.is(Atomics.load(sh.i32, 0), MAILBOX_IDLE);
  p.destroy();
  t.throws(() => p.localApicBus.signalMsi({ address: 0xfee00000, data: 0x41 }), { code: 'ERR_VM_STATE' });
});
