/**
 * A tiny relocatable NATIVE IGVM image for tests: 64-bit code, its GDT and a
 * data page inside a 2 MiB RELOCATABLE_REGION (flags: move RIP and GDTR),
 * identity page tables in a PAGE_TABLE_RELOCATION_REGION with spare pages.
 * The code reloads DS (so the CPU reads the GDT through the page tables),
 * increments a counter in its data page through a RIP-relative address,
 * prints a message on COM1 and powers off through the ACPI PM block (or
 * halts, so a test can read its memory). It can
 * only run where the loader moved the code, the GDT and their mappings
 * together: the old addresses are left unmapped.
 */
import { buildIgvm, type IgvmBuildHeader } from '../igvm/build';
import type { IgvmParameterTypeName } from '../igvm/defs';
import { encodeNativeVpContextX64 } from '../igvm/vp-context';
import { encodeGdt } from '../arch/x86_64/cpu';
import { RELOCATION_FLAG_APPLY_GDTR, RELOCATION_FLAG_APPLY_RIP } from '../igvm/defs';

export const RELOCATABLE_IGVM = {
  /** The region as the file places it. */
  regionGpa: 0x20_0000,
  regionSize: 0x20_0000,
  alignment: 0x20_0000,
  maxGpa: 0x1_0000_0000,
  codeOffset: 0,
  gdtOffset: 0x1000,
  /** The counter the guest increments (a u32 at this offset in the region). */
  dataOffset: 0x2000,
  pageTablesGpa: 0x8_0000,
  pageTablesPages: 4,
  pageTablesUsed: 3,
  stackTop: 0x7_0000,
  /** With `parameters`: where each host-supplied parameter area is inserted. */
  params: { srat: 0x10_0000, slit: 0x10_1000, pptt: 0x10_2000, madt: 0x10_3000, deviceTree: 0x10_4000, deviceTreeSize: 0x2000, scalars: 0x10_6000 },
} as const;

/** Parameter areas for every table and value a host supplies, inserted below the region (`RELOCATABLE_IGVM.params`). */
function parameterHeaders(): IgvmBuildHeader[] {
  const P = RELOCATABLE_IGVM.params;
  const areas: [IgvmParameterTypeName, number, number][] = [
    ['SRAT', P.srat, 0x1000], ['SLIT', P.slit, 0x1000], ['PPTT', P.pptt, 0x1000], ['MADT', P.madt, 0x1000], ['DEVICE_TREE', P.deviceTree, P.deviceTreeSize],
  ];
  const out: IgvmBuildHeader[] = [];
  areas.forEach(([kind, gpa, size], i) => {
    out.push({ kind: 'PARAMETER_AREA', number_of_bytes: size, parameter_area_index: i });
    out.push({ kind, parameter_area_index: i, byte_offset: 0 });
    out.push({ kind: 'PARAMETER_INSERT', gpa, compatibility_mask: 1, parameter_area_index: i });
  });
  const scalars = areas.length;
  out.push(
    { kind: 'PARAMETER_AREA', number_of_bytes: 0x1000, parameter_area_index: scalars },
    { kind: 'VP_COUNT_PARAMETER', parameter_area_index: scalars, byte_offset: 0 },
    { kind: 'COMMAND_LINE', parameter_area_index: scalars, byte_offset: 0x100 },
    { kind: 'MEMORY_MAP', parameter_area_index: scalars, byte_offset: 0x800 },
    { kind: 'PARAMETER_INSERT', gpa: P.scalars, compatibility_mask: 1, parameter_area_index: scalars },
  );
  return out;
}

const PTE_LINK = 0x23n;
const PTE_2M = 0xe3n;

function pageTables(): Uint8Array {
  const L = RELOCATABLE_IGVM;
  const t = new Uint8Array(L.pageTablesUsed * 4096);
  const dv = new DataView(t.buffer);
  dv.setBigUint64(0, BigInt(L.pageTablesGpa + 0x1000) | PTE_LINK, true); // PML4[0] -> PDPT
  dv.setBigUint64(0x1000, BigInt(L.pageTablesGpa + 0x2000) | PTE_LINK, true); // PDPT[0] -> PD
  dv.setBigUint64(0x2000, 0n | PTE_2M, true); // PD[0]: 0-2 MiB (stack, page tables)
  dv.setBigUint64(0x2000 + (L.regionGpa / 0x20_0000) * 8, BigInt(L.regionGpa) | PTE_2M, true); // PD[1]: the region
  return t;
}

function code(message: string, powerOff: boolean): Uint8Array {
  const L = RELOCATABLE_IGVM;
  const bytes: number[] = [
    0x66, 0xb8, 0x10, 0x00, //           mov ax, 0x10          ; data selector
    0x8e, 0xd8, //                       mov ds, ax            ; reads the GDT at GDTR.base
  ];
  // lea rbx, [rip + disp32]: disp counts from the end of this 7-byte instruction.
  const leaEnd = bytes.length + 7;
  const disp = L.dataOffset - L.codeOffset - leaEnd;
  bytes.push(0x48, 0x8d, 0x1d, disp & 0xff, (disp >> 8) & 0xff, (disp >> 16) & 0xff, (disp >>> 24) & 0xff);
  bytes.push(0xff, 0x03); //           inc dword [rbx]
  bytes.push(0x66, 0xba, 0xf8, 0x03); // mov dx, 0x3f8         ; COM1 THR
  for (const ch of message) bytes.push(0xb0, ch.charCodeAt(0) & 0xff, 0xee); // mov al, ch; out dx, al
  if (powerOff) {
    bytes.push(
      0x66, 0xba, 0x04, 0x04, //         mov dx, 0x404         ; PM1a_CNT
      0x66, 0xb8, 0x00, 0x20, //         mov ax, 0x2000        ; SLP_EN, S5
      0x66, 0xef, //                     out dx, ax
    );
  }
  bytes.push(0xf4, 0xeb, 0xfd); //       hlt; jmp $-1
  return Uint8Array.from(bytes);
}

/** The file, its message on COM1 and where its parts sit before relocation. */
export function relocatableTestIgvm(message = 'RELOCATED-OK\n', options: { powerOff?: boolean; parameters?: boolean } = {}): Uint8Array {
  const L = RELOCATABLE_IGVM;
  const tables = pageTables();
  return buildIgvm({
    headers: [
      { kind: 'SUPPORTED_PLATFORM', compatibility_mask: 1, platform_type: 0 },
      {
        kind: 'RELOCATABLE_REGION', compatibility_mask: 1, flags: RELOCATION_FLAG_APPLY_RIP | RELOCATION_FLAG_APPLY_GDTR,
        relocation_alignment: L.alignment, relocation_region_gpa: L.regionGpa, relocation_region_size: L.regionSize,
        minimum_relocation_gpa: L.regionGpa, maximum_relocation_gpa: L.maxGpa,
      },
      { kind: 'PAGE_TABLE_RELOCATION_REGION', compatibility_mask: 1, gpa: L.pageTablesGpa, size: L.pageTablesPages * 4096, used_size: L.pageTablesUsed * 4096 },
      { kind: 'PAGE_DATA', gpa: L.regionGpa + L.codeOffset, compatibility_mask: 1, data: code(message, options.powerOff ?? true) },
      { kind: 'PAGE_DATA', gpa: L.regionGpa + L.gdtOffset, compatibility_mask: 1, data: encodeGdt() },
      { kind: 'PAGE_DATA', gpa: L.regionGpa + L.dataOffset, compatibility_mask: 1 },
      ...(options.parameters ? parameterHeaders() : []),
      ...Array.from({ length: L.pageTablesUsed }, (_, i) => ({ kind: 'PAGE_DATA' as const, gpa: L.pageTablesGpa + i * 4096, compatibility_mask: 1, data: tables.subarray(i * 4096, (i + 1) * 4096) })),
      {
        kind: 'VP_CONTEXT', compatibility_mask: 1,
        data: encodeNativeVpContextX64({
          rax: 0n, rcx: 0n, rdx: 0n, rbx: 0n, rsp: BigInt(L.stackTop), rbp: 0n, rsi: 0n, rdi: 0n,
          r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n,
          rip: BigInt(L.regionGpa + L.codeOffset), rflags: 2n,
          idtr_base: 0n, idtr_limit: 0, gdtr_base: BigInt(L.regionGpa + L.gdtOffset), gdtr_limit: 0x1f,
          code_selector: 0x8, code_attributes: 0xa09b, code_base: 0, code_limit: 0xffffffff,
          data_selector: 0x10, data_attributes: 0xc093, data_base: 0, data_limit: 0xffffffff,
          gs_base: 0n, cr0: 0x80000011n, cr3: BigInt(L.pageTablesGpa), cr4: 0x20n, efer: 0x500n,
        }, 4096),
      },
    ],
  });
}
