/**
 * Booting an IGVM image on the x86 machine: parse, plan for the platform
 * this host runs (NATIVE on KVM), make sure the RAM the file requires
 * exists, load the pages and parameters, and hand back the boot CPU state.
 */
import { NodevmmError } from '../errors';
import { parseIgvm } from '../igvm/parse';
import { planIgvmLoad } from '../igvm/plan';
import { loadIgvm } from '../igvm/load';
import type { X86Partition } from '../hv/partition';
import type { X86VcpuInitState } from '../hv/x86-state';
import { ZERO_REGS } from '../hv/x86-state';
import type { ResolvedVmConfig } from './config';
import type { X86AcpiTables } from '../acpi/x86-tables';
import { MMIO_GAP_SIZE, MMIO_GAP_START } from '../arch/x86_64/layout';

export function igvmLoader(partition: X86Partition, config: ResolvedVmConfig, acpi: X86AcpiTables): X86VcpuInitState {
  const bytes = config.igvm;
  if (!(bytes instanceof Uint8Array)) throw new NodevmmError('ERR_IGVM', 'igvm image was not read');
  const file = parseIgvm(bytes);
  const plan = planIgvmLoad(file, {});
  // RAM the file requires outside the configured memory (e.g. 512 GiB in COCONUT's files).
  for (const r of plan.requiredRam) {
    if (!partition.memory.isRam(r.gpa, r.size)) {
      const start = Math.floor(r.gpa / 4096) * 4096;
      const end = Math.ceil((r.gpa + r.size) / 4096) * 4096;
      partition.addRam({ gpa: start, size: end - start, name: 'igvm-required' });
    }
  }
  const memoryMap = partition.memory.ranges().map((r) => ({ gpa: r.gpa, size: r.size }));
  const madt = acpi.tables.find((t) => t.signature === 'APIC')?.bytes;
  const result = loadIgvm(partition.memory, file, plan, {
    vpCount: config.vcpus,
    memoryMap,
    // Without a command line from the user, the image keeps the one it was built with.
    ...(config.cmdlineFromImage ? {} : { commandLine: config.cmdline }),
    mmioRanges: [{ gpa: MMIO_GAP_START, size: MMIO_GAP_SIZE }],
    ...(madt ? { madt } : {}),
  });
  return result.bootCpu ?? { regs: { ...ZERO_REGS, rip: 0xfff0n } };
}
