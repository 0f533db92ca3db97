/**
 * Tier 1: IGVM loads applied to real vCPUs on this machine's /dev/kvm.
 * COCONUT-SVSM's NATIVE context (a 32-bit compatibility-mode code segment
 * under long mode) must be accepted by KVM and read back unchanged, and the
 * tiny relocatable image must run at the base it was moved to: its code, GDT
 * and data only exist there, mapped by the page tables the loader rebuilt.
 */
import test from 'ava';
import { KvmPartition } from '../../lib/hv/kvm-partition';
import { kvmSkipReason } from '../../lib/testing/kvm-test-helpers';
import { parseIgvm } from '../../lib/igvm/parse';
import { planIgvmLoad } from '../../lib/loader/igvm/plan';
import { loadIgvm } from '../../lib/loader/igvm/load';
import { createVm } from '../../lib/vm/vm';
import { RELOCATABLE_IGVM as L, relocatableTestIgvm } from '../../lib/testing/relocatable-igvm';
import { GiB, MiB } from '../../lib/util/bytes';
import { REAL_FILE, realBytes } from '../unit/igvm/helpers';
import { sum8 } from '../../lib/acpi/sdt';
import { findNode, getString, parseFdt } from '../../lib/fdt/reader';

const skip = kvmSkipReason();
const kvm = skip ? test.skip : test;
if (skip) console.log(`# SKIP kvm igvm tests: ${skip}`);

(REAL_FILE ? kvm : test.skip)('KVM takes COCONUT-SVSM’s NATIVE context on the boot cpu and reads it back unchanged', (t) => {
  const file = parseIgvm(realBytes());
  const plan = planIgvmLoad(file);
  const p = new KvmPartition({ vcpus: 1, irqchip: false });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 16 * MiB });
  p.addRam({ gpa: 512 * GiB, size: 16 * MiB });
  const r = loadIgvm(p.memory, file, plan, { vpCount: 1 });
  const v = p.vcpus[0]!;
  v.setSregs(r.bootCpu!.sregs!);
  v.setRegs(r.bootCpu!.regs!);
  const regs = v.getRegs();
  const sregs = v.getSregs();
  t.like(regs, { rip: 0x808000n, rsp: 0x805fd0n, rflags: 0x2n });
  t.like(sregs.cs, { selector: 0x8, base: 0n, limit: 0xffffffff, l: 0, db: 1, present: 1, s: 1, type: 0xb, g: 1 });
  t.like(sregs.ds, { selector: 0x10, limit: 0xffffffff, type: 0x3 });
  t.is(sregs.cr0, 0x80000031n);
  t.is(sregs.cr3, 0x10000n);
  t.is(sregs.cr4, 0x60n);
  t.is(sregs.efer & 0x500n, 0x500n, 'long mode enabled and active');
  // The page the context points at holds the loaded code.
  t.true(p.memory.read(0x808000, 16).some((b) => b !== 0));
});

for (const relocateTo of [undefined, GiB]) {
  const at = relocateTo ?? L.regionGpa;
  kvm(`the relocatable image runs at ${relocateTo === undefined ? 'its file address' : 'the 1 GiB base it was moved to'}`, async (t) => {
    const vm = await createVm({ igvm: relocatableTestIgvm('RELOCATED-OK\n', { powerOff: false }), memory: '128M', ...(relocateTo !== undefined ? { igvmRelocateTo: relocateTo } : {}) });
    t.teardown(() => vm.kill());
    await vm.start();
    await vm.serial(1).expect(/RELOCATED-OK/, { timeoutMs: 10_000 });
    await vm.pause();
    t.is(vm.memory.readU32(at + L.dataOffset), 1, 'the guest incremented the counter in its own data page');
    if (relocateTo !== undefined) t.true(vm.memory.read(L.regionGpa, 0x3000).every((b) => b === 0), 'nothing was loaded at the file address');
  });
}

kvm('the relocatable image powers off through the ACPI PM block after a relocated run', async (t) => {
  const vm = await createVm({ igvm: relocatableTestIgvm('BYE\n'), memory: '128M', igvmRelocateTo: 2 * GiB });
  await vm.start();
  const stop = await vm.waitForStop();
  t.is(stop.reason, 'poweroff', stop.message);
  t.regex(vm.serial(1).log(), /^BYE\n$/);
});

kvm('a relocation base the image does not allow fails createVm in one sentence naming the header', async (t) => {
  await t.throwsAsync(() => createVm({ igvm: relocatableTestIgvm(), memory: '128M', igvmRelocateTo: 0x30_0000 }), { code: 'ERR_IGVM_RELOCATION', message: /header 1 \(RELOCATABLE_REGION\): relocation base 0x300000 is not a multiple of relocation_alignment 0x200000/ });
});

kvm('an image that asks for every host parameter gets SRAT, SLIT, PPTT, MADT, a device tree, the VP count, command line and memory map', async (t) => {
  const P = L.params;
  const vm = await createVm({ igvm: relocatableTestIgvm('P\n', { powerOff: false, parameters: true }), memory: '128M', vcpus: 2, cmdline: 'hello=1', cmdlineDefaults: false });
  t.teardown(() => vm.kill());
  await vm.start();
  await vm.serial(1).expect(/P/, { timeoutMs: 10_000 });
  await vm.pause();
  const mem = vm.memory;
  const table = (gpa: number, signature: string) => {
    const len = mem.readU32(gpa + 4);
    const bytes = mem.read(gpa, len);
    t.is(new TextDecoder().decode(bytes.subarray(0, 4)), signature);
    t.is(sum8(bytes), 0, `${signature} checksum`);
    return bytes;
  };
  const srat = table(P.srat, 'SRAT');
  t.is(srat.length, 48 + 2 * 16 + 40, 'two processors, one memory range (the 128 MiB of RAM, which holds the region)');
  table(P.slit, 'SLIT');
  const pptt = table(P.pptt, 'PPTT');
  t.is((pptt.length - 36) / 20, 3, 'one package, two cores');
  table(P.madt, 'APIC');
  t.is(mem.readU32(P.scalars), 2, 'VP count');
  t.is(new TextDecoder().decode(mem.read(P.scalars + 0x100, 8)), 'hello=1\0');
  t.is(mem.readU64(P.scalars + 0x800 + 8), BigInt((128 * MiB) / 4096), 'memory map: 128 MiB from 0');
  const dt = parseFdt(mem.read(P.deviceTree, P.deviceTreeSize));
  t.is(findNode(dt.root, '/cpus')!.children.filter((c) => c.name.startsWith('cpu@')).length, 2);
  t.is(getString(findNode(dt.root, '/chosen')!, 'bootargs'), 'hello=1');
  t.truthy(findNode(dt.root, '/memory@0'));
  t.is(findNode(dt.root, '/openhcl/entropy')!.props.get('reg')!.length, 64);
  t.truthy(findNode(dt.root, '/pio-bus/serial@3f8'));
});
