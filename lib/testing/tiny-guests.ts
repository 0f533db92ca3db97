/**
 * Tiny hand-assembled guests for tests and benchmarks that must run on any
 * /dev/kvm (including KVM-PVM, where CPL0 code is emulated: keep them short).
 * Each builder writes code and the minimum CPU state; instruction bytes are
 * spelled out with their mnemonics at the call sites.
 */
import type { KvmPartition } from '../hv/kvm-partition';
import { encodeGdt, buildIdentityPageTables } from '../arch/x86_64/cpu';
import { GDT_START, PML4_START } from '../arch/x86_64/layout';
import { segmentFromAttributes } from '../hv/x86-state';

/** Put `code` at `at` and point vCPU `vcpu` at it in real mode (CS base 0, DS base 0). */
export function setupRealMode(p: KvmPartition, code: number[], at = 0x1000, vcpu = 0): void {
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
export function setupLongMode(p: KvmPartition, code: number[], at = 0x100000, vcpu = 0, opts: { rsp?: number; extraMappings?: number[] } = {}): void {
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
};

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
