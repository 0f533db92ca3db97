/**
 * The backend conformance suite: what every x86 hypervisor backend must do,
 * written only against the neutral interface (openHypervisor(), X86Partition,
 * its buses and vCPUs), so the same file runs against KVM here and against
 * Windows Hypervisor Platform on Windows (`npm test` runs this tier there;
 * docs/windows.md). Each test names the backend it ran on. Tiny hand-made
 * guests only (lib/testing/tiny-guests.ts): short, since this machine's
 * KVM-PVM emulates CPL0 code, and no vmcall (it never completes there).
 *
 * Covered: create, RAM both ways, registers, real- and long-mode guests,
 * port and MMIO exits in both directions with their widths, rep string
 * I/O, interrupts (an MSI through the local APIC bus with irqchip
 * 'userspace'; an IOAPIC pin through setIrqLine with irqchip 'kernel'),
 * pause/resume, a triple fault, and destroy while vCPUs wait in exits.
 */
import test from 'ava';
import { openHypervisor } from '../../lib/hv/hypervisor';
import type { VcpuStop, X86Irqchip, X86Partition } from '../../lib/hv/partition';
import type { IoDevice } from '../../lib/devices/types';
import { kvmSkipReason, settledProcessResources, waitForStop, X86_KVM_PAGES } from '../../lib/testing/kvm-test-helpers';
import { asm, assemble, setupInterruptGuest, setupLongMode, setupRealMode } from '../../lib/testing/tiny-guests';
import { MiB } from '../../lib/util/bytes';

const skip = kvmSkipReason();
const hvTest = skip ? test.serial.skip : test.serial;
if (skip) console.log(`# SKIP backend conformance: ${skip}`);
const hv = skip ? undefined : openHypervisor();
const backend = hv?.name ?? 'none';
const irqchips: X86Irqchip[] = hv ? hv.x86Irqchips() : [];

/** Ports the guests report through. */
const DONE_PORT = 0x5f0;
const READY_PORT = 0x5f1;
const HANDLED_PORT = 0x5f2;
const EOI_DONE_PORT = 0x5f3;

function partition(t: { teardown(fn: () => void): void }, opts: { vcpus?: number; irqchip?: X86Irqchip } = {}): X86Partition {
  const p = hv!.createX86Partition({ vcpus: opts.vcpus ?? 1, ...X86_KVM_PAGES, ...(opts.irqchip ? { irqchip: opts.irqchip } : {}) });
  t.teardown(() => p.destroy());
  p.addRam({ gpa: 0, size: 4 * MiB });
  return p;
}

/** Resolves with the value of the n-th write to `port` (1-based). */
function portWrites(p: X86Partition, port: number): { count: () => number; nth: (n: number) => Promise<number>; values: number[] } {
  const values: number[] = [];
  const waiters: Array<{ n: number; resolve: (v: number) => void }> = [];
  p.pio.register(port, 1, {
    name: `port-${port.toString(16)}`,
    read: () => 0,
    write: (_o, _s, v) => {
      values.push(v);
      for (const w of waiters.filter((w) => w.n === values.length)) w.resolve(v);
    },
  });
  return {
    values,
    count: () => values.length,
    nth: (n) => (values.length >= n ? Promise.resolve(values[n - 1]!) : new Promise((resolve) => waiters.push({ n, resolve }))),
  };
}

/** Resolve with the first of: the promise, a vCPU stop (rejects with its message), a deadline. */
function guestReaches<T>(p: X86Partition, what: Promise<T>, label: string, timeoutMs = 10_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label}: not reached within ${timeoutMs} ms`)), timeoutMs);
    const onStop = (s: VcpuStop) => reject(new Error(`${label}: vcpu stopped first (${s.kind}: ${s.message})`));
    p.once('vcpu-stop', onStop);
    what.then(
      (v) => {
        clearTimeout(timer);
        p.off('vcpu-stop', onStop);
        resolve(v);
      },
      reject,
    );
  });
}

/** A device that records every access and answers reads by size. */
class Recorder implements IoDevice {
  readonly log: string[] = [];
  constructor(
    readonly name: string,
    private readonly answer: (size: number) => number,
  ) {}
  read(offset: number, size: number): number {
    const v = this.answer(size);
    this.log.push(`r${size}@${offset}=${v.toString(16)}`);
    return v;
  }
  write(offset: number, size: number, value: number): void {
    this.log.push(`w${size}@${offset}=${value.toString(16)}`);
  }
}

/** Real-mode epilogue: mov dx, DONE_PORT; out dx, al; then hlt forever. */
const realModeDone = [0xba, DONE_PORT & 0xff, DONE_PORT >> 8, 0xee, 0xf4, 0xeb, 0xfd];
/** Long-mode epilogue: the same in 64-bit code. */
const longModeDone = [...asm.movDxImm16(DONE_PORT), ...asm.outDxAl(), 0xf4, 0xeb, 0xfd];

hvTest(`${backend}: a partition is created with its vcpus, its RAM is shared with the guest both ways, and destroy is idempotent`, async (t) => {
  const p = partition(t, { vcpus: 2 });
  t.is(p.vcpus.length, 2);
  t.deepEqual(
    p.vcpus.map((v) => v.index),
    [0, 1],
  );
  const done = portWrites(p, DONE_PORT);
  p.memory.writeU32(0x600, 0x11223344); // written by JS, read by the guest
  // mov eax, [0x600]; inc eax; mov [0x604], eax; done
  setupRealMode(p, [0x66, 0xa1, 0x00, 0x06, 0x66, 0x40, 0x66, 0xa3, 0x04, 0x06, ...realModeDone]);
  // vCPU 1 stays in its reset state and is never started by the guest: it waits in the hypervisor.
  p.start();
  await guestReaches(p, done.nth(1), 'done port');
  t.is(p.memory.readU32(0x604), 0x11223345, 'the guest read what JS wrote and JS reads what the guest wrote');
  p.destroy();
  t.true(p.destroyed);
  t.notThrows(() => p.destroy());
});

hvTest(`${backend}: general, segment and model-specific registers read back what was set`, (t) => {
  const p = partition(t);
  const v = p.vcpus[0]!;
  const names = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'] as const;
  const set: Record<string, bigint> = {};
  names.forEach((n, i) => (set[n] = 0x0102030405060708n * BigInt(i + 1)));
  v.setRegs({ ...set, rip: 0x100000n, rflags: 0x202n });
  const r = v.getRegs();
  for (const n of names) t.is(r[n], set[n]!, n);
  t.is(r.rip, 0x100000n);
  t.is(r.rflags, 0x202n);
  setupLongMode(p, [0xf4]);
  const s = v.getSregs();
  t.is(s.cr0 & 0x80000001n, 0x80000001n, 'paging and protection on');
  t.is(s.efer & 0x500n, 0x500n, 'long mode enabled and active');
  t.is(s.cs.selector, 0x08);
  t.is(s.cs.l, 1);
  // IA32_SYSENTER_CS and IA32_KERNEL_GS_BASE: plain read/write MSRs on every x86 hypervisor.
  v.setMsrs([
    { index: 0x174, value: 0x10n },
    { index: 0xc0000102, value: 0xffff888000001000n },
  ]);
  t.deepEqual(
    v.getMsrs([0x174, 0xc0000102]).map((m) => m.value),
    [0x10n, 0xffff888000001000n],
  );
});

hvTest(`${backend}: a real-mode guest's port writes reach the device with width and data, its reads take the device's answer, rep outsb/insb move every byte`, async (t) => {
  const p = partition(t);
  const dev = new Recorder('probe', (size) => (size === 1 ? 0x5a : size === 2 ? 0x1234 : 0xdeadbeef));
  p.pio.register(0x510, 4, dev);
  const done = portWrites(p, DONE_PORT);
  p.memory.write(0x800, Uint8Array.of(0xa1, 0xa2, 0xa3));
  setupRealMode(p, [
    0xba, 0x10, 0x05, //             mov dx, 0x510
    0xb0, 0x42, //                   mov al, 0x42
    0xee, //                         out dx, al
    0xb8, 0xef, 0xbe, //             mov ax, 0xbeef
    0xef, //                         out dx, ax
    0x66, 0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
    0x66, 0xef, //                   out dx, eax
    0xec, //                         in al, dx
    0xa2, 0x00, 0x07, //             mov [0x700], al
    0xed, //                         in ax, dx
    0xa3, 0x02, 0x07, //             mov [0x702], ax
    0x66, 0xed, //                   in eax, dx
    0x66, 0xa3, 0x04, 0x07, //       mov [0x704], eax
    0xbe, 0x00, 0x08, //             mov si, 0x800
    0xb9, 0x03, 0x00, //             mov cx, 3
    0xf3, 0x6e, //                   rep outsb
    0xbf, 0x10, 0x07, //             mov di, 0x710
    0xb9, 0x02, 0x00, //             mov cx, 2
    0xf3, 0x6c, //                   rep insb
    ...realModeDone,
  ]);
  p.start();
  await guestReaches(p, done.nth(1), 'done port');
  t.deepEqual(dev.log, ['w1@0=42', 'w2@0=beef', 'w4@0=12345678', 'r1@0=5a', 'r2@0=1234', 'r4@0=deadbeef', 'w1@0=a1', 'w1@0=a2', 'w1@0=a3', 'r1@0=5a', 'r1@0=5a']);
  t.is(p.memory.readU8(0x700), 0x5a);
  t.is(p.memory.readU16(0x702), 0x1234);
  t.is(p.memory.readU32(0x704), 0xdeadbeef);
  t.deepEqual([...p.memory.read(0x710, 2)], [0x5a, 0x5a]);
});

hvTest(`${backend}: a long-mode guest's MMIO writes and reads of 1, 2, 4 and 8 bytes keep their width and data both ways`, async (t) => {
  const p = partition(t);
  const answers: Record<number, number> = { 1: 0x7e, 2: 0xbeef, 4: 0x600dcafe, 8: 0x0011223344556677 };
  const dev = new Recorder('mmio-probe', (size) => answers[size]!);
  const base = 0xd0000000;
  p.mmio.register(base, 0x1000, dev);
  const done = portWrites(p, DONE_PORT);
  const code = assemble(0x100000, [
    asm.movRbxImm64(BigInt(base + 0x20)),
    [0x48, 0xb8, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00], // mov rax, 0x0011223344556677
    [0x88, 0x03], //        mov [rbx], al
    [0x66, 0x89, 0x03], //  mov [rbx], ax
    [0x89, 0x03], //        mov [rbx], eax
    [0x48, 0x89, 0x03], //  mov [rbx], rax
    [0x8a, 0x0b], //        mov cl, [rbx]
    [0x66, 0x8b, 0x13], //  mov dx, [rbx]
    [0x8b, 0x33], //        mov esi, [rbx]
    [0x48, 0x8b, 0x3b], //  mov rdi, [rbx]
    asm.movRbxImm64(0x2000n),
    [0x88, 0x0b], //        mov [rbx], cl
    [0x66, 0x89, 0x53, 0x02], // mov [rbx+2], dx
    [0x89, 0x73, 0x04], //  mov [rbx+4], esi
    [0x48, 0x89, 0x7b, 0x08], // mov [rbx+8], rdi
    longModeDone,
  ]);
  setupLongMode(p, code);
  p.start();
  await guestReaches(p, done.nth(1), 'done port');
  t.deepEqual(dev.log, ['w1@32=77', 'w2@32=6677', 'w4@32=44556677', 'w8@32=11223344556677', 'r1@32=7e', 'r2@32=beef', 'r4@32=600dcafe', 'r8@32=11223344556677']);
  t.is(p.memory.readU8(0x2000), 0x7e);
  t.is(p.memory.readU16(0x2002), 0xbeef);
  t.is(p.memory.readU32(0x2004), 0x600dcafe);
  t.is(p.memory.readU64(0x2008), 0x0011223344556677n);
});

for (const irqchip of ['kernel', 'userspace'] as const) {
  const supported = irqchips.includes(irqchip);
  const title = irqchip === 'userspace' ? 'an MSI sent through the local APIC bus (irqchip userspace)' : 'an IOAPIC pin raised through setIrqLine (irqchip kernel)';
  (supported ? hvTest : test.serial.skip)(`${backend}: ${title} runs the guest's handler, which EOIs and returns`, async (t) => {
    const p = partition(t, { irqchip });
    const vector = 0x41;
    const pin = 19; // an IOAPIC pin no ISA device or 8259 input shares
    const ready = portWrites(p, READY_PORT);
    const handled = portWrites(p, HANDLED_PORT);
    const eoiDone = portWrites(p, EOI_DONE_PORT);
    setupInterruptGuest(p, { vector, ...(irqchip === 'kernel' ? { ioapicPin: pin } : {}), readyPort: READY_PORT, handledPort: HANDLED_PORT, eoiDonePort: EOI_DONE_PORT });
    p.start();
    await guestReaches(p, ready.nth(1), 'ready');
    t.is(handled.count(), 0, 'no interrupt before one is sent');
    const send = () => {
      if (irqchip === 'userspace') p.localApicBus!.signalMsi({ address: 0xfee00000, data: vector });
      else {
        p.setIrqLine(pin, true);
        p.setIrqLine(pin, false);
      }
    };
    send();
    await guestReaches(p, eoiDone.nth(1), 'first handler');
    send();
    await guestReaches(p, eoiDone.nth(2), 'second handler');
    t.is(handled.count(), 2, 'one handler run per interrupt');
  });
}

hvTest(`${backend}: pause stops the vcpus at their next exit or instruction, resume lets them go on`, async (t) => {
  const p = partition(t);
  let n = 0;
  let wake: (() => void) | undefined;
  p.pio.register(0x520, 1, {
    name: 'tick',
    read: () => 0,
    write: () => {
      n++;
      wake?.();
    },
  });
  const ticks = (atLeast: number) => (n >= atLeast ? Promise.resolve() : new Promise<void>((r) => (wake = () => n >= atLeast && r())));
  // mov dx, 0x520; loop: out dx, al; jmp loop
  setupRealMode(p, [0xba, 0x20, 0x05, 0xee, 0xeb, 0xfd]);
  p.start();
  await guestReaches(p, ticks(5), 'first ticks');
  await p.pause();
  t.is(p.vcpus[0]!.state, 'paused');
  const a = n;
  // Let the event loop turn a few times: a paused vCPU makes no exit.
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  t.is(n, a, 'nothing runs while paused');
  const rip = p.vcpus[0]!.getRegs().rip;
  t.true(rip >= 0x1003n && rip <= 0x1005n, `rip ${rip.toString(16)} inside the loop`);
  p.resume();
  await guestReaches(p, ticks(a + 5), 'ticks after resume');
  t.true(n >= a + 5);
});

hvTest(`${backend}: a triple fault stops the vcpu with kind triple-fault`, async (t) => {
  const p = partition(t);
  // Long mode with an empty IDT: ud2 raises #UD, whose delivery faults (#GP), then #DF, then shutdown.
  setupLongMode(p, assemble(0x100000, [asm.movRbxImm64(0x800n), asm.lidtMemRbx(), [0x0f, 0x0b]]));
  p.memory.write(0x800, new Uint8Array(10));
  const stop = waitForStop(p);
  p.start();
  const s = await stop;
  t.is(s.kind, 'triple-fault', s.message);
});

hvTest(`${backend}: destroy while two vcpus wait in port and MMIO exits ends every thread and frees the partition`, async (t) => {
  // Settled: a destroyed KVM VM's fd may still be on its closer thread for ~10 ms (kvm-backend.ts).
  const before = process.platform === 'linux' ? await settledProcessResources() : undefined;
  const p = hv!.createX86Partition({ vcpus: 2, ...X86_KVM_PAGES });
  p.addRam({ gpa: 0, size: 4 * MiB });
  let exits = 0;
  let destroyedInHandler!: () => void;
  const destroyed = new Promise<void>((r) => (destroyedInHandler = r));
  const onExit = () => {
    // Both vCPUs keep exiting; on the 50th, one of them waits in its mailbox while this handler destroys the partition.
    if (++exits === 50) {
      p.destroy();
      destroyedInHandler();
    }
    return 0;
  };
  p.pio.register(0x530, 1, { name: 'busy-port', read: onExit, write: () => void onExit() });
  p.mmio.register(0xd0000000, 0x1000, { name: 'busy-mmio', read: onExit, write: () => void onExit() });
  // vCPU 0: in al, dx in a loop; vCPU 1: mov eax, [rbx] (MMIO) in a loop.
  setupLongMode(p, assemble(0x100000, [asm.movDxImm16(0x530), (here) => [...asm.inAlDx(), ...asm.jmpShort(here + 1, here)]]), 0x100000, 0);
  setupLongMode(p, assemble(0x101000, [asm.movRbxImm64(0xd0000000n), (here) => [...asm.movEaxMemRbx(), ...asm.jmpShort(here + 2, here)]]), 0x101000, 1, { rsp: 0x70000 });
  // An application processor waits for INIT/SIPI unless made runnable (KVM_MP_STATE_RUNNABLE is 0).
  p.vcpus[1]!.setMpState(0);
  p.start();
  await guestReaches(p, destroyed, 'destroy from a handler');
  t.true(p.destroyed);
  t.deepEqual(
    p.vcpus.map((v) => v.state),
    ['destroyed', 'destroyed'],
  );
  t.notThrows(() => p.setIrqLine(4, true), 'a destroyed partition ignores interrupt lines');
  if (before) {
    const after = await settledProcessResources();
    t.is(after.threads, before.threads, 'vcpu threads joined');
    t.is(after.fds, before.fds, 'vm and vcpu fds closed');
  }
});
