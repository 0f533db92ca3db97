/**
 * Booting an IGVM image on the x86 machine: parse, plan for the platform
 * this host runs (NATIVE on KVM), move the relocatable region when the
 * config asks, make sure the RAM the file requires exists, supply every
 * parameter the spec lets a host supply (VP count, memory map, MMIO ranges,
 * command line, MADT, SRAT, SLIT, PPTT, a device tree), load the pages and
 * hand back the boot CPU state.
 */
import { randomBytes } from 'node:crypto';
import { parseIgvm } from '../igvm/parse';
import { planIgvmLoad, type IgvmLoadPlan } from '../loader/igvm/plan';
import type { IgvmFile } from '../igvm/model';
import { igvmMemoryMap, loadIgvm } from '../loader/igvm/load';
import { buildIgvmHostDeviceTree } from '../loader/igvm/host-device-tree';
import { encodeSrat } from '../acpi/srat';
import { encodeSlit } from '../acpi/slit';
import { encodePptt } from '../acpi/pptt';
import type { X86Partition } from '../hv/partition';
import type { X86VcpuInitState } from '../hv/x86-state';
import { ZERO_REGS } from '../hv/x86-state';
import type { ResolvedVmConfig } from './config';
import type { X86AcpiTables } from '../acpi/x86-tables';
import { COM_RESOURCES, MMIO_GAP_SIZE, MMIO_GAP_START } from '../arch/x86_64/layout';
import { enabledComPorts } from './x86-machine';

/** A parsed IGVM file and its load plan for this config: made once by createVm, used by every boot of the VM. */
export interface PlannedIgvm {
  file: IgvmFile;
  plan: IgvmLoadPlan;
}

/** Parse the image and plan its load as this config asks (createVm runs it early to refuse bad files). */
export function planIgvmForConfig(bytes: Uint8Array, config: Pick<ResolvedVmConfig, 'igvmRelocateTo'>): PlannedIgvm {
  const file = parseIgvm(bytes);
  return { file, plan: planIgvmLoad(file, config.igvmRelocateTo !== undefined ? { relocateTo: config.igvmRelocateTo } : {}) };
}

/** The machine loader for a planned IGVM image (a guest reboot loads the same plan again). */
export function igvmLoader({ file, plan }: PlannedIgvm) {
  return (partition: X86Partition, config: ResolvedVmConfig, acpi: X86AcpiTables): X86VcpuInitState => loadPlannedIgvm(partition, config, acpi, file, plan);
}

function loadPlannedIgvm(partition: X86Partition, config: ResolvedVmConfig, acpi: X86AcpiTables, file: IgvmFile, plan: IgvmLoadPlan): X86VcpuInitState {
  // RAM the file requires outside the configured memory (e.g. 512 GiB in COCONUT's files, or a moved region).
  for (const r of plan.requiredRam) {
    if (!partition.memory.isRam(r.gpa, r.size)) {
      const start = Math.floor(r.gpa / 4096) * 4096;
      const end = Math.ceil((r.gpa + r.size) / 4096) * 4096;
      partition.addRam({ gpa: start, size: end - start, name: 'igvm-required' });
    }
  }
  const ram = partition.memory.ranges().map((r) => ({ gpa: r.gpa, size: r.size }));
  const memory = igvmMemoryMap(ram, plan);
  // vCPU i has APIC ID i, as in the MADT (lib/acpi/x86-tables.ts).
  const apicIds = Array.from({ length: config.vcpus }, (_, i) => i);
  const madt = acpi.tables.find((t) => t.signature === 'APIC')?.bytes;
  const result = loadIgvm(partition.memory, file, plan, {
    vpCount: config.vcpus,
    memoryMap: ram,
    // Without a command line from the user, the image keeps the one it was built with.
    ...(config.cmdlineFromImage ? {} : { commandLine: config.cmdline }),
    mmioRanges: [{ gpa: MMIO_GAP_START, size: MMIO_GAP_SIZE }],
    ...(madt ? { madt } : {}),
    // One NUMA node holding every vCPU and all RAM; one package of single-thread cores.
    srat: encodeSrat({ processors: apicIds.map((apicId) => ({ apicId, node: 0 })), memory: memory.map((m) => ({ gpa: m.gpa, size: m.size, node: 0 })) }),
    slit: encodeSlit(),
    pptt: encodePptt({ sockets: 1, coresPerSocket: config.vcpus, threadsPerCore: 1 }),
    deviceTree: buildIgvmHostDeviceTree({
      apicIds,
      memory,
      ...(config.cmdlineFromImage ? {} : { bootargs: config.cmdline }),
      serial: enabledComPorts(config).map((c) => COM_RESOURCES[c]),
      entropy: randomBytes(64),
    }),
  });
  // Things the load did without, said once each (Node prints warnings on stderr unless told otherwise).
  for (const w of result.warnings) process.emitWarning(`igvm: ${w}`, { code: 'NODEVMM_IGVM' });
  return result.bootCpu ?? { regs: { ...ZERO_REGS, rip: 0xfff0n } };
}
