/**
 * A tiny long-mode guest that computes a result from registers, guest
 * memory and port reads, for snapshot tests and benchmarks: each of its
 * `rounds` iterations reads a value from the device (an exit to JS), mixes
 * it into EAX and into a memory accumulator; at the end it writes the
 * accumulator to the result port and halts in the in-kernel LAPIC.
 * Interrupting it anywhere and continuing from a snapshot must give the
 * same result as an uninterrupted run.
 */
import type { IoDevice } from '../devices/types';
import type { KvmPartition } from '../hv/kvm-partition';
import { MiB } from '../util/bytes';
import { asm, assemble, setupLongMode } from './tiny-guests';

/** Its I/O ports: reads of FEED return the next value, a write to RESULT ends the run. */
export const COUNTING_PORTS = { feed: 0x510, result: 0x511 } as const;
/** Where the memory accumulator lives. */
export const COUNTING_ACCUMULATOR = 0x3000;
const CODE = 0x100000;

/** The guest's code: EAX = EAX*5 + ECX + in(FEED); [acc] += EAX; ECX times; out(RESULT, [acc]). */
export function countingGuestCode(rounds: number): number[] {
  return assemble(CODE, [
    asm.movRbxImm64(BigInt(COUNTING_ACCUMULATOR)),
    asm.movEdxImm32(COUNTING_PORTS.feed),
    asm.movEcxImm32(rounds),
    asm.movEaxImm32(1),
    (loop) =>
      assemble(loop, [
        [0x8d, 0x04, 0x80], // lea eax, [rax+rax*4]
        [0x01, 0xc8], // add eax, ecx
        [0x89, 0xc6], // mov esi, eax
        asm.inEaxDx(), // in eax, dx  (FEED)
        [0x01, 0xf0], // add eax, esi
        [0x01, 0x03], // add [rbx], eax
        asm.decEcx(),
        (here) => asm.jnz(here, loop),
      ]),
    asm.movEaxMemRbx(),
    [0xff, 0xc2], // inc edx  (RESULT)
    asm.outDxEax(),
    [0xfa], // cli
    (here) => [...asm.hlt(), ...asm.jmpShort(here + 1, here)], // hlt; jmp back to the hlt
  ]);
}

/** The device: FEED answers 7 * (reads so far); `onRead(n)` sees each read's number (1-based). */
export class CountingDevice implements IoDevice {
  readonly name = 'counting-feed';
  reads = 0;
  result: number | undefined;
  constructor(
    private readonly onResult: (value: number) => void,
    private readonly onRead: (n: number) => void = () => {},
  ) {}
  read(offset: number): number {
    if (offset !== 0) return 0xffffffff;
    this.reads++;
    this.onRead(this.reads);
    return (this.reads * 7) >>> 0;
  }
  write(offset: number, _size: number, value: number): void {
    if (offset !== 1) return;
    this.result = value >>> 0;
    this.onResult(this.result);
  }
}

/** RAM, code and CPU state of the guest on a fresh partition (with the in-kernel irqchip). */
export function loadCountingGuest(p: KvmPartition, rounds: number, ramSize = 2 * MiB): void {
  p.addRam({ gpa: 0, size: ramSize });
  writeCountingGuest(p, rounds);
}

/** Code and CPU state of the guest on a fresh partition that has its RAM at gpa 0 already (at least 2 MiB). */
export function writeCountingGuest(p: KvmPartition, rounds: number): void {
  setupLongMode(p, countingGuestCode(rounds), CODE);
}

/** Register `dev` on the guest's ports. */
export function attachCountingDevice(p: KvmPartition, dev: CountingDevice): void {
  p.pio.register(COUNTING_PORTS.feed, 2, dev);
}
