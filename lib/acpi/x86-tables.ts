/**
 * Builds the complete ACPI table set for an x86 Linux Direct guest: RSDP,
 * XSDT, FADT, FACS, MADT and DSDT, laid out back to back from `tablesGpa`
 * with absolute pointers between them. Pure: it returns bytes and addresses;
 * the caller writes them into guest memory and reserves the range in E820.
 * It decides no addresses, ports or IRQs beyond packing the tables: the
 * caller passes the machine's (lib/arch/x86_64/layout.ts for ours).
 * Spec: ACPI 6.5 §5.2 (table relationships: RSDP -> XSDT -> FADT -> DSDT/FACS).
 */
import { FormatError } from '../errors';
import { alignUp, hex } from '../util/bytes';
import { checkUint } from './checks';
import { encodeDsdt, SerialPortDesc, VirtioMmioDesc } from './dsdt';
import { encodeFacs, FACS_ALIGNMENT } from './facs';
import { encodeFadt } from './fadt';
import { encodeMadt, MPS_INTI } from './madt';
import { encodeRsdp, RSDP_SIZE } from './rsdp';
import { encodeXsdt } from './xsdt';

/** Tables are placed on 8-byte boundaries so every 64-bit field in them is naturally aligned. */
const TABLE_ALIGNMENT = 8;

export interface X86AcpiOptions {
  vcpus: number;
  /** APIC ID of each vCPU; defaults to 0..vcpus-1 (KVM's default numbering). */
  apicIds?: readonly number[];
  serialPorts: readonly SerialPortDesc[];
  virtioMmio?: readonly VirtioMmioDesc[];
  /** Where the tables go (FACS first, so 64-byte aligned). */
  tablesGpa: number;
  /** Where the RSDP goes (16-byte aligned; Linux also scans 0xE0000-0xFFFFF for it). */
  rsdpGpa: number;
  /** I/O port of the ACPI PM register block. */
  pmBase: number;
  /** ISA IRQ of the SCI. */
  sci: number;
  ioApic: { id: number; address: number; gsiBase: number };
  /** The PIT's ISA IRQ and the IOAPIC pin it reaches (an interrupt source override). */
  pit: { irq: number; gsi: number };
  /** The CMOS RTC's port and IRQ, or null when the machine has none. */
  rtc: { port: number; irq: number } | null;
  /** The LAPIC input wired to NMI. */
  nmiLint: 0 | 1;
  /** Whether a dual 8259 is present (MADT PCAT_COMPAT). Default true. */
  legacyPic?: boolean;
}

export interface AcpiTable {
  signature: string;
  gpa: number;
  bytes: Uint8Array;
}

export interface X86AcpiTables {
  /** 36 bytes to write at `rsdpGpa`. */
  rsdp: Uint8Array;
  rsdpGpa: number;
  /** Every other table, contiguous from `tablesGpa` with zero padding between them. */
  blob: Uint8Array;
  tablesGpa: number;
  /** The tables inside `blob`, in placement order, with their absolute GPAs. */
  tables: AcpiTable[];
}

function badOption(field: string, message: string, actual: string): FormatError {
  return new FormatError('ERR_ACPI_VALUE', `acpi: ${message}`, { format: 'acpi', field, actual });
}

export function buildX86AcpiTables(opts: X86AcpiOptions): X86AcpiTables {
  const { tablesGpa, rsdpGpa, pmBase, sci } = opts;
  const apicIds = opts.apicIds ?? Array.from({ length: opts.vcpus }, (_, i) => i);
  if (apicIds.length !== opts.vcpus) {
    throw badOption('apicIds', `apicIds has ${apicIds.length} entries but vcpus is ${opts.vcpus}`, String(apicIds.length));
  }
  if (tablesGpa % FACS_ALIGNMENT !== 0) throw badOption('tablesGpa', `tablesGpa ${hex(tablesGpa)} is not 64-byte aligned as the facs requires`, hex(tablesGpa));
  if (rsdpGpa % 16 !== 0) throw badOption('rsdpGpa', `rsdpGpa ${hex(rsdpGpa)} is not on the 16-byte boundary the rsdp scan checks`, hex(rsdpGpa));
  // The SCI is an ISA IRQ with its own override; 0 and 2 are taken by the PIT and the cascade.
  if (!Number.isInteger(sci) || sci < 1 || sci > 15 || sci === 2) throw badOption('sci', `sci irq ${sci} must be an isa irq in 1..15 other than 2`, String(sci));

  const tables: AcpiTable[] = [];
  let next = tablesGpa;
  const place = (signature: string, bytes: Uint8Array): number => {
    const gpa = next;
    tables.push({ signature, gpa, bytes });
    next = alignUp(gpa + bytes.length, TABLE_ALIGNMENT);
    return gpa;
  };

  // The FACS goes first because tablesGpa is the only address we know is 64-byte aligned.
  const facsGpa = place('FACS', encodeFacs());
  const dsdtGpa = place(
    'DSDT',
    encodeDsdt({ vcpus: opts.vcpus, serialPorts: opts.serialPorts, virtioMmio: opts.virtioMmio ?? [], rtc: opts.rtc }),
  );
  const fadtGpa = place('FACP', encodeFadt({ dsdtGpa, facsGpa, pmBase, sci, cmosRtc: opts.rtc !== null }));
  const madtGpa = place(
    'APIC',
    encodeMadt({
      apicIds,
      ioApicId: opts.ioApic.id,
      ioApicAddress: opts.ioApic.address,
      ioApicGsiBase: opts.ioApic.gsiBase,
      overrides: [
        { source: opts.pit.irq, gsi: opts.pit.gsi, flags: MPS_INTI.CONFORMS },
        // Our PM device drives the SCI level-triggered and active-high; without this
        // override Linux would assume the ACPI default of level/active-low.
        { source: sci, gsi: sci, flags: MPS_INTI.LEVEL | MPS_INTI.ACTIVE_HIGH },
      ],
      nmiLint: opts.nmiLint,
      pcatCompat: opts.legacyPic ?? true,
    }),
  );
  const xsdtGpa = place('XSDT', encodeXsdt([fadtGpa, madtGpa]));

  const blob = new Uint8Array(next - tablesGpa);
  for (const t of tables) blob.set(t.bytes, t.gpa - tablesGpa);
  checkUint(tablesGpa + blob.length, 32, 'acpi tables end');
  if (rsdpGpa < tablesGpa + blob.length && tablesGpa < rsdpGpa + RSDP_SIZE) {
    throw badOption('rsdpGpa', `rsdp at ${hex(rsdpGpa)} overlaps the tables at ${hex(tablesGpa)}-${hex(tablesGpa + blob.length - 1)}`, hex(rsdpGpa));
  }
  return { rsdp: encodeRsdp(xsdtGpa), rsdpGpa, blob, tablesGpa, tables };
}
