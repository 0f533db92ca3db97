/**
 * Executes an IGVM load plan against guest memory: copies page data (always
 * a copy: file data is not page aligned), fills parameter areas with what
 * the host supplies (VP count, environment info, memory map, MMIO ranges,
 * command line, ACPI tables, device tree) and inserts them, in file order.
 * It does not create RAM: the VM must already have `plan.requiredRam`, which
 * is checked before the first write. Spec: `igvm_defs` IGVM_VHS_PARAMETER*.
 */
import { NodevmmError } from '../../errors';
import type { GuestMemory } from '../../memory/guest-memory';
import type { X86VcpuInitState } from '../../hv/x86-state';
import { hex } from '../../util/bytes';
import { IGVM_VHS_MEMORY_MAP_ENTRY_SIZE, MemoryMapEntryType, type IgvmParameterTypeName } from '../../igvm/defs';
import type { IgvmFile } from '../../igvm/model';
import { coalesceRanges, type IgvmGpaRange } from '../../igvm/ranges';
import type { IgvmLoadPlan, IgvmLoadStep } from './plan';

export interface IgvmHostParameters {
  /** vCPUs the VM will start (VP_COUNT_PARAMETER). */
  vpCount: number;
  /** Guest RAM ranges for MEMORY_MAP; default: every range of the guest memory. */
  memoryMap?: readonly IgvmGpaRange[];
  commandLine?: string;
  /** u32 for ENVIRONMENT_INFO; default 0 (memory is private to the guest, as on plain KVM). */
  environmentInfo?: number;
  /** Low and high MMIO gaps for MMIO_RANGES (at most two). */
  mmioRanges?: readonly IgvmGpaRange[];
  deviceTree?: Uint8Array;
  madt?: Uint8Array;
  srat?: Uint8Array;
  slit?: Uint8Array;
  pptt?: Uint8Array;
}

export interface IgvmLoadResult {
  /** Register state for the boot CPU; undefined means its architectural reset state. */
  bootCpu: X86VcpuInitState | undefined;
  /** RAM the VM has to have for this file (also checked before writing). */
  requiredRam: IgvmGpaRange[];
  /** Every GPA range the load wrote, coalesced. */
  writtenRanges: IgvmGpaRange[];
  pagesWritten: number;
  warnings: string[];
}

function loadError(code: string, message: string): NodevmmError {
  return new NodevmmError(code, `igvm: ${message}`);
}

/** Write the plan's pages and parameter areas into `mem`; returns the boot CPU state. */
export function loadIgvm(mem: GuestMemory, file: IgvmFile, plan: IgvmLoadPlan, host: IgvmHostParameters): IgvmLoadResult {
  if (!Number.isInteger(host.vpCount) || host.vpCount < 1 || host.vpCount > 0xffff) {
    throw loadError('ERR_INVALID_ARG', `vpCount ${host.vpCount} must be an integer from 1 to 65535`);
  }
  for (const r of plan.requiredRam) {
    if (!mem.isRam(r.gpa, r.size)) {
      throw loadError('ERR_IGVM_MISSING_MEMORY', `the file needs guest ram at [${hex(r.gpa)}, ${hex(r.gpa + r.size)}), which the vm does not have`);
    }
  }
  const warnings = [...plan.warnings];
  const written: IgvmGpaRange[] = [];
  const page = file.pageSize;
  const zeroPage = new Uint8Array(page);
  // Only areas that get inserted for this platform are materialised, so allocation is bounded by guest RAM.
  const inserted = new Set(plan.steps.filter((s) => s.op === 'insert').map((s) => (s as { area: number }).area));
  const areas = new Map<number, Uint8Array>();
  let pagesWritten = 0;
  for (const step of plan.steps) {
    switch (step.op) {
      case 'page':
        mem.load(step.gpa, step.fileOffset === 0 ? zeroPage : file.bytes.subarray(step.fileOffset, step.fileOffset + page));
        written.push({ gpa: step.gpa, size: page });
        pagesWritten++;
        break;
      case 'area':
        if (!inserted.has(step.area)) break;
        areas.set(step.area, step.fileOffset === 0 ? new Uint8Array(step.size) : file.bytes.slice(step.fileOffset, step.fileOffset + step.size));
        break;
      case 'parameter': {
        const area = areas.get(step.area);
        if (area) writeParameter(area, step, mem, plan, host, warnings);
        break;
      }
      case 'insert': {
        const area = areas.get(step.area);
        if (!area) throw loadError('ERR_IGVM_PARAMETER_AREA', `header ${step.header} (PARAMETER_INSERT) names area ${step.area}, which was never declared`);
        mem.load(step.gpa, area);
        written.push({ gpa: step.gpa, size: area.length });
        areas.delete(step.area);
        break;
      }
      case 'data':
        mem.load(step.gpa, step.bytes);
        written.push({ gpa: step.gpa, size: step.bytes.length });
        pagesWritten += Math.ceil(step.bytes.length / page);
        break;
      case 'required-memory':
      case 'error-range':
        // Presence was checked above; nothing is written (ERROR_RANGE is for the guest to fill).
        break;
    }
  }
  return { bootCpu: plan.bootContext?.state, requiredRam: plan.requiredRam, writtenRanges: coalesceRanges(written), pagesWritten, warnings };
}

type ParameterStep = Extract<IgvmLoadStep, { op: 'parameter' }>;

function put(area: Uint8Array, step: ParameterStep, data: Uint8Array): void {
  if (step.byteOffset + data.length > area.length) {
    throw loadError('ERR_IGVM_PARAMETER_TOO_LARGE',
      `header ${step.header} (${step.kind}): ${data.length} bytes at byte_offset ${hex(step.byteOffset)} do not fit the ${hex(area.length)}-byte parameter area ${step.area}`);
  }
  area.set(data, step.byteOffset);
}

function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

const TABLE_PARAMS: Partial<Record<IgvmParameterTypeName, { key: 'madt' | 'srat' | 'slit' | 'pptt' | 'deviceTree'; optional: boolean }>> = {
  MADT: { key: 'madt', optional: false },
  SRAT: { key: 'srat', optional: false },
  DEVICE_TREE: { key: 'deviceTree', optional: false },
  // OpenVMM also skips these with a warning when it has no NUMA distances or cache topology to describe.
  SLIT: { key: 'slit', optional: true },
  PPTT: { key: 'pptt', optional: true },
};

function writeParameter(area: Uint8Array, step: ParameterStep, mem: GuestMemory, plan: IgvmLoadPlan, host: IgvmHostParameters, warnings: string[]): void {
  switch (step.kind) {
    case 'VP_COUNT_PARAMETER':
      return put(area, step, u32(host.vpCount));
    case 'ENVIRONMENT_INFO_PARAMETER':
      return put(area, step, u32(host.environmentInfo ?? 0));
    case 'MEMORY_MAP':
      return put(area, step, encodeMemoryMap(host.memoryMap ?? mem.ranges().map((r) => ({ gpa: r.gpa, size: r.size })), plan, area.length - step.byteOffset));
    case 'MMIO_RANGES': {
      const mmio = host.mmioRanges ?? [];
      if (mmio.length > 2) throw loadError('ERR_INVALID_ARG', `mmioRanges has ${mmio.length} entries, MMIO_RANGES holds at most 2`);
      const b = new Uint8Array(32);
      const dv = new DataView(b.buffer);
      mmio.forEach((r, i) => {
        dv.setBigUint64(i * 16, BigInt(Math.floor(r.gpa / 4096)), true);
        dv.setBigUint64(i * 16 + 8, BigInt(Math.floor(r.size / 4096)), true);
      });
      return put(area, step, b);
    }
    case 'COMMAND_LINE': {
      // Without a host command line the area keeps its initial data (our builder stores the build-time cmdline there).
      if (host.commandLine === undefined) return;
      const cmdline = host.commandLine;
      if (cmdline.includes('\0')) throw loadError('ERR_IGVM_COMMAND_LINE', 'the command line contains a NUL character');
      return put(area, step, new TextEncoder().encode(cmdline + '\0'));
    }
    default: {
      const t = TABLE_PARAMS[step.kind];
      const data = t ? host[t.key] : undefined;
      if (data) return put(area, step, data);
      if (t?.optional) {
        warnings.push(`header ${step.header} (${step.kind}) left empty: the host supplied none`);
        return;
      }
      throw loadError('ERR_IGVM_PARAMETER_MISSING', `header ${step.header} (${step.kind}) asks for a ${step.kind} the host did not supply`);
    }
  }
}

export interface IgvmMemoryMapEntry {
  gpa: number;
  size: number;
  /** IGVM memory-map entry type (MemoryMapEntryType). */
  type: number;
}

/**
 * The guest's memory as the IGVM memory map describes it: RAM plus
 * REQUIRED_MEMORY ranges, sorted and merged, with VTL2-protectable required
 * ranges as their own type. MEMORY_MAP and the device tree's memory nodes
 * both come from this list.
 */
export function igvmMemoryMap(ram: readonly IgvmGpaRange[], plan: IgvmLoadPlan): IgvmMemoryMapEntry[] {
  const required = plan.steps.filter((s): s is Extract<IgvmLoadStep, { op: 'required-memory' }> => s.op === 'required-memory');
  const protectable = coalesceRanges(required.filter((s) => s.vtl2Protectable));
  const memory = coalesceRanges([...ram, ...required.map((s) => ({ gpa: s.gpa, size: s.size }))]);
  const cuts = [...new Set([...memory, ...protectable].flatMap((r) => [r.gpa, r.gpa + r.size]))].sort((a, b) => a - b);
  const within = (list: IgvmGpaRange[], at: number) => list.some((r) => at >= r.gpa && at < r.gpa + r.size);
  const entries: IgvmMemoryMapEntry[] = [];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const gpa = cuts[i]!;
    const size = cuts[i + 1]! - gpa;
    const type = within(protectable, gpa) ? MemoryMapEntryType.VTL2_PROTECTABLE : within(memory, gpa) ? MemoryMapEntryType.MEMORY : -1;
    if (type < 0) continue;
    const last = entries[entries.length - 1];
    if (last && last.type === type && last.gpa + last.size === gpa) last.size += size;
    else entries.push({ gpa, size, type });
  }
  return entries;
}

/**
 * IGVM_VHS_MEMORY_MAP_ENTRY list of `igvmMemoryMap`. A zero entry
 * terminates the list when room is left.
 */
export function encodeMemoryMap(ram: readonly IgvmGpaRange[], plan: IgvmLoadPlan, room: number): Uint8Array {
  const entries = igvmMemoryMap(ram, plan);
  const bytes = entries.length * IGVM_VHS_MEMORY_MAP_ENTRY_SIZE;
  if (bytes > room) throw loadError('ERR_IGVM_PARAMETER_TOO_LARGE', `the memory map needs ${entries.length} entries (${bytes} bytes), the parameter area leaves ${room}`);
  const withTerminator = bytes + IGVM_VHS_MEMORY_MAP_ENTRY_SIZE <= room ? bytes + IGVM_VHS_MEMORY_MAP_ENTRY_SIZE : bytes;
  const out = new Uint8Array(withTerminator);
  const dv = new DataView(out.buffer);
  entries.forEach((e, i) => {
    const at = i * IGVM_VHS_MEMORY_MAP_ENTRY_SIZE;
    dv.setBigUint64(at, BigInt(Math.floor(e.gpa / 4096)), true);
    dv.setBigUint64(at + 8, BigInt(Math.floor(e.size / 4096)), true);
    dv.setUint16(at + 16, e.type, true);
  });
  return out;
}
