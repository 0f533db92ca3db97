import test from 'ava';
import { encodeRsdp, RSDP_SIZE } from '../../../lib/acpi/rsdp';
import { encodeFadt, FADT_SIZE } from '../../../lib/acpi/fadt';
import { encodeFacs } from '../../../lib/acpi/facs';
import { encodeMadt, INTERRUPT_SOURCE_OVERRIDE_SIZE, IO_APIC_ENTRY_SIZE, LOCAL_APIC_ENTRY_SIZE } from '../../../lib/acpi/madt';
import { buildX86AcpiTables, X86AcpiOptions } from '../../../lib/acpi/x86-tables';
import { ACPI_PLATFORM } from '../../../lib/arch/x86_64/layout';
import { FormatError } from '../../../lib/errors';

const sum = (b: Uint8Array): number => b.reduce((s, x) => (s + x) & 0xff, 0);
const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
const ascii = (b: Uint8Array, at: number, n: number): string => String.fromCharCode(...b.subarray(at, at + n));

const COMS = [
  { name: 'COM1', port: 0x3f8, irq: 4 },
  { name: 'COM2', port: 0x2f8, irq: 3 },
  { name: 'COM3', port: 0x3e8, irq: 4 },
  { name: 'COM4', port: 0x2e8, irq: 3 },
];
const OPTS: X86AcpiOptions = { vcpus: 4, serialPorts: COMS, virtioMmio: [{ base: 0xfeb00000, size: 0x1000, irq: 5 }], ...ACPI_PLATFORM };

/** Walk MADT interrupt controller structures from offset 44: [type, length, ...]. */
function madtEntries(madt: Uint8Array): { type: number; bytes: Uint8Array }[] {
  const out = [];
  for (let at = 44; at < madt.length; ) {
    const len = madt[at + 1]!;
    out.push({ type: madt[at]!, bytes: madt.subarray(at, at + len) });
    at += len;
  }
  return out;
}

test('the RSDP is 36 bytes, revision 2, with both checksums and no RSDT', (t) => {
  const r = encodeRsdp(0x19320);
  t.is(RSDP_SIZE, 36);
  t.is(r.length, 36);
  t.is(ascii(r, 0, 8), 'RSD PTR ');
  t.is(sum(r.subarray(0, 20)), 0); // checksum: ACPI 1.0 part
  t.is(sum(r), 0); //                 extended checksum: all 36 bytes
  t.is(ascii(r, 9, 6), 'NODVMM');
  t.is(r[15], 2); //                  Revision
  t.is(dv(r).getUint32(16, true), 0); // RsdtAddress
  t.is(dv(r).getUint32(20, true), 36); // Length
  t.is(dv(r).getBigUint64(24, true), 0x19320n); // XsdtAddress
});

test('the FADT is 276 bytes at revision 6 with the PM block, SCI and reset register', (t) => {
  const f = encodeFadt({ dsdtGpa: 0x19040, facsGpa: 0x19000, pmBase: 0x400, sci: 9 });
  const v = dv(f);
  t.is(FADT_SIZE, 276);
  t.is(f.length, 276);
  t.is(v.getUint32(4, true), 276);
  t.is(f[8], 6);
  t.is(sum(f), 0);
  t.is(v.getUint32(36, true), 0x19000); // FIRMWARE_CTRL
  t.is(v.getUint32(40, true), 0x19040); // DSDT
  t.is(v.getUint16(46, true), 9); //       SCI_INT
  t.is(v.getUint32(48, true), 0); //       SMI_CMD: always in ACPI mode
  t.is(v.getUint32(56, true), 0x400); //   PM1a_EVT_BLK
  t.is(v.getUint32(64, true), 0x404); //   PM1a_CNT_BLK
  t.is(v.getUint32(76, true), 0x408); //   PM_TMR_BLK
  t.is(v.getUint32(80, true), 0x40c); //   GPE0_BLK
  t.deepEqual([...f.subarray(88, 93)], [4, 2, 0, 4, 4]); // PM1_EVT_LEN PM1_CNT_LEN PM2_CNT_LEN PM_TMR_LEN GPE0_BLK_LEN
  const flags = v.getUint32(112, true);
  t.is(flags, (1 << 0) | (1 << 2) | (1 << 5) | (1 << 8) | (1 << 10)); // WBINVD PROC_C1 SLP_BUTTON TMR_VAL_EXT RESET_REG_SUP
  t.is(flags & (1 << 4), 0, 'power button is a fixed feature');
  t.is(flags & (1 << 20), 0, 'not hardware-reduced');
  const bootArch = v.getUint16(109, true);
  t.is(bootArch & (1 << 1), 0, 'no 8042');
  t.is(bootArch & (1 << 2), 1 << 2, 'VGA not present');
  t.is(bootArch & (1 << 5), 0, 'CMOS RTC present');
  t.deepEqual([...f.subarray(116, 129)], [1, 8, 0, 1, 0x33, 0x04, 0, 0, 0, 0, 0, 0, /* RESET_VALUE */ 1]);
  t.is(v.getBigUint64(132, true), 0n); // X_FIRMWARE_CTRL must be 0 when FIRMWARE_CTRL is used
  t.is(v.getBigUint64(140, true), 0x19040n); // X_DSDT
  t.deepEqual([...f.subarray(148, 152)], [1, 32, 0, 2]); // X_PM1a_EVT_BLK: I/O, 32 bits, word access
  t.is(v.getBigUint64(152, true), 0x400n);
  t.deepEqual([...f.subarray(172, 176)], [1, 16, 0, 2]); // X_PM1a_CNT_BLK
  t.is(v.getBigUint64(176, true), 0x404n);
  t.deepEqual([...f.subarray(208, 212)], [1, 32, 0, 3]); // X_PM_TMR_BLK: dword access
  t.is(v.getBigUint64(212, true), 0x408n);
  t.deepEqual([...f.subarray(220, 224)], [1, 32, 0, 1]); // X_GPE0_BLK: byte access
  t.is(v.getBigUint64(224, true), 0x40cn);
});

test('the FADT sets CMOS RTC not present only when there is no RTC', (t) => {
  const f = encodeFadt({ dsdtGpa: 0x19040, facsGpa: 0x19000, pmBase: 0x400, sci: 9, cmosRtc: false });
  t.is(dv(f).getUint16(109, true) & (1 << 5), 1 << 5);
});

test('the FADT rejects a DSDT above 4 GiB and a PM block that overflows the port space', (t) => {
  t.throws(() => encodeFadt({ dsdtGpa: 2 ** 32, facsGpa: 0, pmBase: 0x400, sci: 9 }), { instanceOf: FormatError, code: 'ERR_ACPI_VALUE' });
  t.throws(() => encodeFadt({ dsdtGpa: 0, facsGpa: 0, pmBase: 0xffe0, sci: 9 }), { code: 'ERR_ACPI_VALUE' });
});

test('the FACS is 64 bytes with its signature and length', (t) => {
  const f = encodeFacs();
  t.is(f.length, 64);
  t.is(ascii(f, 0, 4), 'FACS');
  t.is(dv(f).getUint32(4, true), 64);
  t.is(f[32], 2); // Version
});

test('MADT entries have the spec sizes and come in the documented order', (t) => {
  t.is(LOCAL_APIC_ENTRY_SIZE, 8);
  t.is(IO_APIC_ENTRY_SIZE, 12);
  t.is(INTERRUPT_SOURCE_OVERRIDE_SIZE, 10);
  const m = buildX86AcpiTables(OPTS).tables.find((x) => x.signature === 'APIC')!.bytes;
  t.is(sum(m), 0);
  t.is(dv(m).getUint32(36, true), 0xfee00000); // Local Interrupt Controller Address
  t.is(dv(m).getUint32(40, true), 1); //          PCAT_COMPAT
  const e = madtEntries(m);
  t.deepEqual(e.map((x) => x.type), [0, 0, 0, 0, 1, 2, 2, 4]);
  // Processor Local APIC: type 0, length 8, UID i, APIC ID i, flags enabled
  e.slice(0, 4).forEach((x, i) => t.deepEqual([...x.bytes], [0, 8, i, i, 1, 0, 0, 0]));
  // I/O APIC: type 1, length 12, id 0, reserved, address 0xFEC00000, GSI base 0
  t.deepEqual([...e[4]!.bytes], [1, 12, 0, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0]);
  // ISO: bus 0 IRQ 0 -> GSI 2, flags conform
  t.deepEqual([...e[5]!.bytes], [2, 10, 0, 0, 2, 0, 0, 0, 0x00, 0x00]);
  // ISO: bus 0 IRQ 9 -> GSI 9, level (0b11 << 2) | active high (0b01)
  t.deepEqual([...e[6]!.bytes], [2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0x00]);
  // Local APIC NMI: all processors, flags conform, LINT1
  t.deepEqual([...e[7]!.bytes], [4, 6, 0xff, 0, 0, 1]);
});

test('MADT takes explicit APIC IDs and rejects IDs that need x2APIC entries', (t) => {
  const m = buildX86AcpiTables({ ...OPTS, vcpus: 2, apicIds: [0, 6] }).tables.find((x) => x.signature === 'APIC')!.bytes;
  t.deepEqual(madtEntries(m).slice(0, 2).map((x) => x.bytes[3]), [0, 6]);
  const base = { ioApicId: 0, ioApicAddress: 0xfec00000, ioApicGsiBase: 0, overrides: [], nmiLint: 1 as const, pcatCompat: true };
  t.throws(() => encodeMadt({ ...base, apicIds: [0, 0xff] }), { instanceOf: FormatError, code: 'ERR_ACPI_VALUE' });
  t.throws(() => encodeMadt({ ...base, apicIds: [] }), { code: 'ERR_ACPI_VALUE' });
});

test('every built table sums to zero and the RSDP checksums hold', (t) => {
  for (const vcpus of [1, 2, 7, 64]) {
    const r = buildX86AcpiTables({ ...OPTS, vcpus });
    for (const tbl of r.tables.filter((x) => x.signature !== 'FACS')) t.is(sum(tbl.bytes), 0, `${tbl.signature} with ${vcpus} vcpus`);
    t.is(sum(r.rsdp.subarray(0, 20)), 0);
    t.is(sum(r.rsdp), 0);
  }
});

test('the blob is contiguous from tablesGpa and every pointer lands on the right signature', (t) => {
  const r = buildX86AcpiTables(OPTS);
  t.is(r.tablesGpa, 0x19000);
  t.is(r.rsdpGpa, 0xe0000);
  const at = (gpa: number | bigint): string => ascii(r.blob, Number(gpa) - r.tablesGpa, 4);
  for (const tbl of r.tables) {
    t.is(tbl.gpa % 8, 0);
    t.deepEqual(r.blob.subarray(tbl.gpa - r.tablesGpa, tbl.gpa - r.tablesGpa + tbl.bytes.length), tbl.bytes);
  }
  const xsdtGpa = dv(r.rsdp).getBigUint64(24, true);
  t.is(at(xsdtGpa), 'XSDT');
  const xsdt = r.tables.find((x) => x.signature === 'XSDT')!.bytes;
  const entries = Array.from({ length: (xsdt.length - 36) / 8 }, (_, i) => dv(xsdt).getBigUint64(36 + 8 * i, true));
  t.deepEqual(entries.map(at), ['FACP', 'APIC']);
  const fadt = r.tables.find((x) => x.signature === 'FACP')!;
  t.is(at(dv(fadt.bytes).getUint32(40, true)), 'DSDT');
  t.is(at(dv(fadt.bytes).getBigUint64(140, true)), 'DSDT');
  const facsGpa = dv(fadt.bytes).getUint32(36, true);
  t.is(at(facsGpa), 'FACS');
  t.is(facsGpa % 64, 0);
});

test('the builder honours the layout addresses and rejects inconsistent ones', (t) => {
  const r = buildX86AcpiTables({ ...OPTS, tablesGpa: 0x80000, rsdpGpa: 0xf0000 });
  t.is(r.tables[0]!.gpa, 0x80000);
  t.is(r.rsdpGpa, 0xf0000);
  const cases: [Partial<X86AcpiOptions>, string][] = [
    [{ apicIds: [0, 1] }, 'apicIds'],
    [{ tablesGpa: 0x19008 }, 'tablesGpa'],
    [{ rsdpGpa: 0xe0004 }, 'rsdpGpa'],
    [{ rsdpGpa: 0x19100 }, 'rsdpGpa'],
    [{ sci: 2 }, 'sci'],
    [{ sci: 16 }, 'sci'],
    [{ tablesGpa: 0xffffff00 }, 'acpi tables end'],
  ];
  for (const [o, field] of cases) {
    const e = t.throws(() => buildX86AcpiTables({ ...OPTS, ...o }), { instanceOf: FormatError, code: 'ERR_ACPI_VALUE' }, JSON.stringify(o));
    t.is(e?.field, field, JSON.stringify(o));
  }
});

test('the PM base and SCI options move the FADT registers and the MADT override together', (t) => {
  const r = buildX86AcpiTables({ ...OPTS, pmBase: 0x600, sci: 10 });
  const f = r.tables.find((x) => x.signature === 'FACP')!.bytes;
  t.is(dv(f).getUint16(46, true), 10);
  t.is(dv(f).getUint32(56, true), 0x600);
  t.is(dv(f).getBigUint64(120, true), 0x633n); // RESET_REG address
  const m = r.tables.find((x) => x.signature === 'APIC')!.bytes;
  const sciIso = madtEntries(m).find((e) => e.type === 2 && e.bytes[3] === 10)!;
  t.deepEqual([...sciIso.bytes.subarray(4)], [10, 0, 0, 0, 0x0d, 0]);
});
