/**
 * Tier 1: partition snapshots on this machine's /dev/kvm. A tiny guest is
 * paused mid-computation (inside a port read it is waiting on), its
 * hypervisor state and RAM saved, and fresh partitions restored from that
 * (RAM mapped copy-on-write from the file) finish with the result of an
 * uninterrupted run, many times, without growing fds, threads or RSS.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KvmPartition } from '../../lib/hv/kvm-partition';
import { cpuIncompatibility } from '../../lib/snapshot';
import type { X86PartitionState } from '../../lib/hv/x86-state';
import { attachCountingDevice, COUNTING_ACCUMULATOR, CountingDevice, loadCountingGuest } from '../../lib/testing/counting-guest';
import { diffResourceDetail, kvmSkipReason, processResourceDetail, settledProcessResources, X86_KVM_PAGES } from '../../lib/testing/kvm-test-helpers';
import { MiB } from '../../lib/util/bytes';
import { tempDir } from '../temp-dir';

const skip = kvmSkipReason();
const kvm = skip ? test.serial.skip : test.serial;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

const ROUNDS = 60;
const PAUSE_AT = 23;
const RAM = 2 * MiB;

/** Run a fresh guest to its end; the result. */
async function uninterrupted(): Promise<number> {
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  try {
    loadCountingGuest(p, ROUNDS, RAM);
    const done = new Promise<number>((resolve) => attachCountingDevice(p, new CountingDevice(resolve)));
    p.start();
    return await done;
  } finally {
    p.destroy();
  }
}

interface Saved {
  state: X86PartitionState;
  ramFile: string;
  reads: number;
}

/** Run a fresh guest, pause it inside its PAUSE_AT-th port read, save it to `dir`. */
async function snapshotMidway(dir: string): Promise<Saved> {
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  try {
    loadCountingGuest(p, ROUNDS, RAM);
    let paused: Promise<void> | undefined;
    const reached = new Promise<void>((resolve) => {
      attachCountingDevice(
        p,
        new CountingDevice(
          () => {},
          (n) => {
            // Asked while the vCPU waits for this read's answer: it pauses with the IN unfinished in KVM.
            if (n === PAUSE_AT) {
              paused = p.pause();
              resolve();
            }
          },
        ),
      );
    });
    p.start();
    await reached;
    await paused;
    const state = p.saveState();
    const ramFile = path.join(dir, 'ram');
    const fd = fs.openSync(ramFile, 'w');
    try {
      p.writeRamTo([fd]);
    } finally {
      fs.closeSync(fd);
    }
    return { state, ramFile, reads: PAUSE_AT };
  } finally {
    p.destroy();
  }
}

/**
 * A fresh partition from `saved`, run to its end; the result and the
 * partition's final state. The RAM goes in as the partition is made (the
 * `ram` option, as restoreVm does), or with `late` by addRam afterwards.
 */
async function restoreAndFinish(saved: Saved, late = false): Promise<{ result: number; accumulator: number }> {
  const fd = fs.openSync(saved.ramFile, 'r');
  let p: KvmPartition;
  try {
    const ram = { gpa: 0, size: RAM, privateFile: fd };
    p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES, ...(late ? {} : { ram: [ram] }) });
    if (late) p.addRam(ram);
  } finally {
    fs.closeSync(fd);
  }
  try {
    p.restoreState(saved.state);
    // The device's own state (its read count) comes back as a device model's would.
    const done = new Promise<number>((resolve) => {
      const d = new CountingDevice(resolve);
      d.reads = saved.reads;
      attachCountingDevice(p, d);
    });
    p.start();
    const result = await done;
    return { result, accumulator: p.memory.readU32(COUNTING_ACCUMULATOR) };
  } finally {
    p.destroy();
  }
}

kvm('a guest paused inside a port read, saved and restored, ends with the result of an uninterrupted run', async (t) => {
  const expected = await uninterrupted();
  const saved = await snapshotMidway(tempDir(t));
  t.is(saved.state.vcpus.length, 1);
  const v = saved.state.vcpus[0]!;
  // The saved MSRs include the TSC (0x10) and kvmclock's system-time MSR (0x4b564d01).
  t.true(v.msrs.some((m) => m.index === 0x10));
  t.true(v.msrs.some((m) => m.index === 0x4b564d01));
  t.truthy(saved.state.vm.irqchip && saved.state.vm.pit && saved.state.vm.clockNs !== undefined);
  const { result } = await restoreAndFinish(saved);
  t.is(result, expected);
});

kvm('the ram added after the partition is made restores the same as ram given while it is made', async (t) => {
  const saved = await snapshotMidway(tempDir(t));
  t.deepEqual(await restoreAndFinish(saved, true), await restoreAndFinish(saved));
});

kvm('ram given while the partition is made is checked like addRam, and a refusal leaves no vm, fd or mapping behind', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'ram');
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, RAM);
  const fd = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(fd));
  // Warm up what a first partition allocates once per process.
  new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES, ram: [{ gpa: 0, size: RAM }] }).destroy();
  const before = await settledProcessResources();
  const detail = processResourceDetail();
  const make = (ram: Array<{ gpa: number; size: number; privateFile?: number }>) => () => new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES, ram });
  t.throws(make([{ gpa: 0, size: RAM, privateFile: fd }, { gpa: MiB, size: RAM }]), { code: 'ERR_GUEST_MEMORY_OVERLAP', message: /ram@0x100000 .* overlaps ram@0x0/ });
  t.throws(make([{ gpa: 0, size: RAM }, { gpa: 8 * MiB + 1, size: RAM }]), { code: 'ERR_GUEST_MEMORY_ALIGN' });
  t.throws(make([{ gpa: 0, size: 2 * RAM, privateFile: fd }]), { message: /fewer than the/ });
  const after = await settledProcessResources();
  const why = () => diffResourceDetail(detail, processResourceDetail());
  t.is(after.fds, before.fds, why());
  t.is(after.threads, before.threads, why());
  t.false(fs.readFileSync('/proc/self/maps', 'utf8').includes(file), 'the ram file is still mapped');
  // Both regions are there, in slot order, and addRam after them takes the next place.
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES, ram: [{ gpa: 0, size: RAM, privateFile: fd }, { gpa: 16 * MiB, size: RAM, name: 'second' }] });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 32 * MiB, size: RAM, name: 'third' });
  t.deepEqual(p.ramMappings().map((m) => m.gpa), [0, 16 * MiB, 32 * MiB]);
  t.deepEqual(p.memory.ranges().map((r) => r.name), ['ram@0x0', 'second', 'third']);
  t.throws(() => p.addRam({ gpa: 17 * MiB, size: RAM }), { code: 'ERR_GUEST_MEMORY_OVERLAP' });
});

kvm('guest ram gets its js views only where js touches it, so v8 does not count untouched ram as young external memory', (t) => {
  const external = () => process.memoryUsage().external;
  const before = external();
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES, ram: [{ gpa: 0, size: 256 * MiB }] });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 512 * MiB, size: 64 * MiB });
  t.true(p.memory.isRam(0, 256 * MiB) && p.memory.isRam(512 * MiB, 64 * MiB));
  // V8 counts an external ArrayBuffer's length while it lives (and forces scavenges while such
  // buffers are young): 320 MiB of views would show here; asking whether bytes are RAM makes none.
  t.true(external() - before < 8 * MiB, `external memory grew ${(external() - before) / MiB} MiB before any access`);
  p.memory.writeU32(100 * MiB, 0xfeedf00d);
  t.is(p.memory.readU32(100 * MiB), 0xfeedf00d);
  t.is(p.memory.readU32(520 * MiB), 0);
  const grown = external() - before;
  t.true(grown >= 16 * MiB && grown < 48 * MiB, `two touched pieces grew external memory by ${grown / MiB} MiB`);
});

kvm('restored partitions share the snapshot file copy-on-write: the guest writes never reach it', async (t) => {
  const saved = await snapshotMidway(tempDir(t));
  const before = fs.readFileSync(saved.ramFile);
  const first = await restoreAndFinish(saved);
  const second = await restoreAndFinish(saved);
  t.deepEqual(second, first);
  t.true(fs.readFileSync(saved.ramFile).equals(before));
  // The accumulator moved in the guests, not in the file.
  t.not(before.readUInt32LE(COUNTING_ACCUMULATOR), first.accumulator);
});

kvm('the ram file is sparse: a 64 MiB guest that touched a few pages writes a few pages', async (t) => {
  const dir = tempDir(t);
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 64 * MiB });
  p.memory.writeU32(0x1000, 0xdeadbeef);
  p.memory.writeU32(40 * MiB + 8, 0x12345678);
  const fd = fs.openSync(path.join(dir, 'ram'), 'w');
  const written = p.writeRamTo([fd]);
  fs.closeSync(fd);
  t.is(written, 2 * 4096);
  const st = fs.statSync(path.join(dir, 'ram'));
  t.is(st.size, 64 * MiB);
  t.true(st.blocks * 512 <= 64 * 1024, `${st.blocks * 512} bytes allocated`);
  const back = fs.readFileSync(path.join(dir, 'ram'));
  t.is(back.readUInt32LE(0x1000), 0xdeadbeef);
  t.is(back.readUInt32LE(40 * MiB + 8), 0x12345678);
});

kvm('saving refuses a running partition and restoring refuses one that ran', async (t) => {
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  t.teardown(() => p.destroy());
  loadCountingGuest(p, 1_000_000, RAM);
  attachCountingDevice(p, new CountingDevice(() => {}));
  const state = p.saveState(); // never started: allowed
  p.start();
  t.throws(() => p.saveState(), { code: 'ERR_VM_STATE' });
  await p.pause();
  t.notThrows(() => p.saveState());
  t.throws(() => p.restoreState(state), { code: 'ERR_VM_STATE' });
});

kvm('restoring refuses a state of another shape with one sentence', (t) => {
  const a = new KvmPartition({ vcpus: 2, ...X86_KVM_PAGES });
  t.teardown(() => a.destroy());
  const two = a.saveState();
  const b = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  t.teardown(() => b.destroy());
  t.throws(() => b.restoreState(two), { code: 'ERR_SNAPSHOT_RESTORE', message: /2 vcpus and this partition 1/ });
  const badXsave = { ...two, vcpus: [{ ...two.vcpus[0]!, xsave: new Uint8Array(12) }] };
  t.throws(() => b.restoreState(badXsave), { code: 'ERR_SNAPSHOT_RESTORE', message: /xsave area of vcpu 0/ });
});

kvm('restoring one snapshot many times grows no fds, threads or rss', async (t) => {
  const saved = await snapshotMidway(tempDir(t));
  const expected = (await restoreAndFinish(saved)).result;
  // Warm up allocator pools and JIT, then measure.
  for (let i = 0; i < 20; i++) await restoreAndFinish(saved);
  const before = await settledProcessResources();
  const detail = processResourceDetail();
  const n = Number(process.env.NODEVMM_SNAPSHOT_LOOPS ?? 300);
  for (let i = 0; i < n; i++) {
    const r = await restoreAndFinish(saved);
    if (r.result !== expected) return t.fail(`restore ${i} ended with ${r.result}, expected ${expected}`);
  }
  const after = await settledProcessResources();
  const why = () => diffResourceDetail(detail, processResourceDetail());
  t.is(after.fds, before.fds, why());
  t.is(after.threads, before.threads, why());
  t.true(after.rssKiB - before.rssKiB < 16 * 1024, `rss grew ${after.rssKiB - before.rssKiB} KiB over ${n} restores; ${why()}`);
});

kvm('a saved cpuid counts as compatible with a fresh vcpu of this host, and one with a feature it lacks does not', (t) => {
  const p = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  t.teardown(() => p.destroy());
  const state = p.saveState();
  const fresh = new KvmPartition({ vcpus: 1, ...X86_KVM_PAGES });
  t.teardown(() => fresh.destroy());
  const here = fresh.vcpus[0]!.getCpuid();
  t.is(cpuIncompatibility(state.vcpus[0]!.cpuid, here), undefined);
  // A guest that saw AVX-512F (CPUID.7:EBX[16]) where this host has none, or the reverse.
  const leaf7 = here.find((e) => e.function === 7 && e.index === 0)!;
  const other = here.map((e) => (e === leaf7 ? { ...e, ebx: (e.ebx ^ (1 << 16)) >>> 0 } : e));
  const [guest, host] = leaf7.ebx & (1 << 16) ? [here, other] : [other, here];
  t.regex(cpuIncompatibility(guest, host) ?? '', /cpuid leaf 0x7 ebx bit 16/);
  t.is(state.vcpus[0]!.vcpuEvents.length, 64);
});
