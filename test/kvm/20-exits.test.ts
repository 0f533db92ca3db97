/**
 * Tier 1: exits. Port I/O (sizes kept), MMIO, the native fast paths
 * (unclaimed, constant, posted, shadowed), HLT and triple fault.
 */
import test from 'ava';
import { KvmPartition } from '../../lib/hv/kvm-partition';
import type { IoDevice } from '../../lib/devices/types';
import { kvmSkipReason, waitForStop } from '../../lib/testing/kvm-test-helpers';
import { asm, assemble, setupLongMode, setupRealMode } from '../../lib/testing/tiny-guests';
import { MiB } from '../../lib/util/bytes';

const skip = kvmSkipReason();
const kvm = skip ? test.skip : test;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

/** A device that records every access and answers reads from a script. */
class Recorder implements IoDevice {
  readonly name: string;
  readonly log: string[] = [];
  constructor(name: string, private readonly answer: (offset: number, size: number) => number = () => 0) {
    this.name = name;
  }
  read(offset: number, size: number): number {
    const v = this.answer(offset, size);
    this.log.push(`r${size}@${offset}=${v.toString(16)}`);
    return v;
  }
  write(offset: number, size: number, value: number): void {
    this.log.push(`w${size}@${offset}=${value.toString(16)}`);
  }
}

function partition(t: { teardown(fn: () => void): void }): KvmPartition {
  const p = new KvmPartition({ vcpus: 1, irqchip: false });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 4 * MiB });
  return p;
}

kvm('port out and in round-trip through a TypeScript device with the access size kept (real mode)', async (t) => {
  const p = partition(t);
  const dev = new Recorder('probe', (_o, size) => (size === 1 ? 0x5a : size === 2 ? 0x1234 : 0xdeadbeef));
  p.pio.register(0x510, 4, dev);
  // Real-mode code: mov dx,0x510; mov al,0x42; out dx,al; mov ax,0xbeef; out dx,ax;
  // in al,dx; mov [0x700],al; in ax,dx; mov [0x702],ax; hlt
  setupRealMode(p, [
    0xba, 0x10, 0x05, // mov dx, 0x510
    0xb0, 0x42, // mov al, 0x42
    0xee, // out dx, al
    0xb8, 0xef, 0xbe, // mov ax, 0xbeef
    0xef, // out dx, ax
    0x66, 0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
    0x66, 0xef, // out dx, eax
    0xec, // in al, dx
    0xa2, 0x00, 0x07, // mov [0x700], al
    0xed, // in ax, dx
    0xa3, 0x02, 0x07, // mov [0x702], ax
    0x66, 0xed, // in eax, dx
    0x66, 0xa3, 0x04, 0x07, // mov [0x704], eax
    0xf4, // hlt
  ]);
  const stop = waitForStop(p);
  p.start();
  t.is((await stop).kind, 'hlt');
  t.deepEqual(dev.log, ['w1@0=42', 'w2@0=beef', 'w4@0=12345678', 'r1@0=5a', 'r2@0=1234', 'r4@0=deadbeef']);
  t.is(p.memory.readU8(0x700), 0x5a);
  t.is(p.memory.readU16(0x702), 0x1234);
  t.is(p.memory.readU32(0x704), 0xdeadbeef);
});

kvm('completeExit only wakes the vCPU: it never answers an exit JS has not handled', async (t) => {
  // JS answers by moving the mailbox PENDING -> IDLE itself, then calls completeExit() if the vCPU
  // sleeps. On a busy host the vCPU may have woken, run on and published its next exit before that
  // call: the call must not take the new exit as answered (the vCPU would read a stale value and JS
  // would answer nothing). Here the call lands while the first read is still pending.
  const p = partition(t);
  const runner = (p as unknown as { backend: { runners: Array<{ completeExit(): void }> } }).backend.runners[0]!;
  let reads = 0;
  p.pio.register(0x520, 1, {
    name: 'answers',
    read: () => {
      reads++;
      if (reads === 1) runner.completeExit();
      return reads === 1 ? 0x11 : 0x22;
    },
    write: () => undefined,
  });
  setupRealMode(p, [
    0xba, 0x20, 0x05, // mov dx, 0x520
    0xec, // in al, dx
    0xa2, 0x00, 0x07, // mov [0x700], al
    0xec, // in al, dx
    0xa2, 0x01, 0x07, // mov [0x701], al
    0xf4, // hlt
  ]);
  const stop = waitForStop(p);
  p.start();
  t.is((await stop).kind, 'hlt');
  t.is(reads, 2);
  t.is(p.memory.readU8(0x700), 0x11, 'the first read got its own answer');
  t.is(p.memory.readU8(0x701), 0x22, 'the second read got its own answer');
});

kvm('MMIO reads and writes round-trip in 64-bit long mode', async (t) => {
  const p = partition(t);
  const dev = new Recorder('mmio-probe', () => 0x600dcafe);
  const base = 0xd0000000;
  p.mmio.register(base, 0x1000, dev);
  const code = assemble(0x100000, [
    asm.movRbxImm64(BigInt(base + 0x10)),
    asm.movEaxImm32(0xabcd1234),
    asm.movMemRbxEax(), // mov [rbx], eax  -> MMIO write, 4 bytes
    asm.movEaxMemRbx(), // mov eax, [rbx]  -> MMIO read, 4 bytes
    asm.movRbxImm64(0x2000n),
    asm.movMemRbxEax(), // store the value read into RAM
    asm.hlt(),
  ]);
  setupLongMode(p, code);
  const stop = waitForStop(p);
  p.start();
  t.is((await stop).kind, 'hlt');
  t.deepEqual(dev.log, ['w4@16=abcd1234', 'r4@16=600dcafe']);
  t.is(p.memory.readU32(0x2000), 0x600dcafe);
});

kvm('unclaimed ports read all-ones and writes are dropped and counted, without JS', async (t) => {
  const p = partition(t);
  // in al,0x99; mov [0x700],al; out 0x98,al; hlt
  setupRealMode(p, [0xe4, 0x99, 0xa2, 0x00, 0x07, 0xe6, 0x98, 0xf4]);
  const stop = waitForStop(p);
  p.start();
  await stop;
  t.is(p.memory.readU8(0x700), 0xff);
  const s = p.stats();
  t.is(s.unclaimedReads, 1n);
  t.is(s.unclaimedWrites, 1n);
  t.is(s.exitsToJs, 0n);
});

kvm('posted writes reach the device in order and shadowed reads are answered natively', async (t) => {
  const p = partition(t);
  const dev = new Recorder('uart-like', () => 0x77);
  const range = p.pio.register(0x3f8, 8, dev, { posted: [0], shadowed: [5] });
  range.shadow!.set(5, 0x60); // LSR: THRE | TEMT
  range.shadow!.enable(true, true);
  // mov dx,0x3f8; mov al,'A'; out dx,al; inc al; out dx,al; mov dx,0x3fd; in al,dx; mov [0x700],al;
  // mov dx,0x3f9; in al,dx; mov [0x701],al; hlt
  setupRealMode(p, [
    0xba, 0xf8, 0x03, 0xb0, 0x41, 0xee, 0xfe, 0xc0, 0xee,
    0xba, 0xfd, 0x03, 0xec, 0xa2, 0x00, 0x07,
    0xba, 0xf9, 0x03, 0xec, 0xa2, 0x01, 0x07, 0xf4,
  ]);
  const stop = waitForStop(p);
  p.start();
  await stop;
  t.is(p.memory.readU8(0x700), 0x60); // from the shadow, not the device
  t.is(p.memory.readU8(0x701), 0x77); // offset 1 is not shadowed: the device answered
  t.deepEqual(dev.log, ['w1@0=41', 'w1@0=42', 'r1@1=77']); // posted writes drained before the read
  const s = p.stats();
  t.is(s.exitsPosted, 2n);
  t.is(s.exitsToJs, 1n);
});

kvm('a mirrored posted write reaches its shadow byte before JS applies it; wider writes there are not posted', async (t) => {
  const p = partition(t);
  const dev = new Recorder('uart-like', () => 0x77);
  const range = p.pio.register(0x3f8, 8, dev, { posted: [0, 1], shadowed: [1], mirrored: [{ offset: 1, mask: 0x0f }] });
  range.shadow!.set(1, 0);
  range.shadow!.enable(true, true);
  // mov dx,0x3f9; mov al,0xff; out dx,al; in al,dx; mov [0x700],al; mov al,0x05; out dx,al;
  // in al,dx; mov [0x701],al; mov ax,0x0102; out dx,ax; in al,dx; mov [0x702],al; hlt
  setupRealMode(p, [
    0xba, 0xf9, 0x03, 0xb0, 0xff, 0xee, 0xec, 0xa2, 0x00, 0x07,
    0xb0, 0x05, 0xee, 0xec, 0xa2, 0x01, 0x07,
    0xb8, 0x02, 0x01, 0xef, 0xec, 0xa2, 0x02, 0x07, 0xf4,
  ]);
  const stop = waitForStop(p);
  p.start();
  await stop;
  t.is(p.memory.readU8(0x700), 0x0f); // the write, masked, from the shadow: the device never saw a read
  t.is(p.memory.readU8(0x701), 0x05);
  t.is(p.memory.readU8(0x702), 0x05); // the 2-byte write went to JS and left the shadow byte alone
  t.deepEqual(dev.log, ['w1@1=ff', 'w1@1=5', 'w2@1=102']);
  const s = p.stats();
  t.is(s.exitsPosted, 2n);
  t.is(s.exitsToJs, 1n);
});

kvm('an interrupt-status register pair is read and acknowledged natively, held bits stay through an ACK, the rest of the range goes to JS', async (t) => {
  const p = partition(t);
  const dev = new Recorder('virtio-like', () => 0x74726976);
  const base = 0xd0000000;
  const range = p.mmio.register(base, 0x1000, dev, { interruptStatus: { read: 0x60, ack: 0x64 } });
  range.shadow!.word.store(0x3);
  range.shadow!.held.store(0x1); // as for a vhost device: reported on every read, never ACKed
  const code = assemble(0x100000, [
    asm.movRbxImm64(BigInt(base + 0x60)),
    asm.movEaxMemRbx(), // InterruptStatus
    asm.movRbxImm64(0x2000n),
    asm.movMemRbxEax(),
    asm.movRbxImm64(BigInt(base + 0x64)),
    asm.movEaxImm32(0x1),
    asm.movMemRbxEax(), // InterruptACK of bit 0
    asm.movRbxImm64(BigInt(base + 0x60)),
    asm.movEaxMemRbx(),
    asm.movRbxImm64(0x2004n),
    asm.movMemRbxEax(),
    asm.movRbxImm64(BigInt(base)),
    asm.movEaxMemRbx(), // MagicValue: not native
    asm.hlt(),
  ]);
  setupLongMode(p, code);
  const stop = waitForStop(p);
  p.start();
  t.is((await stop).kind, 'hlt');
  t.is(p.memory.readU32(0x2000), 0x3);
  t.is(p.memory.readU32(0x2004), 0x3); // bit 0 ACKed in the word, still held
  t.is(range.shadow!.word.load(), 0x2);
  t.is(range.shadow!.held.load(), 0x1);
  t.deepEqual(dev.log, ['r4@0=74726976']);
  t.is(p.stats().exitsToJs, 1n);
});

kvm('disabling a shadow block sends its reads and writes to JS again', async (t) => {
  const p = partition(t);
  const dev = new Recorder('uart-like', () => 0x11);
  const range = p.pio.register(0x3f8, 8, dev, { posted: [0], shadowed: [5] });
  range.shadow!.set(5, 0x60);
  range.shadow!.enable(false, false);
  setupRealMode(p, [0xba, 0xf8, 0x03, 0xb0, 0x41, 0xee, 0xba, 0xfd, 0x03, 0xec, 0xa2, 0x00, 0x07, 0xf4]);
  const stop = waitForStop(p);
  p.start();
  await stop;
  t.is(p.memory.readU8(0x700), 0x11);
  t.deepEqual(dev.log, ['w1@0=41', 'r1@5=11']);
});

kvm('a triple fault stops the vcpu with reason triple-fault', async (t) => {
  const p = partition(t);
  // Long mode with an empty IDT (limit 0): ud2 raises #UD, whose delivery
  // faults (#GP), whose delivery faults again (#DF), whose delivery shuts down.
  const code = assemble(0x100000, [
    asm.movRbxImm64(0x800n),
    [0x0f, 0x01, 0x1b], // lidt [rbx]
    [0x0f, 0x0b], // ud2
    asm.hlt(),
  ]);
  setupLongMode(p, code);
  p.memory.write(0x800, new Uint8Array(10)); // IDTR image: limit 0, base 0
  const stop = waitForStop(p);
  p.start();
  const s = await stop;
  t.is(s.kind, 'triple-fault', s.message);
  t.regex(s.message, /triple-faulted/);
});

kvm('a device that throws stops the vm with a host-error reason instead of crashing', async (t) => {
  const p = partition(t);
  p.pio.register(0x10, 1, { name: 'broken', read: () => 0, write: () => { throw new Error('sink exploded'); } });
  setupRealMode(p, [0xe6, 0x10, 0xf4]);
  const stop = waitForStop(p);
  p.start();
  const s = await stop;
  t.is(s.kind, 'host-error');
  t.regex(s.message, /sink exploded/);
});

kvm('overlapping device ranges are refused', (t) => {
  const p = partition(t);
  p.pio.register(0x3f8, 8, new Recorder('com1'));
  t.throws(() => p.pio.register(0x3fc, 2, new Recorder('other')), { code: 'ERR_BUS_OVERLAP', message: /other overlaps com1/ });
  t.throws(() => p.pio.register(0xfffe, 4, new Recorder('wrap')), { code: 'ERR_BUS_RANGE' });
});

kvm('a guest that exits to a TypeScript device without pause does not starve the event loop', async (t) => {
  // A polling window far longer than the gap between exits: the dispatcher would
  // never go idle, so only its per-turn budget gives the event loop back.
  const p = new KvmPartition({ vcpus: 1, irqchip: false, dispatchSpinUs: 1000 });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 4 * MiB });
  let writes = 0;
  p.pio.register(0x10, 1, { name: 'hammer', read: () => 0, write: () => void writes++ });
  setupRealMode(p, [0xe6, 0x10, 0xeb, 0xfc]); // loop: out 0x10, al; jmp loop
  p.start();
  // JS checks the count on every event-loop turn; how far past 1000 the guest
  // got before JS noticed shows how long the dispatcher held the loop.
  while (writes < 1000) await new Promise((r) => setImmediate(r));
  const seen = writes;
  await p.pause();
  t.log(`JS noticed at ${seen} exits`);
  // With a 2 ms turn budget JS notices within a few hundred exits; a dispatcher
  // that polls for as long as exits keep coming would run on for tens of thousands.
  t.true(seen < 5000, `the event loop got control only after ${seen} exits`);
});
