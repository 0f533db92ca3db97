/**
 * Turns a parsed IGVM file into a load plan for one platform our KVM
 * backend can run: picks the SUPPORTED_PLATFORM (NATIVE, else VSM), keeps
 * the directives whose compatibility mask includes it, and decodes the boot
 * VP context. Pure: it reads the file bytes but writes no memory (load.ts
 * does). Relocatable regions load at their file GPAs unless the caller gives
 * a new base (`relocateTo`); then every GPA inside the region moves, the boot
 * context follows the region's flags and the page-table region is rebuilt
 * (relocate.ts). Spec: `igvm_defs` §platforms, §relocation.
 */
import { NodevmmError } from '../../errors';
import { hex } from '../../util/bytes';
import type { X86VcpuInitState } from '../../hv/x86-state';
import { IGVM_PAGE_DATA_FLAG_IS_2MB_PAGE, IGVM_REQUIRED_MEMORY_FLAG_VTL2_PROTECTABLE, type IgvmPageDataTypeName, type IgvmParameterTypeName, type IgvmPlatformTypeName } from '../../igvm/defs';
import type { IgvmFile, IgvmHeader, IgvmPageTableRelocation, IgvmParameterArea, IgvmRelocatableRegion, IgvmSupportedPlatform, IgvmVpContext } from '../../igvm/model';
import { decodeNativeVpContextX64, decodeVbsVpContext } from '../../igvm/vp-context';
import { nativeContextToVcpuState, vbsContextToVcpuState } from './vcpu-state';
import { coalesceRanges, type IgvmGpaRange } from '../../igvm/ranges';
import { rebuildPageTables, relocatedGpa, relocateRegion, type IgvmRelocation } from './relocate';

export type IgvmPlatformChoice = 'native' | 'vsm' | 'snp' | 'tdx' | 'sev' | 'sev-es' | 'cca';

const CHOICE_TO_TYPE: Readonly<Record<IgvmPlatformChoice, IgvmPlatformTypeName>> = {
  native: 'NATIVE', vsm: 'VSM_ISOLATION', snp: 'SEV_SNP', tdx: 'TDX', sev: 'SEV', 'sev-es': 'SEV_ES', cca: 'CCA',
};
const DISPLAY: Readonly<Record<IgvmPlatformTypeName, string>> = {
  NATIVE: 'NATIVE', VSM_ISOLATION: 'VSM', SEV_SNP: 'SEV-SNP', TDX: 'TDX', SEV: 'SEV', SEV_ES: 'SEV-ES', CCA: 'Arm CCA',
};
const HARDWARE: Readonly<Partial<Record<IgvmPlatformTypeName, string>>> = {
  SEV_SNP: 'AMD SEV-SNP', SEV: 'AMD SEV', SEV_ES: 'AMD SEV-ES', TDX: 'Intel TDX', CCA: 'Arm CCA (RME)',
};

export interface PlanIgvmOptions {
  /** Platform to load; default: NATIVE when declared, else VSM. */
  platform?: IgvmPlatformChoice;
  /** True only for a backend with virtual trust levels; KVM has none. */
  hostSupportsVtl2?: boolean;
  /**
   * New base GPA for the file's RELOCATABLE_REGION (the selected platform
   * must have exactly one). Default: every region loads at its file GPA.
   */
  relocateTo?: number;
}

export type IgvmLoadStep =
  | { op: 'page'; header: number; gpa: number; fileOffset: number; dataType: IgvmPageDataTypeName; flags: number }
  | { op: 'area'; header: number; area: number; size: number; fileOffset: number }
  | { op: 'parameter'; header: number; kind: IgvmParameterTypeName; area: number; byteOffset: number }
  | { op: 'insert'; header: number; area: number; gpa: number; size: number }
  | { op: 'required-memory'; header: number; gpa: number; size: number; vtl2Protectable: boolean }
  | { op: 'error-range'; header: number; gpa: number; size: number }
  /** Bytes the plan made itself: the rebuilt page tables of a relocated load. */
  | { op: 'data'; header: number; gpa: number; bytes: Uint8Array };

export interface IgvmBootContext {
  header: number;
  vpIndex: number;
  format: 'native' | 'vbs';
  vtl: number;
  state: X86VcpuInitState;
}

export interface IgvmLoadPlan {
  platform: { name: IgvmPlatformTypeName; mask: number; highestVtl: number; header: number };
  /** Directives in file order, already filtered by the platform mask. */
  steps: IgvmLoadStep[];
  /** Union of every range the load writes or the file requires, coalesced and sorted. */
  requiredRam: IgvmGpaRange[];
  /** Undefined: the file carries no context for this platform, so the BSP starts from its reset state. */
  bootContext: IgvmBootContext | undefined;
  /** Headers that apply to the platform but need nothing from us (GUEST_POLICY, CORIM, measurements), by kind. */
  ignored: Record<string, number>;
  /** Headers whose mask excluded them. */
  filteredOut: number;
  /** Regions moved by `relocateTo` (empty when the load uses file GPAs). */
  relocations: IgvmRelocation[];
  warnings: string[];
}

function unsupported(code: string, message: string): NodevmmError {
  return new NodevmmError(code, message);
}

function listNames(names: readonly string[]): string {
  return names.length <= 1 ? names.join('') : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}

/** Choose the platform header; throws a refusal that names what the file needs. */
export function selectIgvmPlatform(file: IgvmFile, options: PlanIgvmOptions = {}): IgvmSupportedPlatform {
  if (file.arch !== 'x64') throw unsupported('ERR_IGVM_ARCH_UNSUPPORTED', `igvm: this file is for ${file.arch}, and the loader runs x64 files only`);
  const platforms = file.headers.filter((h): h is IgvmSupportedPlatform => h.kind === 'SUPPORTED_PLATFORM');
  const declared = listNames(platforms.map((p) => DISPLAY[p.platform_name]));
  const refuseHardware = (names: IgvmPlatformTypeName[]) => {
    const hw = [...new Set(names.map((n) => HARDWARE[n]).filter((x): x is string => !!x))];
    return unsupported('ERR_IGVM_PLATFORM_UNSUPPORTED',
      `igvm: this file supports only ${listNames(names.map((n) => DISPLAY[n]))}, which need ${listNames(hw)} hardware and a confidential-computing backend; the KVM backend can run NATIVE or VSM VTL0`);
  };
  if (options.platform) {
    const want = CHOICE_TO_TYPE[options.platform];
    if (!want) throw unsupported('ERR_IGVM_PLATFORM_UNKNOWN', `igvm: platform ${String(options.platform)} is unknown (native, vsm, snp, tdx, sev, sev-es, cca)`);
    const found = platforms.find((p) => p.platform_name === want);
    if (!found) throw unsupported('ERR_IGVM_PLATFORM_MISSING', `igvm: the file declares no ${DISPLAY[want]} platform (it declares ${declared})`);
    if (want !== 'NATIVE' && want !== 'VSM_ISOLATION') throw refuseHardware([want]);
    return found;
  }
  const pick = platforms.find((p) => p.platform_name === 'NATIVE') ?? platforms.find((p) => p.platform_name === 'VSM_ISOLATION');
  if (!pick) throw refuseHardware(platforms.map((p) => p.platform_name));
  return pick;
}

/** Build the load plan for the selected platform. */
export function planIgvmLoad(file: IgvmFile, options: PlanIgvmOptions = {}): IgvmLoadPlan {
  const platform = selectIgvmPlatform(file, options);
  const mask = platform.compatibility_mask;
  const steps: IgvmLoadStep[] = [];
  const ranges: IgvmGpaRange[] = [];
  const ignored: Record<string, number> = {};
  const warnings: string[] = [];
  const areas = new Map<number, IgvmParameterArea>();
  const contexts: IgvmBootContext[] = [];
  const relocation = planRelocation(file, mask, options);
  const { moves, ptRegion } = relocation;
  const at = (gpa: number) => relocatedGpa(moves, gpa);
  let filteredOut = 0;
  for (const h of file.headers) {
    if (h.kind === 'SUPPORTED_PLATFORM') continue;
    if ('compatibility_mask' in h && !(h.compatibility_mask & mask)) {
      filteredOut++;
      continue;
    }
    switch (h.kind) {
      case 'PAGE_DATA':
        // OpenVMM and the reference crate read 4 KiB even for this flag; guessing 2 MiB semantics would load wrong memory.
        if (h.flags & IGVM_PAGE_DATA_FLAG_IS_2MB_PAGE) throw unsupported('ERR_IGVM_UNSUPPORTED', `igvm header ${h.index} (PAGE_DATA): flags ${hex(h.flags)} asks for a 2 MiB page, which no loader implements`);
        if (relocation.ptTables && inside(ptRegion!, h.gpa)) {
          // Held back: the page-table region is rebuilt and written as a whole after the directives.
          if (h.gpa >= ptRegion!.gpa + ptRegion!.used_size) {
            throw unsupported('ERR_IGVM_RELOCATION', `igvm header ${h.index} (PAGE_DATA): gpa ${hex(h.gpa)} lies in the spare pages of the page-table region of header ${ptRegion!.index} (used_size ${hex(ptRegion!.used_size)})`);
          }
          if (h.file_offset) relocation.ptTables.set(file.bytes.subarray(h.file_offset, h.file_offset + file.pageSize), h.gpa - ptRegion!.gpa);
          break;
        }
        steps.push({ op: 'page', header: h.index, gpa: at(h.gpa), fileOffset: h.file_offset, dataType: h.data_type_name, flags: h.flags });
        ranges.push({ gpa: at(h.gpa), size: file.pageSize });
        break;
      case 'PARAMETER_AREA':
        areas.set(h.parameter_area_index, h);
        steps.push({ op: 'area', header: h.index, area: h.parameter_area_index, size: h.number_of_bytes, fileOffset: h.file_offset });
        break;
      case 'PARAMETER_INSERT': {
        const size = areas.get(h.parameter_area_index)?.number_of_bytes ?? 0;
        steps.push({ op: 'insert', header: h.index, area: h.parameter_area_index, gpa: at(h.gpa), size });
        ranges.push({ gpa: at(h.gpa), size });
        break;
      }
      case 'REQUIRED_MEMORY': {
        const vtl2Protectable = (h.flags & IGVM_REQUIRED_MEMORY_FLAG_VTL2_PROTECTABLE) !== 0;
        steps.push({ op: 'required-memory', header: h.index, gpa: at(h.gpa), size: h.number_of_bytes, vtl2Protectable });
        ranges.push({ gpa: at(h.gpa), size: h.number_of_bytes });
        break;
      }
      case 'ERROR_RANGE':
        steps.push({ op: 'error-range', header: h.index, gpa: at(h.gpa), size: h.size_bytes });
        ranges.push({ gpa: at(h.gpa), size: h.size_bytes });
        break;
      case 'RELOCATABLE_REGION':
        ranges.push({ gpa: at(h.relocation_region_gpa), size: h.relocation_region_size });
        break;
      case 'PAGE_TABLE_RELOCATION_REGION':
        ranges.push({ gpa: at(h.gpa), size: h.size });
        break;
      case 'VP_CONTEXT':
        contexts.push(decodeContext(file, platform, h));
        break;
      case 'VP_COUNT_PARAMETER': case 'SRAT': case 'MADT': case 'MMIO_RANGES': case 'MEMORY_MAP': case 'COMMAND_LINE':
      case 'SLIT': case 'PPTT': case 'DEVICE_TREE': case 'ENVIRONMENT_INFO_PARAMETER':
        steps.push({ op: 'parameter', header: h.index, kind: h.kind, area: h.parameter_area_index, byteOffset: h.byte_offset });
        break;
      default:
        ignored[h.kind] = (ignored[h.kind] ?? 0) + 1;
    }
  }
  for (const k of file.skippedOptional) warnings.push(`optional header ${k.index} of unknown type ${hex(k.type)} (${k.length} bytes) skipped`);
  const bootContext = chooseBootContext(platform, contexts, options, warnings);
  if (moves.length) applyRelocation(relocation, bootContext, steps);
  return {
    platform: { name: platform.platform_name, mask, highestVtl: platform.highest_vtl, header: platform.index },
    steps, requiredRam: coalesceRanges(ranges), bootContext, ignored, filteredOut, relocations: moves, warnings,
  };
}

interface RelocationPlan {
  moves: IgvmRelocation[];
  ptRegion: IgvmPageTableRelocation | undefined;
  /** The page-table region's used pages, collected from PAGE_DATA when relocating. */
  ptTables: Uint8Array | undefined;
}

const inside = (r: IgvmPageTableRelocation, gpa: number) => gpa >= r.gpa && gpa < r.gpa + r.size;

function planRelocation(file: IgvmFile, mask: number, options: PlanIgvmOptions): RelocationPlan {
  const applies = (h: IgvmHeader) => 'compatibility_mask' in h && (h.compatibility_mask & mask) !== 0;
  const regions = file.headers.filter((h): h is IgvmRelocatableRegion => h.kind === 'RELOCATABLE_REGION' && applies(h));
  const ptRegion = file.headers.find((h): h is IgvmPageTableRelocation => h.kind === 'PAGE_TABLE_RELOCATION_REGION' && applies(h));
  if (options.relocateTo === undefined) return { moves: [], ptRegion, ptTables: undefined };
  if (regions.length !== 1) {
    throw unsupported('ERR_IGVM_RELOCATION', regions.length === 0
      ? `igvm: a relocation base ${hex(options.relocateTo)} was given, but the file has no RELOCATABLE_REGION for this platform`
      : `igvm: a relocation base ${hex(options.relocateTo)} was given, but the file has ${regions.length} RELOCATABLE_REGIONs for this platform (headers ${regions.map((r) => r.index).join(', ')}); one base can move only one`);
  }
  const move = relocateRegion(regions[0]!, options.relocateTo);
  if (move.delta === 0) return { moves: [], ptRegion, ptTables: undefined };
  return { moves: [move], ptRegion, ptTables: ptRegion ? new Uint8Array(ptRegion.used_size) : undefined };
}

/** Move the boot context with the region and write the rebuilt page tables. */
function applyRelocation(r: RelocationPlan, ctx: IgvmBootContext | undefined, steps: IgvmLoadStep[]): void {
  const move = r.moves[0]!;
  const where = `igvm header ${move.header} (RELOCATABLE_REGION)`;
  const targets = ctx && ctx.vpIndex === move.vpIndex && (ctx.format === 'native' || ctx.vtl === move.vtl);
  if (!ctx || !targets) {
    if (move.applyRip || move.applyGdtr || r.ptRegion) {
      throw unsupported('ERR_IGVM_RELOCATION', `${where}: the region adjusts the registers of vp ${move.vpIndex} VTL${move.vtl}, whose context this load does not apply (the platform has none, or it is for a VTL the backend lacks)`);
    }
    return;
  }
  const regs = (ctx.state.regs ??= {});
  const sregs = (ctx.state.sregs ??= {});
  const delta = BigInt(move.delta);
  if (move.applyRip) regs.rip = (regs.rip ?? 0n) + delta;
  if (move.applyGdtr && sregs.gdt) sregs.gdt = { ...sregs.gdt, base: sregs.gdt.base + delta };
  const paging = ((sregs.cr0 ?? 0n) & (1n << 31n)) !== 0n;
  if (r.ptRegion && r.ptTables) {
    if (!paging) throw unsupported('ERR_IGVM_RELOCATION', `igvm header ${r.ptRegion.index} (PAGE_TABLE_RELOCATION_REGION): the boot context has paging off (CR0.PG clear), so there are no page tables to relocate`);
    const tableDelta = relocatedGpa(r.moves, r.ptRegion.gpa) - r.ptRegion.gpa;
    const bytes = rebuildPageTables({ region: r.ptRegion, tables: r.ptTables, tableDelta, cr3: sregs.cr3 ?? 0n, cr4: sregs.cr4 ?? 0n, moves: r.moves });
    sregs.cr3 = (sregs.cr3 ?? 0n) + BigInt(tableDelta);
    steps.push({ op: 'data', header: r.ptRegion.index, gpa: r.ptRegion.gpa + tableDelta, bytes });
    return;
  }
  const cr3 = Number((sregs.cr3 ?? 0n) & ~0xfffn);
  if (paging && relocatedGpa(r.moves, cr3) !== cr3) {
    throw unsupported('ERR_IGVM_RELOCATION', `${where}: the boot cpu's page tables (CR3 ${hex(cr3)}) lie in the region, and the file has no PAGE_TABLE_RELOCATION_REGION to rebuild them`);
  }
}

function decodeContext(file: IgvmFile, platform: IgvmSupportedPlatform, h: IgvmVpContext): IgvmBootContext {
  const where = `igvm header ${h.index} (VP_CONTEXT)`;
  // QEMU and the reference crate also accept only the BSP; APs start through INIT/SIPI from the guest.
  if (h.vp_index !== 0) throw unsupported('ERR_IGVM_UNSUPPORTED', `${where}: vp_index ${h.vp_index} is not supported, only the boot cpu (vp_index 0) can take a context`);
  if (platform.platform_name === 'NATIVE') {
    if (file.version < 2) throw unsupported('ERR_IGVM_UNSUPPORTED', `${where}: a NATIVE vp context needs format_version 2, the file is version ${file.version}`);
    const ctx = decodeNativeVpContextX64(file.bytes, h.file_offset, file.pageSize, where);
    return { header: h.index, vpIndex: 0, format: 'native', vtl: 0, state: nativeContextToVcpuState(ctx, where) };
  }
  const list = decodeVbsVpContext(file.bytes, h.file_offset, where);
  return { header: h.index, vpIndex: 0, format: 'vbs', vtl: list[0]!.vtl, state: vbsContextToVcpuState(list, where) };
}

function chooseBootContext(platform: IgvmSupportedPlatform, contexts: IgvmBootContext[], options: PlanIgvmOptions, warnings: string[]): IgvmBootContext | undefined {
  if (platform.platform_name !== 'VSM_ISOLATION') return contexts[0];
  const maxVtl = options.hostSupportsVtl2 ? platform.highest_vtl : 0;
  const usable = contexts.filter((c) => c.vtl <= maxVtl).sort((a, b) => b.vtl - a.vtl);
  const skipped = contexts.filter((c) => c.vtl > maxVtl);
  if (usable.length === 0 && (skipped.length > 0 || platform.highest_vtl > maxVtl)) {
    throw unsupported('ERR_IGVM_VTL2_UNSUPPORTED',
      `igvm: this VSM file boots in VTL${platform.highest_vtl} (a paravisor such as OpenHCL) and has no VTL0 context; the KVM backend has no virtual trust levels`);
  }
  if (skipped.length) warnings.push(`VTL2 context of header ${skipped.map((c) => c.header).join(', ')} skipped: the backend has no virtual trust levels; booting the VTL0 context`);
  return usable[0];
}
