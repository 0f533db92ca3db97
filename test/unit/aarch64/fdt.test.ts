import test from 'ava';
import { arm64DefaultDevices, buildArm64DeviceTree, type Arm64DeviceTreeOptions } from '../../../lib/arch/aarch64/fdt';
import { arm64RamRanges, kvmDefaultMpidr } from '../../../lib/arch/aarch64/layout';
import { findNode, getCells, getString, getStringList, getU32, parseFdt } from '../../../lib/fdt/reader';
import { ConfigError } from '../../../lib/errors';
import { decompile, fdtget, fdtlist } from '../fdt/dtc-tools';

const CMDLINE = 'console=ttyAMA0 earlycon panic=-1 rdinit=/init';

function options(cpus: number, extra: Partial<Arm64DeviceTreeOptions> = {}): Arm64DeviceTreeOptions {
  return {
    cpuMpidrs: Array.from({ length: cpus }, (_, i) => kvmDefaultMpidr(i)),
    memory: arm64RamRanges(512 * 1024 * 1024),
    cmdline: CMDLINE,
    initrd: { start: 0x4100_0000, end: 0x4123_4000 },
    psciVersion: '0.2',
    ...arm64DefaultDevices(cpus),
    ...extra,
  };
}

for (const cpus of [1, 2, 4]) {
  test(`a ${cpus}-cpu tree decompiles with dtc without a single warning`, (t) => {
    const r = decompile(buildArm64DeviceTree(options(cpus)));
    t.is(r.status, 0);
    t.is(r.stderr, '');
    t.regex(r.stdout, /compatible = "arm,gic-v3"/);
  });

  test(`fdtget reads back bootargs, initrd and the ${cpus} cpu reg values`, (t) => {
    const blob = buildArm64DeviceTree(options(cpus));
    t.is(fdtget(blob, '/chosen', 'bootargs', 's'), CMDLINE);
    t.is(fdtget(blob, '/chosen', 'linux,initrd-start', 'x'), '0 41000000');
    t.is(fdtget(blob, '/chosen', 'linux,initrd-end', 'x'), '0 41234000');
    for (let i = 0; i < cpus; i++) {
      t.is(fdtget(blob, `/cpus/cpu@${i}`, 'reg', 'x'), i.toString(16));
      t.is(fdtget(blob, `/cpus/cpu@${i}`, 'enable-method', 's'), 'psci');
    }
    t.deepEqual(fdtlist(blob, '/cpus'), Array.from({ length: cpus }, (_, i) => `cpu@${i}`));
  });
}

test('stdout-path resolves to the console pl011 node', (t) => {
  const blob = buildArm64DeviceTree(options(2));
  const path = fdtget(blob, '/chosen', 'stdout-path', 's');
  t.is(path, '/pl011@effec000');
  t.is(fdtget(blob, path, 'compatible', 's'), 'arm,pl011 arm,primecell');
  t.is(fdtget(blob, path, 'reg', 'x'), '0 effec000 0 1000');
  t.is(fdtget(blob, '/aliases', 'serial0', 's'), path);
});

test('no cpu is disabled: every cpu node lacks status or says okay', (t) => {
  const root = parseFdt(buildArm64DeviceTree(options(4))).root;
  const cpus = findNode(root, '/cpus')!.children;
  t.is(cpus.length, 4);
  for (const c of cpus) t.not(getString(c, 'status') ?? 'okay', 'disabled');
});

test('cpu reg is the MPIDR affinity KVM assigns, beyond 16 cpus too', (t) => {
  const root = parseFdt(buildArm64DeviceTree(options(18))).root;
  // vCPU 16 has Aff1 = 1, Aff0 = 0 under KVM's default MPIDR; bit 31 (RES1) is not part of reg.
  t.is(getU32(findNode(root, '/cpus/cpu@100')!, 'reg'), 0x100);
  t.is(getU32(findNode(root, '/cpus/cpu@101')!, 'reg'), 0x101);
  t.is(findNode(root, '/cpus/cpu@10'), undefined);
});

test('a cpu with a non-zero Aff3 switches /cpus to two address cells', (t) => {
  const blob = buildArm64DeviceTree(options(2, { cpuMpidrs: [0x8000_0000n, 0x1_8000_0001n] }));
  const root = parseFdt(blob).root;
  t.is(getU32(findNode(root, '/cpus')!, '#address-cells'), 2);
  t.deepEqual(getCells(findNode(root, '/cpus/cpu@100000001')!, 'reg'), [1, 1]);
  t.is(decompile(blob).stderr, '');
});

test('gic, timer, psci and uart nodes carry the binding values', (t) => {
  const root = parseFdt(buildArm64DeviceTree(options(4, { psciVersion: '1.0' }))).root;
  const gic = findNode(root, '/intc@ffff0000')!;
  t.deepEqual(getCells(gic, 'reg'), [0, 0xffff0000, 0, 0x10000, 0, 0xefff0000, 0, 4 * 0x20000]);
  t.is(getU32(gic, '#interrupt-cells'), 3);
  t.true(gic.props.has('interrupt-controller'));
  t.is(getU32(root, 'interrupt-parent'), getU32(gic, 'phandle'));
  // secure phys PPI 13, non-secure phys 14, virt 11, hyp 10; all IRQ_TYPE_LEVEL_LOW (8).
  t.deepEqual(getCells(findNode(root, '/timer')!, 'interrupts'), [1, 13, 8, 1, 14, 8, 1, 11, 8, 1, 10, 8]);
  const psci = findNode(root, '/psci')!;
  t.deepEqual(getStringList(psci, 'compatible'), ['arm,psci-1.0', 'arm,psci-0.2']);
  t.is(getString(psci, 'method'), 'hvc');
  const uart1 = findNode(root, '/pl011@effeb000')!;
  t.deepEqual(getCells(uart1, 'interrupts'), [0, 2, 4]);
  const clk = findNode(root, '/apb-pclk')!;
  t.deepEqual(getCells(uart1, 'clocks'), [getU32(clk, 'phandle')!, getU32(clk, 'phandle')!]);
  t.deepEqual(getStringList(uart1, 'clock-names'), ['uartclk', 'apb_pclk']);
  t.is(getU32(clk, 'clock-frequency'), 24_000_000);
});

test('each ram range gets its own memory node', (t) => {
  const blob = buildArm64DeviceTree(options(1, { memory: arm64RamRanges(3 * 1024 * 1024 * 1024) }));
  t.is(fdtget(blob, '/memory@40000000', 'reg', 'x'), '0 40000000 0 80000000');
  t.is(fdtget(blob, '/memory@100000000', 'reg', 'x'), '1 0 0 40000000');
  t.is(decompile(blob).stderr, '');
});

test('without an initrd /chosen has no initrd properties', (t) => {
  const { initrd: _unused, ...rest } = options(1);
  const chosen = findNode(parseFdt(buildArm64DeviceTree(rest)).root, '/chosen')!;
  t.false(chosen.props.has('linux,initrd-start'));
});

test('impossible inputs are ConfigErrors listing every problem', (t) => {
  const e = t.throws(() => buildArm64DeviceTree(options(1, { cpuMpidrs: [0x8000_0001n, 0x1n], memory: [], cmdline: 'x'.repeat(2048), uarts: [] })), { instanceOf: ConfigError });
  t.deepEqual(e?.issues.map((i) => i.path), ['cpuMpidrs[1]', 'memory', 'cmdline', 'uarts']);
});
