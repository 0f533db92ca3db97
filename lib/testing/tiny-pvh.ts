/**
 * A tiny PVH kernel: an ELF64 whose XEN_ELFNOTE_PHYS32_ENTRY points at
 * 32-bit code that prints a message on COM1 and powers off through the ACPI
 * PM block (SLP_EN with SLP_TYP 0 at PM1a_CNT). It exercises the whole
 * Linux Direct path (ELF loader, PVH entry, ACPI, UART, PM) on any KVM,
 * including KVM-PVM, and is the guest of the boot benchmarks.
 */
import { ByteWriter } from '../util/bytes';

const LOAD_ADDRESS = 0x100000;
const CODE_OFFSET = 0x1000;

/** The 32-bit guest program (see the mnemonics). */
const movDx = (port: number) => [0x66, 0xba, port & 0xff, port >> 8]; // mov dx, port
/** add al, 0x40; out COM1 THR: a register value as one printable character. */
const printAl = [0x04, 0x40, ...movDx(0x3f8), 0xee];

/**
 * Code for `prelude`: what Linux's 8250 driver does with IER, printed as it
 * goes (each value read + 0x40 on COM1): IER = THRI, then IIR must report
 * THRE ('B'), IER reads 2 ('B'); IER = 0xFF reads back its defined bits, 0x0F
 * ('O'); with LCR.DLAB set, offset 1 is the divisor latch's high byte, 0x12
 * written and read ('R'); DLAB cleared, IER reads 0x0F again ('O'). So "BBORO".
 */
export function uartProbeCode(): number[] {
  return [
    ...movDx(0x3f9), 0xb0, 0x02, 0xee, //          IER = THRI
    ...movDx(0x3fa), 0xec, 0x24, 0x0f, ...printAl, // IIR & 0x0f
    ...movDx(0x3f9), 0xec, ...printAl, //             IER
    ...movDx(0x3f9), 0xb0, 0xff, 0xee, 0xec, ...printAl, // IER = 0xff; IER
    ...movDx(0x3fb), 0xb0, 0x80, 0xee, //          LCR = DLAB
    ...movDx(0x3f9), 0xb0, 0x12, 0xee, 0xec, 0x88, 0xc3, // DLM = 0x12; bl = DLM (offset 0 is DLL now)
    ...movDx(0x3fb), 0xb0, 0x03, 0xee, //          LCR = 8N1
    0x88, 0xd8, ...printAl, //                     al = bl
    ...movDx(0x3f9), 0xec, ...printAl, //             IER
  ];
}

/**
 * Code for `prelude`: CMOS index and data ports as Linux's RTC driver uses
 * them. CMOS RAM 0x40 = 0x55; index 0x0D, read: register D's VRT bit, 0x80,
 * printed as (value >> 4) + 0x40 ('H'); index 0x0D then 0x40, read: 0x55 ('U',
 * printed as is). So "HU".
 */
export function cmosProbeCode(): number[] {
  const index = (i: number) => [0xb0, i, 0xe6, 0x70]; // mov al, i; out 0x70, al
  return [
    ...index(0x40), 0xb0, 0x55, 0xe6, 0x71, //     CMOS[0x40] = 0x55
    ...index(0x0d), 0xe4, 0x71, 0xc0, 0xe8, 0x04, ...printAl, // in al, 0x71; shr al, 4
    ...index(0x0d), ...index(0x40), 0xe4, 0x71, ...movDx(0x3f8), 0xee,
  ];
}

function program(message: string, base: number, options: { powerOff: boolean; exit: 'acpi' | 'isa-debug-exit'; waitForThre: boolean; prelude: readonly number[] }): number[] {
  const msgAt = base + 0x100;
  const imm32 = (v: number) => [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff];
  const code = options.waitForThre
    ? [
        0xbe, ...imm32(msgAt), //      mov esi, message
        0x66, 0xba, 0xfd, 0x03, // next: mov dx, 0x3fd      ; COM1 LSR
        0xec, //                 wait: in al, dx
        0xa8, 0x20, //                 test al, 0x20        ; THRE
        0x74, 0xfb, //                 jz wait
        0xac, //                       lodsb
        0x84, 0xc0, //                 test al, al
        0x74, 0x07, //                 jz done
        0x66, 0xba, 0xf8, 0x03, //     mov dx, 0x3f8        ; COM1 THR
        0xee, //                       out dx, al
        0xeb, 0xeb, //                 jmp next
      ]
    : [
        0x66, 0xba, 0xf8, 0x03, //     mov dx, 0x3f8        ; COM1 THR
        0xbe, ...imm32(msgAt), //      mov esi, message
        0xac, //               next:   lodsb
        0x84, 0xc0, //                 test al, al
        0x74, 0x03, //                 jz done
        0xee, //                       out dx, al
        0xeb, 0xf8, //                 jmp next
      ];
  if (options.powerOff && options.exit === 'isa-debug-exit') {
    code.push(
      0x66, 0xba, 0x01, 0x05, //  done:   mov dx, 0x501        ; QEMU isa-debug-exit
      0xb0, 0x00, //                      mov al, 0            ; QEMU exits with (0 << 1) | 1
      0xee, //                            out dx, al
    );
  } else if (options.powerOff) {
    code.push(
      0x66, 0xba, 0x04, 0x04, //  done:   mov dx, 0x404        ; PM1a_CNT
      0x66, 0xb8, 0x00, 0x20, //          mov ax, 0x2000       ; SLP_EN | SLP_TYP=0 (S5)
      0x66, 0xef, //                      out dx, ax
    );
  }
  code.push(0xf4, 0xeb, 0xfd); //          hlt; jmp $-1
  code.unshift(...options.prelude);
  if (code.length > 0x100) throw new Error(`tiny PVH program is ${code.length} bytes, more than the 256 before its message`);
  const out = new Array<number>(0x100 + message.length + 1).fill(0x90);
  out.splice(0, code.length, ...code);
  for (let i = 0; i < message.length; i++) out[0x100 + i] = message.charCodeAt(i) & 0xff;
  out[0x100 + message.length] = 0;
  return out;
}

/**
 * Build the ELF. `powerOff: false` leaves the guest halted (for pause/kill
 * tests); `exit: 'isa-debug-exit'` ends through QEMU's debug-exit port
 * instead of ACPI, for the QEMU baseline of the boot benchmark;
 * `waitForThre` reads LSR until THRE before each byte, as Linux's 8250
 * console does (the console benchmark, scripts/bench-boot.js console);
 * `prelude` is 32-bit code run first (uartProbeCode, cmosProbeCode).
 */
export function tinyPvhKernel(message = 'TINY-PVH-OK\n', options: { powerOff?: boolean; exit?: 'acpi' | 'isa-debug-exit'; waitForThre?: boolean; prelude?: readonly number[] } = {}): Uint8Array {
  const code = program(message, LOAD_ADDRESS, { powerOff: options.powerOff ?? true, exit: options.exit ?? 'acpi', waitForThre: options.waitForThre ?? false, prelude: options.prelude ?? [] });
  const noteOffset = 64 + 2 * 56;
  const note = new ByteWriter().u32(4).u32(4).u32(18).ascii('Xen\0').u32(LOAD_ADDRESS).finish();
  const w = new ByteWriter(CODE_OFFSET + code.length);
  // ELF header
  w.bytes(Uint8Array.of(0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0)).zeros(8); // magic, ELFCLASS64, LE, v1
  w.u16(2).u16(62).u32(1); //               e_type EXEC, e_machine X86_64, e_version
  w.u64(LOAD_ADDRESS).u64(64).u64(0); //    e_entry, e_phoff, e_shoff
  w.u32(0).u16(64).u16(56).u16(2).u16(64).u16(0).u16(0); // flags, ehsize, phentsize, phnum, shentsize, shnum, shstrndx
  // PT_LOAD: the code page at 1 MiB
  w.u32(1).u32(5).u64(CODE_OFFSET).u64(LOAD_ADDRESS).u64(LOAD_ADDRESS).u64(code.length).u64(code.length).u64(0x1000);
  // PT_NOTE: the PVH entry
  w.u32(4).u32(4).u64(noteOffset).u64(0).u64(0).u64(note.length).u64(note.length).u64(4);
  w.bytes(note);
  w.zeros(CODE_OFFSET - w.length);
  w.bytes(Uint8Array.from(code));
  return w.finish();
}
