/**
 * The Multiple APIC Description Table for a PC with one IOAPIC and a legacy
 * 8259 pair: where the local APICs and the IOAPIC live, which ISA IRQs are
 * rewired (IRQ0 -> GSI2 for the PIT, the SCI as level/active-high), and which
 * LINT pin carries NMI. xAPIC entries only: APIC IDs above 0xFE would need
 * x2APIC entries (type 9), which we reject for now. Spec: ACPI 6.5 §5.2.12.
 */
import { FormatError } from '../errors';
import { ByteWriter } from '../util/bytes';
import { checkUint } from './checks';
import { encodeSdt } from './sdt';

export const MADT_REVISION = 5;
export const LOCAL_APIC_ADDRESS = 0xfee00000;
/** Flags: PCAT_COMPAT, i.e. a dual 8259 is present and the OS must mask it before using the IOAPIC. */
export const MADT_PCAT_COMPAT = 1;

export const MADT_TYPE = { LOCAL_APIC: 0, IO_APIC: 1, INTERRUPT_SOURCE_OVERRIDE: 2, LOCAL_APIC_NMI: 4 } as const;
export const LOCAL_APIC_ENTRY_SIZE = 8;
export const IO_APIC_ENTRY_SIZE = 12;
export const INTERRUPT_SOURCE_OVERRIDE_SIZE = 10;
export const LOCAL_APIC_NMI_SIZE = 6;

/** MPS INTI flags (Table 5.26): polarity in bits 0-1, trigger mode in bits 2-3; 0 means "conforms to the bus". */
export const MPS_INTI = {
  CONFORMS: 0,
  ACTIVE_HIGH: 0b01,
  ACTIVE_LOW: 0b11,
  EDGE: 0b01 << 2,
  LEVEL: 0b11 << 2,
} as const;

const LOCAL_APIC_ENABLED = 1;
/** Processor UID 0xFF in a Local APIC NMI entry means "every processor". */
const ALL_PROCESSORS = 0xff;
const MAX_XAPIC_ID = 0xfe;

export interface MadtOptions {
  /** APIC ID of each vCPU; the processor UID of entry i is i, matching the DSDT's _UID. */
  apicIds: readonly number[];
  ioApicId: number;
  ioApicAddress: number;
  ioApicGsiBase: number;
  /** ISA IRQ -> GSI rewiring (bus 0 is ISA). */
  overrides: readonly { source: number; gsi: number; flags: number }[];
  /** LINT pin wired to NMI on every local APIC. */
  nmiLint: 0 | 1;
  /** Whether the 8259 pair exists (sets PCAT_COMPAT). */
  pcatCompat: boolean;
}

export function encodeMadt(opts: MadtOptions): Uint8Array {
  if (opts.apicIds.length === 0 || opts.apicIds.length > 255) {
    throw new FormatError('ERR_ACPI_VALUE', `madt: ${opts.apicIds.length} processors given, expected 1 to 255`, {
      format: 'acpi',
      field: 'apicIds',
      expected: '1..255',
      actual: String(opts.apicIds.length),
    });
  }
  checkUint(opts.ioApicId, 8, 'madt io_apic_id');
  checkUint(opts.ioApicAddress, 32, 'madt io_apic_address');
  checkUint(opts.ioApicGsiBase, 32, 'madt global_system_interrupt_base');
  const w = new ByteWriter(64 + LOCAL_APIC_ENTRY_SIZE * opts.apicIds.length);
  w.u32(LOCAL_APIC_ADDRESS);
  w.u32(opts.pcatCompat ? MADT_PCAT_COMPAT : 0);
  // Processors first: Linux numbers CPUs in MADT order, so the boot CPU (entry 0) stays CPU 0.
  opts.apicIds.forEach((apicId, uid) => {
    if (!Number.isInteger(apicId) || apicId < 0 || apicId > MAX_XAPIC_ID) {
      throw new FormatError('ERR_ACPI_VALUE', `madt: apic id ${apicId} of vcpu ${uid} is outside 0..0xfe`, {
        format: 'acpi',
        field: `apicIds[${uid}]`,
        expected: '0..254',
        actual: String(apicId),
      });
    }
    w.u8(MADT_TYPE.LOCAL_APIC).u8(LOCAL_APIC_ENTRY_SIZE).u8(uid).u8(apicId).u32(LOCAL_APIC_ENABLED);
  });
  w.u8(MADT_TYPE.IO_APIC).u8(IO_APIC_ENTRY_SIZE).u8(opts.ioApicId).u8(0).u32(opts.ioApicAddress).u32(opts.ioApicGsiBase);
  for (const o of opts.overrides) {
    checkUint(o.source, 8, 'madt override source');
    checkUint(o.gsi, 32, 'madt override global_system_interrupt');
    checkUint(o.flags, 16, 'madt override flags');
    w.u8(MADT_TYPE.INTERRUPT_SOURCE_OVERRIDE).u8(INTERRUPT_SOURCE_OVERRIDE_SIZE).u8(0).u8(o.source).u32(o.gsi).u16(o.flags);
  }
  w.u8(MADT_TYPE.LOCAL_APIC_NMI).u8(LOCAL_APIC_NMI_SIZE).u8(ALL_PROCESSORS).u16(MPS_INTI.CONFORMS).u8(opts.nmiLint);
  return encodeSdt({ signature: 'APIC', revision: MADT_REVISION }, w.finish());
}
