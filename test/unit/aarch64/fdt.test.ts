import test from 'ava';
import { arm64DefaultDevices, buildArm64DeviceTree, type Arm64DeviceTreeOptions, type Arm64VirtioMmio } from '../../../lib/arch/aarch64/fdt';
import { arm64RamRanges, kvmDefaultMpidr, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_SPIS, VIRTIO_MMIO_START } from '../../../lib/arch/aarch64/layout';
import { findNode, getCells, getString, getStringList, getU32, parseFdt } from '../../../lib/fdt/reader';
import { ConfigError } from '../../../lib/errors';
import { decompile, fdtget, fdtlist } from '../fdt/dtc-tools';
import { testNeeding } from '../../needs';

const dtcTest = testNeeding(['dtc', 'fdtget']);

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
  dtcTest(`a ${cpus}-cpu tree decompiles with dtc without a single warning`, (t) => {
    const r = decompile(buildArm64DeviceTree(options(cpus)));
    t.is(r.status, 0);
    t.is(r.stderr, '');
    t.regex(r.stdout, /compatible = "arm,gic-v3"/);
  });

  dtcTest(`fdtget reads back bootargs, initrd and the ${cpus} cpu reg values`, (t) => {
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

dtcTest('stdout-path resolves to the console pl011 node', (t) => {
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

dtcTest('a cpu with a non-zero Aff3 switches /cpus to two address cells', (t) => {
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

dtcTest('each ram range gets its own memory node', (t) => {
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

/** The slots Arm64LinuxVm asks for: the layout's first `n` windows and SPIs. */
function virtioSlotsOf(n: number): Arm64VirtioMmio[] {
  return Array.from({ length: n }, (_, i) => ({ base: VIRTIO_MMIO_START + i * VIRTIO_MMIO_SLOT_SIZE, size: VIRTIO_MMIO_SLOT_SIZE, spi: VIRTIO_MMIO_SPIS[i]! }));
}

for (const slots of [1, 8]) {
  dtcTest(`a tree with ${slots} virtio-mmio slot(s) decompiles with dtc without a single warning`, (t) => {
    const r = decompile(buildArm64DeviceTree(options(2, { virtioMmio: virtioSlotsOf(slots) })));
    t.is(r.status, 0);
    t.is(r.stderr, '');
    t.is(r.stdout.match(/compatible = "virtio,mmio"/g)?.length, slots);
  });
}

dtcTest('fdtget reads back compatible, reg, an edge-rising SPI and dma-coherent for every virtio slot', (t) => {
  const blob = buildArm64DeviceTree(options(1, { virtioMmio: virtioSlotsOf(3) }));
  t.deepEqual(
    fdtlist(blob, '/').filter((n) => n.startsWith('virtio_mmio@')),
    ['virtio_mmio@c0000000', 'virtio_mmio@c0001000', 'virtio_mmio@c0002000'],
  );
  for (let i = 0; i < 3; i++) {
    const node = `/virtio_mmio@${(0xc000_0000 + i * 0x1000).toString(16)}`;
    t.is(fdtget(blob, node, 'compatible', 's'), 'virtio,mmio');
    t.is(fdtget(blob, node, 'reg', 'x'), `0 ${(0xc000_0000 + i * 0x1000).toString(16)} 0 1000`);
    // GIC_SPI (0), SPI 16 + i, IRQ_TYPE_EDGE_RISING (1).
    t.is(fdtget(blob, node, 'interrupts', 'u'), `0 ${16 + i} 1`);
    // fdtget prints an empty property as an empty line; a missing one is an error.
    t.is(fdtget(blob, node, 'dma-coherent'), '');
  }
});

dtcTest('without virtio slots the tree has no virtio node', (t) => {
  t.false(fdtlist(buildArm64DeviceTree(options(1)), '/').some((n) => n.startsWith('virtio_mmio')));
});

test('a virtio slot on a uart SPI, a repeated base or an empty window is a ConfigError naming each', (t) => {
  const e = t.throws(
    () =>
      buildArm64DeviceTree(
        options(1, {
          virtioMmio: [
            { base: 0xc000_0000, size: 0x1000, spi: 1 },
            { base: 0xc000_0000, size: 0x1000, spi: 16 },
            { base: 0xc000_1000, size: 0, spi: 16 },
          ],
        }),
      ),
    { instanceOf: ConfigError },
  );
  t.deepEqual(e?.issues.map((i) => i.path), ['virtioMmio[0].spi', 'virtioMmio[1].base', 'virtioMmio[2].size', 'virtioMmio[2].spi']);
  t.is(e?.issues[0]?.message, 'spi 1 is already the interrupt of the uart 0xeffec000');
  t.is(e?.issues[3]?.message, 'spi 16 is already the interrupt of the virtio-mmio slot 0xc0000000');
});

test('the power key: a PL061 on SPI 3 and a gpio-keys KEY_POWER on its pin 3, as QEMU virt has it', (t) => {
  const root = parseFdt(buildArm64DeviceTree(options(1))).root;
  const gpio = findNode(root, '/pl061@effea000')!;
  t.deepEqual(getStringList(gpio, 'compatible'), ['arm,pl061', 'arm,primecell']);
  t.deepEqual(getCells(gpio, 'reg'), [0, 0xeffea000, 0, 0x1000]);
  t.deepEqual(getCells(gpio, 'interrupts'), [0, 3, 4]);
  t.true(gpio.props.has('gpio-controller'));
  t.is(getU32(gpio, '#gpio-cells'), 2);
  const key = findNode(root, '/gpio-keys/poweroff')!;
  t.is(getString(findNode(root, '/gpio-keys')!, 'compatible'), 'gpio-keys');
  t.is(getU32(key, 'linux,code'), 116);
  t.deepEqual(getCells(key, 'gpios'), [getU32(gpio, 'phandle')!, 3, 0]);
});

test('a power key on a uart SPI is a ConfigError; no power key leaves both nodes out', (t) => {
  const e = t.throws(() => buildArm64DeviceTree(options(1, { powerKey: { base: 0xeffea000, spi: 1, powerKeyPin: 9 } })), { instanceOf: ConfigError });
  t.deepEqual(e?.issues.map((i) => i.path), ['powerKey.spi', 'powerKey.powerKeyPin']);
  const { powerKey: _, ...rest } = options(1);
  const root = parseFdt(buildArm64DeviceTree(rest)).root;
  t.is(findNode(root, '/pl061@effea000'), undefined);
  t.is(findNode(root, '/gpio-keys'), undefined);
});
