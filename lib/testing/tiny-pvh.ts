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
function program(message: string, base: number, options: { powerOff: boolean; exit: 'acpi' | 'isa-debug-exit'; waitForThre: boolean }): number[] {
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
 * console does (the console benchmark, scripts/bench-boot.js console).
 */
export function tinyPvhKernel(message = 'TINY-PVH-OK\n', options: { powerOff?: boolean; exit?: 'acpi' | 'isa-debug-exit'; waitForThre?: boolean } = {}): Uint8Array {
  const code = program(message, LOAD_ADDRESS, { powerOff: options.powerOff ?? true, exit: options.exit ?? 'acpi', waitForThre: options.waitForThre ?? false });
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
