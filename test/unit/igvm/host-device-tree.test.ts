/**
 * The device tree an IGVM image gets from an x86 host (DEVICE_TREE
 * parameter): dtc must read it without a warning, and fdtget must find the
 * CPUs, memory with its IGVM type, the command line, COM1 and the entropy.
 */
import { buildIgvmHostDeviceTree } from '../../../lib/loader/igvm/host-device-tree';
import { MemoryMapEntryType } from '../../../lib/igvm/defs';
import { decompile, fdtget } from '../fdt/dtc-tools';
import { testNeeding } from '../../needs';

const dtcTest = testNeeding(['dtc', 'fdtget']);

const blob = () =>
  buildIgvmHostDeviceTree({
    apicIds: [0, 1, 2],
    memory: [
      { gpa: 0x1_0000_0000, size: 0x4000_0000, type: MemoryMapEntryType.MEMORY },
      { gpa: 0, size: 0x8000_0000, type: MemoryMapEntryType.MEMORY },
      { gpa: 0x80_0000_0000, size: 0x100_0000, type: MemoryMapEntryType.VTL2_PROTECTABLE },
    ],
    bootargs: 'console=ttyS0 quiet',
    serial: [{ port: 0x3f8, irq: 4 }],
    entropy: new Uint8Array(64).fill(0xab),
  });

/** dtc's lint on the two places where we follow OpenHCL's contract (lib/igvm/host-device-tree.ts); nothing else may warn. */
const CONTRACT_WARNINGS = [
  /reg_format\): \/openhcl\/entropy:reg: property has invalid length \(64 bytes\)/,
  /unit_address_vs_reg\): \/openhcl\/entropy:/,
  /avoid_default_addr_size\): \/openhcl\/entropy:/,
  /interrupts_property\): \/pio-bus\/serial@3f8: Missing interrupt-parent/,
  /Failed prerequisite/,
];

dtcTest('dtc reads the host device tree; it warns only about the entropy and ISA-IRQ properties OpenHCL expects', (t) => {
  const r = decompile(blob());
  t.is(r.status, 0, r.stderr);
  const warnings = r.stderr.split('\n').filter((l) => l.trim());
  t.true(warnings.length > 0, 'the lint ran');
  t.deepEqual(warnings.filter((l) => !CONTRACT_WARNINGS.some((re) => re.test(l))), []);
  // Memory nodes come out in address order.
  t.deepEqual([...r.stdout.matchAll(/memory@([0-9a-f]+) \{/g)].map((m) => m[1]), ['0', '100000000', '8000000000']);
});

dtcTest('fdtget finds cpus by APIC ID, memory with its IGVM type, bootargs, COM1 and 64 bytes of entropy', (t) => {
  const b = blob();
  t.is(fdtget(b, '/cpus/cpu@2', 'reg', 'x'), '2');
  t.is(fdtget(b, '/memory@8000000000', 'reg', 'x'), '80 0 0 1000000');
  t.is(fdtget(b, '/memory@8000000000', 'microsoft,igvm-type', 'x'), String(MemoryMapEntryType.VTL2_PROTECTABLE));
  t.is(fdtget(b, '/chosen', 'bootargs', 's'), 'console=ttyS0 quiet');
  t.is(fdtget(b, '/pio-bus/serial@3f8', 'reg', 'x'), '3f8 8');
  t.is(fdtget(b, '/openhcl', 'memory-allocation-mode', 's'), 'host');
  t.is(fdtget(b, '/openhcl/entropy', 'reg', 'bx').split(' ').length, 64);
  t.is(new DataView(b.buffer).getUint32(28, false), 0, 'boot_cpuid_phys is the first APIC ID');
});

dtcTest('without bootargs /chosen stays empty, so the image keeps its own command line', (t) => {
  const b = buildIgvmHostDeviceTree({ apicIds: [0], memory: [{ gpa: 0, size: 0x100000, type: 0 }], entropy: new Uint8Array(64) });
  t.regex(decompile(b).stdout, /chosen \{\s*\};/);
});
