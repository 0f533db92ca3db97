import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { crc32Update } from '../../../lib/igvm/crc32';
import { buildIgvm, type IgvmBuildHeader } from '../../../lib/igvm/build';
import { encodeNativeVpContextX64, type IgvmNativeVpContextX64 } from '../../../lib/igvm/vp-context';

const REAL_FILE_NAME = 'coconut-svsm-qemu-snp-tdx-native-v2.igvm';
/** The checkout: this file runs as dist/test/unit/igvm/helpers.js. */
const REPO = path.resolve(__dirname, '..', '..', '..', '..');

/**
 * The COCONUT-SVSM IGVM fixture (not committed: 3.5 MiB, see docs/igvm.md):
 * `shared/testdata/igvm/` beside the checkout (`<repo>/../shared/...`), or
 * beside a folder above it (a worktree under `<root>/wt/NAME` finds
 * `<root>/shared/...`); NODEVMM_IGVM_TESTDATA names another folder.
 * Undefined when absent: the tests that need it then skip with
 * REAL_FILE_MISSING as the reason (and fail under CI).
 */
export const REAL_FILE: string | undefined = findRealFile();
export const REAL_FILE_MISSING: string | undefined = REAL_FILE
  ? undefined
  : `the COCONUT-SVSM IGVM fixture ${REAL_FILE_NAME} is not in ${path.join(path.dirname(REPO), 'shared', 'testdata', 'igvm')} (or NODEVMM_IGVM_TESTDATA)`;
export const realBytes = (): Uint8Array => new Uint8Array(readFileSync(REAL_FILE!));

function findRealFile(): string | undefined {
  if (process.env.NODEVMM_IGVM_TESTDATA) {
    const f = path.join(process.env.NODEVMM_IGVM_TESTDATA, REAL_FILE_NAME);
    return existsSync(f) ? f : undefined;
  }
  for (let dir = path.dirname(REPO); ; dir = path.dirname(dir)) {
    const f = path.join(dir, 'shared', 'testdata', 'igvm', REAL_FILE_NAME);
    if (existsSync(f)) return f;
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** Recompute the fixed-header checksum after a mutation, so later checks are reached. */
export function fixCrc(b: Uint8Array): Uint8Array {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const version = dv.getUint32(4, true);
  const fixedSize = version === 1 ? 24 : 32;
  const off = dv.getUint32(8, true);
  const size = dv.getUint32(12, true);
  const fixed = b.slice(0, fixedSize);
  fixed.fill(0, 20, 24);
  dv.setUint32(20, crc32Update(crc32Update(0, fixed), b.subarray(off, Math.min(b.length, off + size))), true);
  return b;
}

export const LONG_MODE_CONTEXT: IgvmNativeVpContextX64 = {
  rax: 0n, rcx: 0n, rdx: 0n, rbx: 0n, rsp: 0x9000n, rbp: 0n, rsi: 0x7000n, rdi: 0n,
  r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n, rip: 0x100000n, rflags: 2n,
  idtr_base: 0n, idtr_limit: 0, gdtr_base: 0x1000n, gdtr_limit: 0x1f,
  code_selector: 0x8, code_attributes: 0xa09b, code_base: 0, code_limit: 0xffffffff,
  data_selector: 0x10, data_attributes: 0xc093, data_base: 0, data_limit: 0xffffffff,
  gs_base: 0n, cr0: 0x80000011n, cr3: 0x4000n, cr4: 0x20n, efer: 0x500n,
};

/** A small NATIVE file exercising every directive the loader applies. */
export function smallNativeHeaders(context: IgvmNativeVpContextX64 = LONG_MODE_CONTEXT): IgvmBuildHeader[] {
  const page = (fill: number) => new Uint8Array(4096).fill(fill);
  return [
    { kind: 'SUPPORTED_PLATFORM', compatibility_mask: 0x1, platform_type: 0 },
    { kind: 'SUPPORTED_PLATFORM', compatibility_mask: 0x2, platform_type: 2 },
    { kind: 'GUEST_POLICY', policy: 0x30000n, compatibility_mask: 0x2 },
    { kind: 'REQUIRED_MEMORY', gpa: 0x200000, compatibility_mask: 0x3, number_of_bytes: 0x100000, flags: 0 },
    { kind: 'PARAMETER_AREA', number_of_bytes: 0x1000, parameter_area_index: 0 },
    { kind: 'VP_COUNT_PARAMETER', parameter_area_index: 0, byte_offset: 0 },
    { kind: 'ENVIRONMENT_INFO_PARAMETER', parameter_area_index: 0, byte_offset: 4 },
    { kind: 'COMMAND_LINE', parameter_area_index: 0, byte_offset: 0x100 },
    { kind: 'PARAMETER_AREA', number_of_bytes: 0x1000, parameter_area_index: 1 },
    { kind: 'MEMORY_MAP', parameter_area_index: 1, byte_offset: 0 },
    { kind: 'PAGE_DATA', gpa: 0x100000, compatibility_mask: 0x1, data: page(0x11) },
    { kind: 'PAGE_DATA', gpa: 0x101000, compatibility_mask: 0x3, data: page(0x11) },
    { kind: 'PAGE_DATA', gpa: 0x102000, compatibility_mask: 0x1 },
    { kind: 'PAGE_DATA', gpa: 0x103000, compatibility_mask: 0x2, data: page(0x22), data_type: 1 },
    { kind: 'PARAMETER_INSERT', gpa: 0x8000, compatibility_mask: 0x3, parameter_area_index: 0 },
    { kind: 'PARAMETER_INSERT', gpa: 0x9000, compatibility_mask: 0x3, parameter_area_index: 1 },
    { kind: 'VP_CONTEXT', compatibility_mask: 0x1, data: encodeNativeVpContextX64(context, 4096) },
  ];
}

export const smallNative = (context?: IgvmNativeVpContextX64): Uint8Array => buildIgvm({ headers: smallNativeHeaders(context) });

/** A VBS register list entry: vtl, Hyper-V register name, 16-byte value. */
export function vbsEntry(vtl: number, name: number, value: Uint8Array): Uint8Array {
  const e = new Uint8Array(32);
  const dv = new DataView(e.buffer);
  e[0] = vtl;
  dv.setUint32(1, name, true);
  e.set(value, 16);
  return e;
}
export function u64Value(v: bigint): Uint8Array {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}
export function segmentValue(base: bigint, limit: number, selector: number, attr: number): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, base, true);
  dv.setUint32(8, limit, true);
  dv.setUint16(12, selector, true);
  dv.setUint16(14, attr, true);
  return b;
}
export function vbsList(entries: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(4 + 32 * entries.length);
  new DataView(out.buffer).setUint32(0, entries.length, true);
  entries.forEach((e, i) => out.set(e, 4 + 32 * i));
  return out;
}
