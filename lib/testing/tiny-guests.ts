/**
 * Tiny hand-assembled guests for tests and benchmarks that must run on any
 * /dev/kvm (including KVM-PVM, where CPL0 code is emulated: keep them short).
 * Each builder writes code and the minimum CPU state; instruction bytes are
 * spelled out with their mnemonics at the call sites.
 */
import type { X86Partition } from '../hv/partition';
import { encodeGdt, buildIdentityPageTables, SELECTOR_CODE64 } from '../arch/x86_64/cpu';
import { GDT_START, IOAPIC_START, LAPIC_START, PML4_START } from '../arch/x86_64/layout';
import { segmentFromAttributes } from '../hv/x86-state';

/** Put `code` at `at` and point vCPU `vcpu` at it in real mode (CS base 0, DS base 0). */
export function setupRealMode(p: X86Partition, code: number[], at = 0x1000, vcpu = 0): void {
  p.memory.write(at, Uint8Array.from(code));
  const v = p.vcpus[vcpu]!;
  const s = v.getSregs();
  const flat = (seg: typeof s.cs) => ({ ...seg, base: 0n, selector: 0 });
  v.setSregs({ cs: flat(s.cs), ds: flat(s.ds), es: flat(s.es), ss: flat(s.ss) });
  v.setRegs({ rip: BigInt(at), rflags: 2n, rsp: 0x8000n });
}

/**
 * 64-bit long mode with the Linux Direct GDT and identity page tables for
 * 0-4 GiB (2 MiB pages), so tests exercise the same state the loader builds.
 * `extraMappings` adds 2 MiB identity pages above 4 GiB (e.g. 512 GiB).
 */
export function setupLongMode(p: X86Partition, code: number[], at = 0x100000, vcpu = 0, opts: { rsp?: number; extraMappings?: number[] } = {}): void {
  const mem = p.memory;
  mem.write(at, Uint8Array.from(code));
  mem.write(GDT_START, encodeGdt());
  mem.write(PML4_START, buildIdentityPageTables());
  let spare = 0xa000; // pages after the 4 GiB map's tables (0x4000-0x9fff)
  for (const gpa of opts.extraMappings ?? []) {
    const pml4i = Math.floor(gpa / 2 ** 39) % 512;
    const pdpti = Math.floor(gpa / 2 ** 30) % 512;
    const pdi = Math.floor(gpa / 2 ** 21) % 512;
    let pdpt = Number(mem.readU64(PML4_START + pml4i * 8) & ~0xfffn);
    if (!pdpt) {
      pdpt = spare;
      spare += 0x1000;
      mem.fill(pdpt, 0x1000);
      mem.writeU64(PML4_START + pml4i * 8, BigInt(pdpt) | 0x23n);
    }
    let pd = Number(mem.readU64(pdpt + pdpti * 8) & ~0xfffn);
    if (!pd) {
      pd = spare;
      spare += 0x1000;
      mem.fill(pd, 0x1000);
      mem.writeU64(pdpt + pdpti * 8, BigInt(pd) | 0x23n);
    }
    mem.writeU64(pd + pdi * 8, BigInt(Math.floor(gpa / 2 ** 21) * 2 ** 21) | 0xe3n);
  }
  const v = p.vcpus[vcpu]!;
  const code64 = segmentFromAttributes(0x08, 0n, 0xffffffff, 0xa09b);
  const data = segmentFromAttributes(0x10, 0n, 0xffffffff, 0xc093);
  v.setSregs({
    cs: code64, ds: data, es: data, fs: data, gs: data, ss: data,
    gdt: { base: BigInt(GDT_START), limit: 0x1f },
    cr0: 0x80000011n, cr3: BigInt(PML4_START), cr4: 0x20n, efer: 0xd00n | 0x1n,
  });
  v.setRegs({ rip: BigInt(at), rflags: 2n, rsp: BigInt(opts.rsp ?? 0x80000) });
}

/** x86 encodings the tests use, so each guest reads as assembly. */
export const asm = {
  movAlImm8: (v: number) => [0xb0, v & 0xff],
  movAxImm16: (v: number) => [0x66, 0xb8, v & 0xff, (v >> 8) & 0xff], // in 64-bit mode
  movEaxImm32: (v: number) => [0xb8, v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff],
  movDxImm16_16: (v: number) => [0xba, v & 0xff, (v >> 8) & 0xff], // real mode: mov dx, imm16
  movEdxImm32: (v: number) => [0xba, v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff],
  outImm8Al: (port: number) => [0xe6, port],
  inAlImm8: (port: number) => [0xe4, port],
  outDxAl: () => [0xee],
  outDxAx64: () => [0x66, 0xef],
  outDxEax: () => [0xef],
  inAlDx: () => [0xec],
  inEaxDx: () => [0xed],
  hlt: () => [0xf4],
  cpuid: () => [0x0f, 0xa2],
  /** mov rbx, imm64 */
  movRbxImm64: (v: bigint) => [0x48, 0xbb, ...u64(v)],
  /** mov [rbx], eax */
  movMemRbxEax: () => [0x89, 0x03],
  /** mov eax, [rbx] */
  movEaxMemRbx: () => [0x8b, 0x03],
  /** mov byte [rbx], al */
  movMemRbxAl: () => [0x88, 0x03],
  /** mov al, byte [rbx] */
  movAlMemRbx: () => [0x8a, 0x03],
  /** inc dword [rbx] */
  incMemRbx: () => [0xff, 0x03],
  /** jmp rel8 back to `target` from the end of this 2-byte instruction at `here` */
  jmpShort: (here: number, target: number) => [0xeb, (target - (here + 2)) & 0xff],
  /** dec ecx; jnz rel8 */
  decEcx: () => [0xff, 0xc9],
  jnz: (here: number, target: number) => [0x75, (target - (here + 2)) & 0xff],
  movEcxImm32: (v: number) => [0xb9, v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff],
  /** mov dx, imm16 (in 64-bit mode) */
  movDxImm16: (v: number) => [0x66, 0xba, v & 0xff, (v >> 8) & 0xff],
  /** lidt [rbx] */
  lidtMemRbx: () => [0x0f, 0x01, 0x1b],
  sti: () => [0xfb],
  iretq: () => [0x48, 0xcf],
};

/** Where interruptGuest keeps its IDT and IDTR image (free low RAM next to setupLongMode's tables). */
const IDT_START = 0xb000;
const IDTR_IMAGE_START = 0x800;

export interface InterruptGuestOptions {
  vector: number;
  /** Program this IOAPIC pin (at the layout's IOAPIC address) for `vector`, destination APIC 0; none: the host sends MSIs itself. */
  ioapicPin?: number;
  /** The pin is level-triggered (the host must see the EOI before lowering it). */
  level?: boolean;
  /** `out` here once the IDT, LAPIC and IOAPIC are set up, just before `sti; hlt`. */
  readyPort: number;
  /** `out` here first thing in the handler (al = 0). */
  handledPort: number;
  /** `out` here after the handler's EOI to the local APIC, just before iretq. */
  eoiDonePort: number;
}

/**
 * A 64-bit guest that takes interrupts: an IDT whose `vector` gate points at
 * a handler, the local APIC software-enabled (SVR 0x1FF), optionally one
 * IOAPIC redirection entry (unmasked, fixed delivery, physical destination
 * 0), then `out readyPort; sti; hlt` in a loop. Each interrupt runs the
 * handler: `out handledPort`, EOI to the local APIC, `out eoiDonePort`,
 * iretq. Every step the host must see is a port write.
 */
export function setupInterruptGuest(p: X86Partition, o: InterruptGuestOptions, vcpu = 0): void {
  const at = 0x100000;
  const store32 = (gpa: number, value: number) => [...asm.movRbxImm64(BigInt(gpa)), ...asm.movEaxImm32(value), ...asm.movMemRbxEax()];
  const ioapic: number[][] = [];
  if (o.ioapicPin !== undefined) {
    ioapic.push(store32(IOAPIC_START, 0x10 + 2 * o.ioapicPin)); // IOREGSEL: redirection entry, low dword
    ioapic.push(store32(IOAPIC_START + 0x10, o.vector | (o.level ? 1 << 15 : 0))); // IOWIN: vector, trigger, unmasked
    ioapic.push(store32(IOAPIC_START, 0x11 + 2 * o.ioapicPin)); // IOREGSEL: high dword
    ioapic.push(store32(IOAPIC_START + 0x10, 0)); // IOWIN: destination APIC 0
  }
  const main = assemble(at, [
    asm.movRbxImm64(BigInt(IDTR_IMAGE_START)),
    asm.lidtMemRbx(),
    store32(LAPIC_START + 0xf0, 0x1ff), // SVR: APIC software-enabled, spurious vector 0xff
    ...ioapic,
    asm.movDxImm16(o.readyPort),
    asm.outDxAl(),
    asm.sti(),
  ]);
  const loop = at + main.length;
  main.push(...assemble(loop, [asm.hlt(), (here) => asm.jmpShort(here, loop)]));
  const handler = at + main.length;
  main.push(
    ...assemble(handler, [
      asm.movDxImm16(o.handledPort),
      asm.outDxAl(),
      store32(LAPIC_START + 0xb0, 0), // EOI
      asm.movDxImm16(o.eoiDonePort),
      asm.outDxAl(),
      asm.iretq(),
    ]),
  );
  setupLongMode(p, main, at, vcpu);
  // 64-bit interrupt gate: offset 15:0, selector, IST 0, type 0x8E (present, DPL 0), offset 31:16, offset 63:32.
  const gate = new Uint8Array(16);
  const dv = new DataView(gate.buffer);
  dv.setUint16(0, handler & 0xffff, true);
  dv.setUint16(2, SELECTOR_CODE64, true);
  dv.setUint8(5, 0x8e);
  dv.setUint16(6, handler >>> 16, true);
  p.memory.fill(IDT_START, 0x1000);
  p.memory.write(IDT_START + o.vector * 16, gate);
  const idtr = new Uint8Array(10);
  new DataView(idtr.buffer).setUint16(0, 0xfff, true);
  new DataView(idtr.buffer).setBigUint64(2, BigInt(IDT_START), true);
  p.memory.write(IDTR_IMAGE_START, idtr);
}

function u64(v: bigint): number[] {
  const out: number[] = [];
  for (let i = 0n; i < 8n; i++) out.push(Number((v >> (8n * i)) & 0xffn));
  return out;
}

/** Assemble pieces; functions receive the offset they start at (for relative jumps). */
export function assemble(base: number, parts: Array<number[] | ((here: number) => number[])>): number[] {
  const out: number[] = [];
  for (const p of parts) out.push(...(typeof p === 'function' ? p(base + out.length) : p));
  return out;
}
