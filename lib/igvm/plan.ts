/**
 * Turns a parsed IGVM file into a load plan for one platform our KVM
 * backend can run: picks the SUPPORTED_PLATFORM (NATIVE, else VSM), keeps
 * the directives whose compatibility mask includes it, and decodes the boot
 * VP context. Pure: it reads the file bytes but writes no memory (load.ts
 * does). It never relocates: relocatable regions load at their file GPAs and
 * only count toward the RAM the VM must have. Spec: `igvm_defs` §platforms.
 */
import { NodevmmError } from '../errors';
import { hex } from '../util/bytes';
import type { X86VcpuInitState } from '../hv/x86-state';
import { IGVM_PAGE_DATA_FLAG_IS_2MB_PAGE, IGVM_REQUIRED_MEMORY_FLAG_VTL2_PROTECTABLE, type IgvmPageDataTypeName, type IgvmParameterTypeName, type IgvmPlatformTypeName } from './defs';
import type { IgvmFile, IgvmHeader, IgvmParameterArea, IgvmSupportedPlatform, IgvmVpContext } from './model';
import { decodeNativeVpContextX64, decodeVbsVpContext, nativeContextToVcpuState, vbsContextToVcpuState } from './vp-context';

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
}

export type IgvmLoadStep =
  | { op: 'page'; header: number; gpa: number; fileOffset: number; dataType: IgvmPageDataTypeName; flags: number }
  | { op: 'area'; header: number; area: number; size: number; fileOffset: number }
  | { op: 'parameter'; header: number; kind: IgvmParameterTypeName; area: number; byteOffset: number }
  | { op: 'insert'; header: number; area: number; gpa: number; size: number }
  | { op: 'required-memory'; header: number; gpa: number; size: number; vtl2Protectable: boolean }
  | { op: 'error-range'; header: number; gpa: number; size: number };

export interface IgvmGpaRange {
  gpa: number;
  size: number;
}

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
        steps.push({ op: 'page', header: h.index, gpa: h.gpa, fileOffset: h.file_offset, dataType: h.data_type_name, flags: h.flags });
        ranges.push({ gpa: h.gpa, size: file.pageSize });
        break;
      case 'PARAMETER_AREA':
        areas.set(h.parameter_area_index, h);
        steps.push({ op: 'area', header: h.index, area: h.parameter_area_index, size: h.number_of_bytes, fileOffset: h.file_offset });
        break;
      case 'PARAMETER_INSERT': {
        const size = areas.get(h.parameter_area_index)?.number_of_bytes ?? 0;
        steps.push({ op: 'insert', header: h.index, area: h.parameter_area_index, gpa: h.gpa, size });
        ranges.push({ gpa: h.gpa, size });
        break;
      }
      case 'REQUIRED_MEMORY': {
        const vtl2Protectable = (h.flags & IGVM_REQUIRED_MEMORY_FLAG_VTL2_PROTECTABLE) !== 0;
        steps.push({ op: 'required-memory', header: h.index, gpa: h.gpa, size: h.number_of_bytes, vtl2Protectable });
        ranges.push({ gpa: h.gpa, size: h.number_of_bytes });
        break;
      }
      case 'ERROR_RANGE':
        steps.push({ op: 'error-range', header: h.index, gpa: h.gpa, size: h.size_bytes });
        ranges.push({ gpa: h.gpa, size: h.size_bytes });
        break;
      case 'RELOCATABLE_REGION':
        ranges.push({ gpa: h.relocation_region_gpa, size: h.relocation_region_size });
        warnings.push(`header ${h.index} (RELOCATABLE_REGION) is loaded at its file address ${hex(h.relocation_region_gpa)}; relocation is not implemented`);
        break;
      case 'PAGE_TABLE_RELOCATION_REGION':
        ranges.push({ gpa: h.gpa, size: h.size });
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
  const bootContext = chooseBootContext(platform, contexts, options, warnings);
  return {
    platform: { name: platform.platform_name, mask, highestVtl: platform.highest_vtl, header: platform.index },
    steps, requiredRam: coalesceRanges(ranges), bootContext, ignored, filteredOut, warnings,
  };
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

/** Sort and merge overlapping or touching ranges; drops empty ones. */
export function coalesceRanges(ranges: readonly IgvmGpaRange[]): IgvmGpaRange[] {
  const sorted = ranges.filter((r) => r.size > 0).sort((a, b) => a.gpa - b.gpa);
  const out: IgvmGpaRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.gpa <= last.gpa + last.size) last.size = Math.max(last.size, r.gpa + r.size - last.gpa);
    else out.push({ ...r });
  }
  return out;
}

/** Headers that apply to a mask (exported for inspect). */
export function appliesTo(h: IgvmHeader, mask: number): boolean {
  return !('compatibility_mask' in h) || h.kind === 'SUPPORTED_PLATFORM' || (h.compatibility_mask & mask) !== 0;
}
