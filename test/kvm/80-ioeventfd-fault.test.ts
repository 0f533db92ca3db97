/**
 * Tier 1: a device that throws on the ioeventfd path (a virtqueue kick KVM
 * completed in the kernel, delivered to JS by an fd watcher, outside any
 * exit dispatch) stops its VM with one `host-error`; the process and another
 * VM run on. Before, the exception escaped the watcher and ended the process.
 */
import test from 'ava';
import { KvmPartition } from '../../lib/hv/kvm-partition';
import type { VcpuStop } from '../../lib/hv/partition';
import { ioeventfdQueueNotifier } from '../../lib/vm/queue-notifier';
import { kvmSkipReason, waitForStop, X86_KVM_PAGES } from '../../lib/testing/kvm-test-helpers';
import { asm, assemble, setupLongMode } from '../../lib/testing/tiny-guests';
import { MiB } from '../../lib/util/bytes';

const skip = kvmSkipReason();
const kvm = skip ? test.skip : test;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

const SLOT_BASE = 0xd000_0000;
const QUEUE_NOTIFY = SLOT_BASE + 0x50;

kvm('a device that throws on an ioeventfd kick stops its vm with one host-error; another vm runs on', async (t) => {
  const faulty = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  const healthy = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  t.teardown(() => {
    faulty.destroy();
    healthy.destroy();
  });
  faulty.addRam({ gpa: 0, size: 4 * MiB });
  healthy.addRam({ gpa: 0, size: 4 * MiB });
  // faulty: mov rbx, QUEUE_NOTIFY; mov eax, 0 (queue 0); L: mov [rbx], eax; jmp L  (kicks forever, each completed in the kernel)
  setupLongMode(faulty, assemble(0x100000, [asm.movRbxImm64(BigInt(QUEUE_NOTIFY)), asm.movEaxImm32(0), (here) => [...asm.movMemRbxEax(), ...asm.jmpShort(here + 2, here)]]));
  // healthy: mov rbx, 0x3000; L: inc dword [rbx]; jmp L
  setupLongMode(healthy, assemble(0x100000, [asm.movRbxImm64(0x3000n), (here) => [...asm.incMemRbx(), ...asm.jmpShort(here + 2, here)]]));
  let kicks = 0;
  const undo = ioeventfdQueueNotifier(faulty.notifyOps(), SLOT_BASE, (e) => faulty.reportHostError(e))(0, () => {
    kicks++;
    throw new Error('virtqueue handler fault');
  });
  t.teardown(undo);
  const stops: VcpuStop[] = [];
  faulty.on('vcpu-stop', (s: VcpuStop) => stops.push(s));
  healthy.start();
  faulty.start();
  const stop = await waitForStop(faulty);
  t.is(stop.kind, 'host-error');
  t.regex(stop.message, /virtqueue handler fault/);
  t.true(kicks >= 1);
  const before = healthy.memory.readU32(0x3000);
  await new Promise((r) => setTimeout(r, 100));
  t.true(healthy.memory.readU32(0x3000) > before, 'the other vm still runs');
  t.is(healthy.destroyed, false);
  t.deepEqual(stops.map((s) => s.kind), ['host-error'], 'one stop event, however many kicks came');
});
