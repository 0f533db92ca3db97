/**
 * IGVM VP contexts for x64, as bytes: the NATIVE context
 * (`IgvmNativeVpContextX64`, 232 bytes at the start of a zero-padded page)
 * and the VSM "VBS" register list (Hyper-V TLFS register names). Turning
 * them into a vCPU state is the loader's job (lib/loader/igvm/vcpu-state.ts).
 * SNP VMSAs and AArch64 contexts are out of scope (the plan refuses those
 * platforms).
 */
import { FormatError } from '../errors';
import { ByteReader, hex } from '../util/bytes';
import { IGVM_NATIVE_VP_CONTEXT_X64_SIZE, VBS_VP_CONTEXT_HEADER_SIZE, VBS_VP_CONTEXT_REGISTER_SIZE } from './defs';

/** IgvmNativeVpContextX64, field names as in igvm_defs. */
export interface IgvmNativeVpContextX64 {
  rax: bigint; rcx: bigint; rdx: bigint; rbx: bigint; rsp: bigint; rbp: bigint; rsi: bigint; rdi: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint; r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
  idtr_base: bigint; idtr_limit: number; gdtr_limit: number; gdtr_base: bigint;
  code_selector: number; code_attributes: number; code_base: number; code_limit: number;
  data_selector: number; data_attributes: number; data_base: number; data_limit: number;
  gs_base: bigint; cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint;
}

export const GPR_ORDER = ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;

/** `where` names the header in errors, e.g. "igvm header 913 (VP_CONTEXT)". */
export function ctxError(where: string, field: string, message: string, offset?: number): FormatError {
  return new FormatError('ERR_IGVM_VP_CONTEXT', `${where}: ${field} ${message}`, { format: 'igvm', field, offset });
}

/** Decode the native context page at `fileOffset`; the bytes after the struct must be zero. */
export function decodeNativeVpContextX64(file: Uint8Array, fileOffset: number, pageSize: number, where: string): IgvmNativeVpContextX64 {
  const r = new ByteReader(file, 'igvm');
  r.need(fileOffset, pageSize, 'VP_CONTEXT data');
  const q = (off: number, f: string) => r.u64(fileOffset + off, f);
  const gprs = {} as Record<(typeof GPR_ORDER)[number], bigint>;
  GPR_ORDER.forEach((name, i) => (gprs[name] = q(i * 8, name)));
  for (let off = 154; off < 158; off++) if (file[fileOffset + off] !== 0) throw ctxError(where, 'reserved', `byte at context offset ${off} is not 0`, fileOffset + off);
  for (let off = IGVM_NATIVE_VP_CONTEXT_X64_SIZE; off < pageSize; off++) {
    if (file[fileOffset + off] !== 0) throw ctxError(where, 'padding', `byte at context offset ${hex(off)} is ${hex(file[fileOffset + off]!)}, the page after the 232-byte context must be zero`, fileOffset + off);
  }
  return {
    ...gprs,
    idtr_base: q(144, 'idtr_base'),
    idtr_limit: r.u16(fileOffset + 152, 'idtr_limit'),
    gdtr_limit: r.u16(fileOffset + 158, 'gdtr_limit'),
    gdtr_base: q(160, 'gdtr_base'),
    code_selector: r.u16(fileOffset + 168, 'code_selector'),
    code_attributes: r.u16(fileOffset + 170, 'code_attributes'),
    code_base: r.u32(fileOffset + 172, 'code_base'),
    code_limit: r.u32(fileOffset + 176, 'code_limit'),
    data_selector: r.u16(fileOffset + 180, 'data_selector'),
    data_attributes: r.u16(fileOffset + 182, 'data_attributes'),
    data_base: r.u32(fileOffset + 184, 'data_base'),
    data_limit: r.u32(fileOffset + 188, 'data_limit'),
    gs_base: q(192, 'gs_base'),
    cr0: q(200, 'cr0'),
    cr3: q(208, 'cr3'),
    cr4: q(216, 'cr4'),
    efer: q(224, 'efer'),
  };
}

/** Serialize a native context into a zero-padded page (the builder's side). */
export function encodeNativeVpContextX64(c: IgvmNativeVpContextX64, pageSize: number): Uint8Array {
  const page = new Uint8Array(pageSize);
  const dv = new DataView(page.buffer);
  GPR_ORDER.forEach((name, i) => dv.setBigUint64(i * 8, c[name], true));
  dv.setBigUint64(144, c.idtr_base, true);
  dv.setUint16(152, c.idtr_limit, true);
  dv.setUint16(158, c.gdtr_limit, true);
  dv.setBigUint64(160, c.gdtr_base, true);
  dv.setUint16(168, c.code_selector, true);
  dv.setUint16(170, c.code_attributes, true);
  dv.setUint32(172, c.code_base, true);
  dv.setUint32(176, c.code_limit, true);
  dv.setUint16(180, c.data_selector, true);
  dv.setUint16(182, c.data_attributes, true);
  dv.setUint32(184, c.data_base, true);
  dv.setUint32(188, c.data_limit, true);
  dv.setBigUint64(192, c.gs_base, true);
  dv.setBigUint64(200, c.cr0, true);
  dv.setBigUint64(208, c.cr3, true);
  dv.setBigUint64(216, c.cr4, true);
  dv.setBigUint64(224, c.efer, true);
  return page;
}

/** One entry of a VBS register list, value kept as its raw 16 bytes. */
export interface VbsRegister {
  vtl: number;
  name: number;
  value: Uint8Array;
}

/** Decode a VBS register list: u32 count, then 32-byte entries with the name at the unaligned offset 1. */
export function decodeVbsVpContext(file: Uint8Array, fileOffset: number, where: string): VbsRegister[] {
  const r = new ByteReader(file, 'igvm');
  const count = r.u32(fileOffset, 'register_count');
  if (count === 0) throw ctxError(where, 'register_count', 'is 0, a VBS context needs at least one register', fileOffset);
  r.need(fileOffset + VBS_VP_CONTEXT_HEADER_SIZE, count * VBS_VP_CONTEXT_REGISTER_SIZE, 'VBS register list');
  const out: VbsRegister[] = [];
  for (let i = 0; i < count; i++) {
    const at = fileOffset + VBS_VP_CONTEXT_HEADER_SIZE + i * VBS_VP_CONTEXT_REGISTER_SIZE;
    const vtl = r.u8(at, 'vtl');
    const name = r.u32(at + 1, 'register_name');
    for (let p = at + 5; p < at + 16; p++) if (file[p] !== 0) throw ctxError(where, `registers[${i}].mbz`, `byte at ${hex(p)} is not 0`, p);
    if (out.length && out[0]!.vtl !== vtl) throw ctxError(where, `registers[${i}].vtl`, `${vtl} differs from the list's vtl ${out[0]!.vtl}`, at);
    out.push({ vtl, name, value: file.slice(at + 16, at + 32) });
  }
  return out;
}
