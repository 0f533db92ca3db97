/**
 * Tier 1: the partition on this machine's /dev/kvm — creation, memory
 * slots and their argument checks, zero-copy guest memory.
 */
import test from 'ava';
import { KvmPartition } from '../../lib/hv/kvm-partition';
import { nativeBinding } from '../../lib/hv/native';
import { kvmSkipReason, waitForStop, X86_KVM_PAGES } from '../../lib/testing/kvm-test-helpers';
import { asm, assemble, setupLongMode, setupRealMode } from '../../lib/testing/tiny-guests';
import { GiB, MiB } from '../../lib/util/bytes';
import { directFileBackend } from '../../lib/devices/virtio/blk-backends';
import { tempImage } from '../temp-image';
import { readFileSync } from 'node:fs';

const skip = kvmSkipReason();
const kvm = skip ? test.skip : test;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

// Guests that end with HLT run without the in-kernel irqchip: with it, KVM
// handles HLT itself (the vCPU waits for an interrupt) and never exits.
kvm('a guest write is visible through the JS view and a JS write is visible to the guest', async (t) => {
  const p = new KvmPartition({ vcpus: 1, irqchip: false });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 1 * MiB });
  p.memory.writeU8(0x600, 0x5a); // JS -> guest
  // mov al,[0x600]; inc al; mov [0x601],al; hlt   (real mode)
  setupRealMode(p, [0xa0, 0x00, 0x06, 0xfe, 0xc0, 0xa2, 0x01, 0x06, ...asm.hlt()]);
  const stop = waitForStop(p);
  p.start();
  t.is((await stop).kind, 'hlt');
  t.is(p.memory.readU8(0x601), 0x5b); // guest -> JS, no copy in between
});

kvm('several regions, a read-only region and a region at 512 GiB all work', async (t) => {
  const p = new KvmPartition({ vcpus: 1, irqchip: false });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 2 * MiB, name: 'low' });
  p.addRam({ gpa: 0x200000, size: 2 * MiB, name: 'code', readonly: true });
  const high = 512 * GiB;
  p.addRam({ gpa: high, size: 2 * MiB, name: 'high' });
  p.memory.writeU32(high + 0x100, 0xcafef00d);
  // The code page is read-only to the guest; the loader writes it with load().
  const base = 0x200000;
  const code = assemble(base, [
    asm.movRbxImm64(BigInt(high + 0x100)),
    asm.movEaxMemRbx(), // eax = [512 GiB + 0x100]
    asm.movRbxImm64(0x1000n),
    asm.movMemRbxEax(), // [0x1000] = eax
    asm.hlt(),
  ]);
  setupLongMode(p, [], 0x300, 0, { extraMappings: [high] });
  p.memory.load(base, Uint8Array.from(code));
  p.vcpus[0]!.setRegs({ rip: BigInt(base) });
  t.throws(() => p.memory.write(base, Uint8Array.of(0)), { code: 'ERR_GUEST_MEMORY_READONLY' });
  const stop = waitForStop(p);
  p.start();
  const s = await stop;
  t.is(s.kind, 'hlt', s.message);
  t.is(p.memory.readU32(0x1000), 0xcafef00d);
});

kvm('an 8 GiB guest is addressable through several views', (t) => {
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 3 * GiB, name: 'below-gap' });
  p.addRam({ gpa: 4 * GiB, size: 5 * GiB, name: 'above-4g' });
  t.is(p.memory.totalSize, 8 * GiB);
  // Straddle a 1 GiB view boundary inside the high region.
  const at = 4 * GiB + 1 * GiB - 2;
  p.memory.writeU32(at, 0x11223344);
  t.is(p.memory.readU32(at), 0x11223344);
  p.memory.writeU8(9 * GiB - 1, 0xee);
  t.is(p.memory.readU8(9 * GiB - 1), 0xee);
});

kvm('bad memory arguments are refused with a clear error', (t) => {
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 1 * MiB, name: 'low' });
  t.throws(() => p.addRam({ gpa: 0x80000, size: 1 * MiB, name: 'dup' }), { code: 'ERR_GUEST_MEMORY_OVERLAP', message: /dup .* overlaps low/ });
  t.throws(() => p.addRam({ gpa: 0x200000, size: 1000 }), { code: 'ERR_GUEST_MEMORY_ALIGN' });
  t.throws(() => p.addRam({ gpa: 0x200800, size: 4096 }), { code: 'ERR_GUEST_MEMORY_ALIGN' });
  t.throws(() => p.addRam({ gpa: 2 ** 52, size: 4096 }), { code: 'ERR_GUEST_MEMORY_RANGE' });
  t.throws(() => p.memory.read(0x100000, 1), { code: 'ERR_GUEST_MEMORY_RANGE', message: /0x100000 is outside guest ram/ });
  t.throws(() => new KvmPartition({ vcpus: 0 }), { code: 'ERR_INVALID_ARG' });
  // The hypervisor picks no guest addresses of its own: the machine's layout names KVM's private pages.
  t.throws(() => new KvmPartition({ vcpus: 1 }), { code: 'ERR_INVALID_ARG', message: /needs tssAddress and identityMapAddress/ });
});

kvm('destroying a vm while JS still holds a view does not crash', (t) => {
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  p.addRam({ gpa: 0, size: 1 * MiB });
  const view = p.memory.view(0, 4096)!;
  view[0] = 1;
  p.destroy();
  t.is(view.length, 0); // detached: reads give undefined, writes are no-ops
  t.is(view[0] as number | undefined, undefined);
  t.throws(() => p.memory.readU8(0), { code: 'ERR_GUEST_MEMORY_RELEASED' });
});

kvm('fileIo moves file bytes to and from guest pages, across two regions, and refuses reads into read-only memory', async (t) => {
  const { file, fd } = tempImage(t, new Uint8Array(16384).map((_, i) => i & 0xff));
  const p = new KvmPartition({ vcpus: 1, irqchip: false });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 1 * MiB });
  p.addRam({ gpa: 1 * MiB, size: 1 * MiB });
  p.addRam({ gpa: 4 * MiB, size: 64 * 1024, readonly: true });
  // 8 KiB straddling the boundary between the first two regions.
  t.is(await p.fileIo('read', fd, 100, [{ gpa: 1 * MiB - 4096, length: 8192 }]), 8192);
  t.is(p.memory.readU8(1 * MiB - 4096), 100);
  t.is(p.memory.readU8(1 * MiB + 4095), (100 + 8191) & 0xff);
  p.memory.write(0x2000, new Uint8Array([0xaa, 0xbb]));
  t.is(await p.fileIo('write', fd, 0, [{ gpa: 0x2000, length: 2 }]), 2);
  await p.fileSync(fd);
  t.deepEqual([...readFileSync(file).subarray(0, 3)], [0xaa, 0xbb, 2]);
  t.throws(() => p.fileIo('read', fd, 0, [{ gpa: 4 * MiB, length: 512 }]), { code: 'ERR_GUEST_MEMORY_READONLY' });
  t.throws(() => p.fileIo('read', fd, 0, [{ gpa: 3 * MiB, length: 512 }]), { code: 'ERR_GUEST_MEMORY_RANGE' });
  // Writing out of read-only memory is fine (it is a source).
  t.is(await p.fileIo('write', fd, 8192, [{ gpa: 4 * MiB, length: 512 }]), 512);
});

kvm("fileIo 'inline' and 'nowait' move the same bytes as the pool, straddling regions, and fail the same way", async (t) => {
  const { fd } = tempImage(t, new Uint8Array(65536).map((_, i) => (i * 7) & 0xff));
  const p = new KvmPartition({ vcpus: 1, irqchip: false });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 1 * MiB });
  p.addRam({ gpa: 1 * MiB, size: 1 * MiB });
  const across = [{ gpa: 1 * MiB - 8192, length: 4096 }, { gpa: 1 * MiB - 4096, length: 8192 }, { gpa: 0x1_0000, length: 512 }];
  const expected = new Uint8Array(12800).map((_, i) => ((i + 1000) * 7) & 0xff);
  for (const how of ['pool', 'inline', 'nowait'] as const) {
    p.memory.fill(0, 2 * MiB);
    t.is(await p.fileIo('read', fd, 1000, across, how), 12800, how);
    const got = new Uint8Array([...p.memory.read(1 * MiB - 8192, 12288), ...p.memory.read(0x1_0000, 512)]);
    t.deepEqual(got, expected, how);
    // Written back in the second half of the file, then read from there through the pool.
    t.is(await p.fileIo('write', fd, 32768, across, how), 12800, how);
    p.memory.fill(0, 2 * MiB);
    await p.fileIo('read', fd, 32768, across);
    t.deepEqual(new Uint8Array([...p.memory.read(1 * MiB - 8192, 12288), ...p.memory.read(0x1_0000, 512)]), expected, how);
    // A bad fd rejects (it does not throw) whichever thread runs the transfer.
    await t.throwsAsync(p.fileIo('read', 1 << 20, 0, across, how), { code: 'EBADF' }, how);
  }
});

kvm('directFileBackend transfers at once for an image in memory, and never for a write to an image on disk', async (t) => {
  const bytes = new Uint8Array(8192).map((_, i) => (i * 11) & 0xff);
  const { fd } = tempImage(t, bytes);
  const p = new KvmPartition({ vcpus: 1, irqchip: false });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 1 * MiB });
  const inMemory = directFileBackend(fd, p, 'memory');
  t.true(inMemory.transferNow!('read', [{ gpa: 0x1000, length: 4096 }], 4096));
  t.deepEqual(p.memory.read(0x1000, 4096), bytes.subarray(4096));
  p.memory.write(0x3000, new Uint8Array(512).fill(0x77));
  t.true(inMemory.transferNow!('write', [{ gpa: 0x3000, length: 512 }], 0));
  t.deepEqual(new Uint8Array(readFileSync(`/proc/self/fd/${fd}`).subarray(0, 512)), new Uint8Array(512).fill(0x77));
  const onDisk = directFileBackend(fd, p, 'disk');
  t.false(onDisk.transferNow!('write', [{ gpa: 0x3000, length: 512 }], 0), 'a buffered write may wait for writeback: pool');
  // A read is tried with RWF_NOWAIT: done where the filesystem supports it, else left to the pool.
  p.memory.fill(0x1000, 4096);
  if (onDisk.transferNow!('read', [{ gpa: 0x1000, length: 4096 }], 4096)) t.deepEqual(p.memory.read(0x1000, 4096), bytes.subarray(4096));
  // More than 4 MiB always goes to the pool, even in memory.
  t.false(inMemory.transferNow!('read', [{ gpa: 0, length: 1 * MiB }, { gpa: 0, length: 1 * MiB }, { gpa: 0, length: 1 * MiB }, { gpa: 0, length: 1 * MiB }, { gpa: 0, length: 4096 }], 0));
});

kvm('GSI routing takes irqchip and MSI entries, refuses other types, and KVM_SIGNAL_MSI reaches the in-kernel LAPIC', (t) => {
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  t.teardown(() => p.destroy());
  const vm = p.nativeVm;
  // The default ISA routes (IOAPIC pins 0-23) plus one MSI route, as a VMM with an MSI-capable device sets it.
  const routes = Array.from({ length: 24 }, (_, pin) => ({ gsi: pin, type: 'irqchip' as const, irqchip: 2, pin }));
  t.notThrows(() => vm.setGsiRouting([...routes, { gsi: 24, type: 'msi', addressLo: 0xfee0_0000, addressHi: 0, data: 0x31 }]));
  t.throws(() => vm.setGsiRouting([{ gsi: 25, type: 'bogus' } as never]), { message: /'irqchip' or 'msi'/ });
  t.throws(() => vm.setGsiRouting({} as never), { message: /must be an array/ });
  // To APIC 0, vector 0x30, fixed delivery: KVM answers 1 (delivered) or 0 (the guest's LAPIC is
  // software-disabled after reset and drops it); never an error.
  const r = vm.signalMsi(0xfee0_0000, 0x30);
  t.true(r === 0 || r === 1, String(r));
});

kvm("RAM's memory slots are set on the thread pool: ramReady resolves, then the guest runs in it", async (t) => {
  const p = new KvmPartition({ vcpus: 1, irqchip: false });
  try {
    p.addRam({ gpa: 0, size: 2 * MiB });
    await p.ramReady();
    p.memory.write(0x1000, Uint8Array.of(0xc6, 0x06, 0x00, 0x20, 0x5a, 0xf4)); // mov byte [0x2000], 0x5a; hlt
    const v = p.vcpus[0]!;
    const s = v.getSregs();
    v.setSregs({ cs: { ...s.cs, base: 0n, selector: 0 }, ds: { ...s.ds, base: 0n, selector: 0 } });
    v.setRegs({ rip: 0x1000n });
    const stop = waitForStop(p);
    p.start();
    t.is((await stop).kind, 'hlt');
    t.is(p.memory.readU8(0x2000), 0x5a);
  } finally {
    p.destroy();
  }
});

kvm('a memory slot that fails on the thread pool rejects its promise and the vCPU start names the slot', async (t) => {
  const p = new KvmPartition({ vcpus: 1, irqchip: false });
  const b = nativeBinding();
  const ram = new b.GuestRam(2 * MiB);
  try {
    // Straight to the binding (RamSlots refuses overlaps before KVM sees them): slot 1 overlaps slot 0.
    const first = p.nativeVm.setUserMemoryRegion(0, 0, ram, 0, 2 * MiB, { background: true });
    const second = p.nativeVm.setUserMemoryRegion(1, 1 * MiB, ram, 0, 1 * MiB, { background: true });
    t.true(first instanceof Promise && second instanceof Promise);
    await first;
    await t.throwsAsync(second as Promise<void>, { message: /KVM_SET_USER_MEMORY_REGION/ });
    t.throws(() => p.start(), { message: 'memory slot 1 could not be set (KVM_SET_USER_MEMORY_REGION: File exists)' });
  } finally {
    p.destroy();
    ram.release();
  }
});
