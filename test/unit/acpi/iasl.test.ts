/**
 * Cross-checks every table against ACPICA (acpica-tools): iasl must
 * disassemble each one without errors or warnings, the disassembly must
 * recompile to the same bytes, and acpiexec must load FADT + DSDT + MADT +
 * FACS and evaluate our objects. Skipped, with a printed reason, when the
 * tools are missing. Tested against iasl 20200925 (Debian acpica-tools).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildX86AcpiTables, X86AcpiOptions, X86AcpiTables } from '../../../lib/acpi/x86-tables';
import { ACPI_PLATFORM } from '../../../lib/arch/x86_64/layout';
import { encodeSrat } from '../../../lib/acpi/srat';
import { encodeSlit } from '../../../lib/acpi/slit';
import { encodePptt } from '../../../lib/acpi/pptt';
import { testNeeding } from '../../needs';

const iaslTest = testNeeding(['iasl']);
const acpiexecTest = testNeeding(['acpiexec']);

const OPTS: X86AcpiOptions = {
  ...ACPI_PLATFORM,
  vcpus: 3,
  serialPorts: [
    { name: 'COM1', port: 0x3f8, irq: 4 },
    { name: 'COM2', port: 0x2f8, irq: 3 },
    { name: 'COM3', port: 0x3e8, irq: 4 },
    { name: 'COM4', port: 0x2e8, irq: 3 },
  ],
  virtioMmio: [
    { base: 0xfeb00000, size: 0x1000, irq: 5 },
    { base: 0xfeb01000, size: 0x1000, irq: 17, trigger: 'level' },
  ],
};

function run(cmd: string, args: string[], cwd: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return `${r.stdout}\n${r.stderr}`;
}

/** Lines where ACPICA reports a problem; compile summaries ("0 Errors, 0 Warnings") are not problems. */
function problems(output: string): string[] {
  return output.split('\n').filter((l) => /error|warning/i.test(l) && !/\b0 Errors, 0 Warnings\b/.test(l));
}

function withDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'nodevmm-acpi-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function writeTables(dir: string, r: X86AcpiTables): string[] {
  return r.tables.map((t) => {
    const file = `${t.signature.toLowerCase()}.dat`;
    writeFileSync(join(dir, file), t.bytes);
    return file;
  });
}

const count = (s: string, needle: string | RegExp): number => s.split(needle).length - 1;

/**
 * Bytes iasl is entitled to change when it recompiles a disassembly: the header
 * checksum (9), the creator ID and revision (28..35, iasl stamps its own), and
 * End Tag checksums (iasl writes 0 there, which means "valid").
 */
function unexpectedDiffs(ours: Uint8Array, theirs: Uint8Array): number[] {
  const diffs: number[] = [];
  for (let i = 0; i < Math.max(ours.length, theirs.length); i++) {
    if (ours[i] === theirs[i]) continue;
    if (i === 9 || (i >= 28 && i < 36)) continue;
    if (theirs[i] === 0 && ours[i - 1] === 0x79 && theirs[i - 1] === 0x79) continue;
    diffs.push(i);
  }
  return diffs;
}

iaslTest('every table disassembles with iasl -d without errors or warnings', (t) => {
  withDir((dir) => {
    const r = buildX86AcpiTables(OPTS);
    for (const file of writeTables(dir, r)) {
      const out = run('iasl', ['-d', file], dir);
      t.deepEqual(problems(out), [], `${file}:\n${out}`);
      t.regex(out, /valid ACPI table, disassembling/, file);
    }
  });
});

iaslTest('the DSDT disassembly shows the sleep states, COM1-4, the RTC, the processors and virtio-mmio', (t) => {
  withDir((dir) => {
    writeTables(dir, buildX86AcpiTables(OPTS));
    run('iasl', ['-d', 'dsdt.dat'], dir);
    const dsl = readFileSync(join(dir, 'dsdt.dsl'), 'utf8');
    t.regex(dsl, /Name \(_S0, Package \(0x02\)\s*\/\/ _S0_/);
    t.regex(dsl, /Name \(_S5, Package \(0x02\)\s*\/\/ _S5_/);
    t.is(count(dsl, 'EisaId ("PNP0501")'), 4);
    for (const [port, irq] of [['03F8', 4], ['02F8', 3], ['03E8', 4], ['02E8', 3]] as const) {
      t.regex(dsl, new RegExp(`IO \\(Decode16,\\s+0x${port},\\s+// Range Minimum\\s+0x${port},[^)]*0x08,\\s+// Length\\s+\\)\\s+IRQNoFlags \\(\\)\\s+\\{${irq}\\}`));
    }
    t.regex(dsl, /Name \(_DDN, "COM3"\)/);
    t.regex(dsl, /EisaId \("PNP0B00"\)[\s\S]*?0x0070,[\s\S]*?IRQNoFlags \(\)\s+\{8\}/);
    t.is(count(dsl, '"ACPI0007"'), 3);
    t.is(count(dsl, /Return \(0x0F\)/), 3);
    t.is(count(dsl, '"LNRO0005"'), 2);
    t.regex(dsl, /0xFEB00000,\s+\/\/ Address Base[\s\S]*?Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s+\{\s+0x00000005,/);
    t.regex(dsl, /0xFEB01000,\s+\/\/ Address Base[\s\S]*?Interrupt \(ResourceConsumer, Level, ActiveHigh, Exclusive, ,, \)\s+\{\s+0x00000011,/);
  });
});

iaslTest('the MADT, FADT and XSDT disassemblies show the expected fields', (t) => {
  withDir((dir) => {
    const r = buildX86AcpiTables(OPTS);
    writeTables(dir, r);
    run('iasl', ['-d', 'apic.dat', 'facp.dat', 'xsdt.dat'], dir);
    const apic = readFileSync(join(dir, 'apic.dsl'), 'utf8');
    t.is(count(apic, '[Processor Local APIC]'), 3);
    t.is(count(apic, '[I/O APIC]'), 1);
    t.is(count(apic, '[Interrupt Source Override]'), 2);
    t.is(count(apic, '[Local APIC NMI]'), 1);
    t.regex(apic, /Local Apic Address : FEE00000/);
    const facp = readFileSync(join(dir, 'facp.dsl'), 'utf8');
    t.regex(facp, /Revision : 06/);
    t.regex(facp, /SCI Interrupt : 0009/);
    t.regex(facp, /PM1A Event Block Address : 00000400/);
    t.regex(facp, /Control Method Power Button \(V1\) : 0/);
    t.regex(facp, /Reset Register Supported \(V2\) : 1/);
    t.regex(facp, /8042 Present on ports 60\/64 \(V2\) : 0/);
    t.regex(facp, /Address : 0000000000000433/);
    const xsdt = readFileSync(join(dir, 'xsdt.dsl'), 'utf8');
    t.is(count(xsdt, /ACPI Table Address\s+\d+ :/), 2);
  });
});

iaslTest('every disassembly recompiles with iasl to the same bytes', (t) => {
  withDir((dir) => {
    const r = buildX86AcpiTables(OPTS);
    writeTables(dir, r);
    for (const tbl of r.tables) {
      const base = tbl.signature.toLowerCase();
      run('iasl', ['-d', `${base}.dat`], dir);
      // -oa: no AML optimisations, so iasl emits exactly what the source says.
      const out = run('iasl', ['-oa', '-p', `${base}-rt`, `${base}.dsl`], dir);
      t.deepEqual(problems(out), [], `${base}:\n${out}`);
      const again = readFileSync(join(dir, `${base}-rt.aml`));
      t.is(again.length, tbl.bytes.length, base);
      t.deepEqual(unexpectedDiffs(tbl.bytes, again), [], base);
    }
  });
});

iaslTest('all tables disassemble together in one iasl run', (t) => {
  withDir((dir) => {
    const files = writeTables(dir, buildX86AcpiTables(OPTS));
    // -e lets the AML disassembler resolve names defined in other tables, as it would for SSDTs.
    const out = run('iasl', ['-e', 'facp.dat', '-d', ...files], dir);
    t.deepEqual(problems(out), [], out);
    t.is(count(out, /valid ACPI table, disassembling/), files.length);
  });
});

iaslTest('a 200-vCPU DSDT, whose \\_SB scope needs a 3-byte PkgLength, round-trips through iasl', (t) => {
  withDir((dir) => {
    const r = buildX86AcpiTables({ ...OPTS, vcpus: 200 });
    const dsdt = r.tables.find((x) => x.signature === 'DSDT')!.bytes;
    t.true(dsdt.length > 4096);
    writeFileSync(join(dir, 'dsdt.dat'), dsdt);
    t.deepEqual(problems(run('iasl', ['-d', 'dsdt.dat'], dir)), []);
    t.is(count(readFileSync(join(dir, 'dsdt.dsl'), 'utf8'), '"ACPI0007"'), 200);
    t.deepEqual(problems(run('iasl', ['-oa', '-p', 'rt', 'dsdt.dsl'], dir)), []);
    t.deepEqual(unexpectedDiffs(dsdt, readFileSync(join(dir, 'rt.aml'))), []);
  });
});

/** iasl 20200925 cannot disassemble a binary RSDP, so compile one from our field values and compare. */
iaslTest('the RSDP matches the one iasl compiles from the same fields, checksums included', (t) => {
  withDir((dir) => {
    const r = buildX86AcpiTables(OPTS);
    const xsdtGpa = r.tables.find((x) => x.signature === 'XSDT')!.gpa;
    const asl = [
      '[0008]                          Signature : "RSD PTR "',
      '[0001]                           Checksum : 00',
      '[0006]                             Oem ID : "NODVMM"',
      '[0001]                           Revision : 02',
      '[0004]                       RSDT Address : 00000000',
      '[0004]                             Length : 00000024',
      `[0008]                       XSDT Address : ${xsdtGpa.toString(16).toUpperCase().padStart(16, '0')}`,
      '[0001]                  Extended Checksum : 00',
      '[0003]                           Reserved : 000000',
      '',
    ].join('\n');
    writeFileSync(join(dir, 'rsdp.asl'), asl);
    const out = run('iasl', ['rsdp.asl'], dir);
    t.deepEqual(problems(out), [], out);
    t.deepEqual(new Uint8Array(readFileSync(join(dir, 'rsdp.aml'))), r.rsdp);
  });
});

acpiexecTest('acpiexec loads our FADT, DSDT, MADT and FACS without ACPICA warnings and evaluates our objects', (t) => {
  withDir((dir) => {
    writeTables(dir, buildX86AcpiTables(OPTS));
    const out = run(
      'acpiexec',
      ['-b', 'evaluate \\_S5; evaluate \\_SB.C002._STA; evaluate \\_SB.C002._UID; evaluate \\_SB.UAR1._HID', 'facp.dat', 'dsdt.dat', 'apic.dat', 'facs.dat'],
      dir,
    );
    // acpiexec's built-in self tests assume its own FADT (PM2, GPE1) and print "Unexpected AE_...";
    // those are not about our tables. ACPICA's table checks print "Warning"/"Error".
    t.deepEqual(problems(out), [], out);
    t.regex(out, /FACP .* \(v06 NODVMM NVMMFACP/);
    t.regex(out, /Initialized GPE 00 to 0F \[_GPE\] 2 regs on interrupt 0x9 \(SCI\)/);
    t.regex(out, /Evaluation of \\_S5 returned[^\n]*\n\s+\[Package\] Contains 2 Elements:\n\s+\[Integer\] = 0+\n\s+\[Integer\] = 0+\n/);
    t.regex(out, /Evaluation of \\_SB.C002._STA returned[^\n]*\n\s+\[Integer\] = 0+F\n/);
    t.regex(out, /Evaluation of \\_SB.C002._UID returned[^\n]*\n\s+\[Integer\] = 0+2\n/);
    t.regex(out, /Evaluation of \\_SB.UAR1._HID returned[^\n]*\n\s+\[Integer\] = 000000000105D041\n/);
  });
});

acpiexecTest('acpiexec flags a FADT whose block length disagrees with its GAS, so the check above can fail', (t) => {
  withDir((dir) => {
    const r = buildX86AcpiTables(OPTS);
    writeTables(dir, r);
    const facp = new Uint8Array(r.tables.find((x) => x.signature === 'FACP')!.bytes);
    facp[88] = 3; // PM1_EVT_LEN 3 while X_PM1a_EVT_BLK is 32 bits wide
    facp[9] = (facp[9]! + 1) & 0xff; // keep the checksum valid
    writeFileSync(join(dir, 'facp.dat'), facp);
    const out = run('acpiexec', ['-b', 'evaluate \\_S5', 'facp.dat', 'dsdt.dat'], dir);
    t.true(problems(out).some((l) => /length mismatch/i.test(l)), out);
  });
});

/** The tables an IGVM image can ask the host for (lib/vm/igvm-boot.ts) beside the machine's own. */
const TOPOLOGY_TABLES = (): { name: string; bytes: Uint8Array }[] => [
  { name: 'srat', bytes: encodeSrat({ processors: [{ apicId: 0, node: 0 }, { apicId: 1, node: 1 }, { apicId: 0x100, node: 1 }], memory: [{ gpa: 0, size: 0x8000_0000, node: 0 }, { gpa: 0x1_0000_0000, size: 0x4000_0000, node: 1, hotPluggable: true }] }) },
  { name: 'slit', bytes: encodeSlit([[10, 20], [20, 10]]) },
  { name: 'pptt', bytes: encodePptt({ sockets: 2, coresPerSocket: 2, threadsPerCore: 2 }) },
];

iaslTest('SRAT, SLIT and PPTT disassemble without problems, show our entries and recompile to the same bytes', (t) => {
  withDir((dir) => {
    for (const { name, bytes } of TOPOLOGY_TABLES()) {
      writeFileSync(join(dir, `${name}.dat`), bytes);
      const out = run('iasl', ['-d', `${name}.dat`], dir);
      t.deepEqual(problems(out), [], `${name}:\n${out}`);
      const rt = run('iasl', ['-p', `${name}-rt`, `${name}.dsl`], dir);
      t.deepEqual(problems(rt), [], `${name}:\n${rt}`);
      t.deepEqual(unexpectedDiffs(bytes, readFileSync(join(dir, `${name}-rt.aml`))), [], name);
    }
    const srat = readFileSync(join(dir, 'srat.dsl'), 'utf8');
    t.is(count(srat, 'Processor Local APIC/SAPIC Affinity'), 2);
    t.is(count(srat, 'Processor Local x2APIC Affinity'), 1);
    t.is(count(srat, 'Memory Affinity'), 2);
    t.regex(srat, /Base Address : 0000000100000000\s+\[[^\]]*\]\s+Address Length : 0000000040000000/);
    t.regex(srat, /Hot Pluggable : 1/);
    const slit = readFileSync(join(dir, 'slit.dsl'), 'utf8');
    t.regex(slit, /Localities : 0000000000000002/);
    t.regex(slit, /Locality\s+0 : 0A 14/);
    const pptt = readFileSync(join(dir, 'pptt.dsl'), 'utf8');
    t.is(count(pptt, /Subtable Type : 00 \[Processor Hierarchy Node\]/), 2 + 4 + 8);
    t.is(count(pptt, /Node is a leaf : 1/), 8);
  });
});
