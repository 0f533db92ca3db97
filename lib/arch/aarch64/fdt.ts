/**
 * The device tree an arm64 Linux Direct guest boots with: CPUs (reg = the
 * MPIDR affinity KVM gives each vCPU, PSCI enable method, all usable), PSCI,
 * one /memory node per RAM range, GICv3, the architected timer with all four
 * PPIs, PL011 UARTs with their clock, virtio-mmio slots, and /chosen
 * (bootargs, initrd, a stdout-path that resolves). Values in, DTB bytes out;
 * no placement here.
 * Bindings: Devicetree spec v0.4 §3 (root, /cpus, /memory, /chosen, /aliases);
 * Linux bindings arm/cpus.yaml, arm/psci.yaml, interrupt-controller/arm,gic-v3.yaml,
 * timer/arm,arch_timer.yaml, serial/pl011.yaml, clock/fixed-clock.yaml,
 * virtio/mmio.yaml.
 */
import { ConfigError } from '../../errors';
import { FdtWriter } from '../../fdt/writer';
import { hex } from '../../util/bytes';
import {
  GIC_DIST_SIZE,
  GIC_DIST_START,
  MPIDR_AFFINITY_MASK,
  PL011_0_SPI,
  PL011_0_START,
  PL011_1_SPI,
  PL011_1_START,
  PL011_SIZE,
  PL061_SIZE,
  PL061_SPI,
  PL061_START,
  POWER_KEY_PIN,
  TIMER_PPI_HYP,
  TIMER_PPI_NONSECURE_PHYS,
  TIMER_PPI_SECURE_PHYS,
  TIMER_PPI_VIRT,
  UART_CLOCK_HZ,
  gicRedistributorRange,
  type RamRange,
} from './layout';

/** First cell of a GIC interrupt specifier (arm,gic-v3.yaml). */
const GIC_SPI = 0;
const GIC_PPI = 1;
/** Third cell: Linux IRQ_TYPE_* values (include/dt-bindings/interrupt-controller/irq.h). */
const IRQ_TYPE_EDGE_RISING = 1;
const IRQ_TYPE_LEVEL_HIGH = 4;
const IRQ_TYPE_LEVEL_LOW = 8;
/** arm64 COMMAND_LINE_SIZE, NUL included (arch/arm64/include/uapi/asm/setup.h). */
export const ARM64_CMDLINE_MAX = 2048;
/**
 * PL011 r1p4 peripheral ID (as QEMU presents it). Giving it in the DT spares
 * Linux's AMBA bus from probing the ID registers at 0xfe0-0xffc, so the UART
 * binds even if the device model leaves those registers at zero.
 */
const PL011_PERIPHID = 0x0014_1011;
/** PL061 r1p1 peripheral ID (as QEMU presents it), for the same reason. */
const PL061_PERIPHID = 0x0014_1061;
/** KEY_POWER (include/uapi/linux/input-event-codes.h). */
const KEY_POWER = 116;
/** gpio.h flag cell: GPIO_ACTIVE_HIGH. */
const GPIO_ACTIVE_HIGH = 0;

/** A PL061 GPIO controller whose pin `powerKeyPin` is a power key (gpio-keys, KEY_POWER). */
export interface Arm64PowerKeyGpio {
  base: number;
  spi: number;
  powerKeyPin: number;
}

export interface Arm64Uart {
  /** GPA of the 4 KiB register page. */
  base: number;
  /** SPI number (INTID - 32). */
  spi: number;
}

/** One virtio-mmio slot (virtio/mmio.yaml); always edge-triggered, see docs/virtio.md "Transport". */
export interface Arm64VirtioMmio {
  /** GPA of the slot's register window. */
  base: number;
  size: number;
  /** SPI number (INTID - 32). */
  spi: number;
}

export interface Arm64Gic {
  distBase: number;
  distSize: number;
  redistBase: number;
  redistSize: number;
}

/** Timer PPI numbers (INTID - 16), in the binding's order. */
export interface Arm64TimerPpis {
  securePhys: number;
  nonSecurePhys: number;
  virt: number;
  hyp: number;
}

export interface Arm64DeviceTreeOptions {
  /** MPIDR_EL1 of each vCPU as KVM reports it; index 0 is the boot CPU. */
  cpuMpidrs: readonly bigint[];
  memory: readonly RamRange[];
  cmdline: string;
  initrd?: { start: number; end: number };
  /** The first UART is the console (`stdout-path`, alias serial0). */
  uarts: readonly Arm64Uart[];
  gic: Arm64Gic;
  timer: Arm64TimerPpis;
  /** virtio-mmio slots, one node each, in slot order. */
  virtioMmio?: readonly Arm64VirtioMmio[];
  /** The GPIO controller with the power key; none: the guest has no power key (shut it down through PSCI). */
  powerKey?: Arm64PowerKeyGpio;
  /** KVM implements PSCI 1.x; '0.2' is what OpenVMM advertises. Either way `method = "hvc"`. */
  psciVersion: '0.2' | '1.0';
  uartClockHz?: number;
}

/** The fixed devices of layout.ts, shaped for buildArm64DeviceTree. */
export function arm64DefaultDevices(cpuCount: number): Pick<Arm64DeviceTreeOptions, 'uarts' | 'gic' | 'timer' | 'powerKey'> {
  const redist = gicRedistributorRange(cpuCount);
  return {
    powerKey: { base: PL061_START, spi: PL061_SPI, powerKeyPin: POWER_KEY_PIN },
    uarts: [
      { base: PL011_0_START, spi: PL011_0_SPI },
      { base: PL011_1_START, spi: PL011_1_SPI },
    ],
    gic: { distBase: GIC_DIST_START, distSize: GIC_DIST_SIZE, redistBase: redist.start, redistSize: redist.size },
    timer: { securePhys: TIMER_PPI_SECURE_PHYS, nonSecurePhys: TIMER_PPI_NONSECURE_PHYS, virt: TIMER_PPI_VIRT, hyp: TIMER_PPI_HYP },
  };
}

/** Splits a 64-bit value into two cells, high first, as `#address-cells = 2` needs. */
function cells64(v: number | bigint): [number, number] {
  const b = BigInt(v);
  return [Number((b >> 32n) & 0xffff_ffffn), Number(b & 0xffff_ffffn)];
}

function pl011Name(u: Arm64Uart): string {
  return `pl011@${u.base.toString(16)}`;
}

function validate(o: Arm64DeviceTreeOptions): void {
  const issues: { path: string; message: string }[] = [];
  if (o.cpuMpidrs.length === 0) issues.push({ path: 'cpuMpidrs', message: 'at least one cpu is required' });
  const seen = new Set<bigint>();
  o.cpuMpidrs.forEach((m, i) => {
    const aff = m & MPIDR_AFFINITY_MASK;
    if (seen.has(aff)) issues.push({ path: `cpuMpidrs[${i}]`, message: `mpidr ${hex(m)} has the same affinity ${hex(aff)} as an earlier cpu` });
    seen.add(aff);
  });
  if (o.memory.length === 0) issues.push({ path: 'memory', message: 'at least one ram range is required' });
  const cmdlineBytes = new TextEncoder().encode(o.cmdline).length;
  if (cmdlineBytes + 1 > ARM64_CMDLINE_MAX) issues.push({ path: 'cmdline', message: `cmdline is ${cmdlineBytes} bytes; arm64 kernels keep at most ${ARM64_CMDLINE_MAX - 1}` });
  if (o.initrd && !(o.initrd.end >= o.initrd.start)) issues.push({ path: 'initrd', message: `initrd end ${hex(o.initrd.end)} is below its start ${hex(o.initrd.start)}` });
  if (o.uarts.length === 0) issues.push({ path: 'uarts', message: 'at least one uart is required for the console' });
  // Two devices on one SPI would share an edge neither driver can tell apart; two nodes on one
  // address would give the same registers to two drivers.
  const spiOwners = new Map<number, string>(o.uarts.map((u) => [u.spi, `uart ${hex(u.base)}`]));
  if (o.powerKey) {
    if (spiOwners.has(o.powerKey.spi)) issues.push({ path: 'powerKey.spi', message: `spi ${o.powerKey.spi} is already the interrupt of the ${spiOwners.get(o.powerKey.spi)}` });
    if (!Number.isInteger(o.powerKey.powerKeyPin) || o.powerKey.powerKeyPin < 0 || o.powerKey.powerKeyPin > 7) issues.push({ path: 'powerKey.powerKeyPin', message: `pin ${o.powerKey.powerKeyPin} must be 0 to 7 (a PL061 has eight)` });
    spiOwners.set(o.powerKey.spi, `gpio ${hex(o.powerKey.base)}`);
  }
  const bases = new Set<number>();
  (o.virtioMmio ?? []).forEach((v, i) => {
    const path = `virtioMmio[${i}]`;
    if (!(v.size > 0)) issues.push({ path: `${path}.size`, message: `virtio-mmio slot size ${v.size} must be positive` });
    if (bases.has(v.base)) issues.push({ path: `${path}.base`, message: `virtio-mmio slot base ${hex(v.base)} is used by an earlier slot` });
    bases.add(v.base);
    const owner = spiOwners.get(v.spi);
    if (owner !== undefined) issues.push({ path: `${path}.spi`, message: `spi ${v.spi} is already the interrupt of the ${owner}` });
    spiOwners.set(v.spi, `virtio-mmio slot ${hex(v.base)}`);
  });
  if (issues.length > 0) throw new ConfigError(issues);
}

/** Builds the DTB; throws ConfigError for impossible inputs (no CPUs, duplicate MPIDRs...). */
export function buildArm64DeviceTree(o: Arm64DeviceTreeOptions): Uint8Array {
  validate(o);
  const w = new FdtWriter();
  const gicPhandle = w.allocPhandle();
  const clockPhandle = w.allocPhandle();
  const console = o.uarts[0]!; // validate() guarantees one

  const root = w.beginNode('');
  w.propertyU32('#address-cells', 2);
  w.propertyU32('#size-cells', 2);
  // arm64 Linux has no board files, so compatible only names the machine.
  // "linux,dummy-virt" is the documented string for a generic virtual
  // platform described entirely by its DT (QEMU's -M virt uses it too).
  w.propertyStringList('compatible', ['linux,dummy-virt']);
  w.propertyString('model', 'nodevmm');
  w.propertyU32('interrupt-parent', gicPhandle);

  const chosen = w.beginNode('chosen');
  w.propertyString('bootargs', o.cmdline);
  // A full path, not an alias with options, so tools (fdtget) can follow it.
  w.propertyString('stdout-path', `/${pl011Name(console)}`);
  if (o.initrd) {
    w.propertyU64('linux,initrd-start', o.initrd.start);
    w.propertyU64('linux,initrd-end', o.initrd.end);
  }
  w.endNode(chosen);

  const aliases = w.beginNode('aliases');
  o.uarts.forEach((u, i) => w.propertyString(`serial${i}`, `/${pl011Name(u)}`));
  w.endNode(aliases);

  writeCpus(w, o.cpuMpidrs);

  const psci = w.beginNode('psci');
  w.propertyStringList('compatible', o.psciVersion === '1.0' ? ['arm,psci-1.0', 'arm,psci-0.2'] : ['arm,psci-0.2']);
  w.propertyString('method', 'hvc');
  w.endNode(psci);

  for (const r of o.memory) {
    const mem = w.beginNode(`memory@${r.gpa.toString(16)}`);
    w.propertyString('device_type', 'memory');
    w.propertyCells('reg', [...cells64(r.gpa), ...cells64(r.size)]);
    w.endNode(mem);
  }

  const clk = w.beginNode('apb-pclk');
  w.propertyString('compatible', 'fixed-clock');
  w.propertyU32('#clock-cells', 0);
  w.propertyU32('clock-frequency', o.uartClockHz ?? UART_CLOCK_HZ);
  w.propertyString('clock-output-names', 'clk24mhz');
  w.propertyPhandle(clockPhandle);
  w.endNode(clk);

  const gic = w.beginNode(`intc@${o.gic.distBase.toString(16)}`);
  w.propertyString('compatible', 'arm,gic-v3');
  w.propertyU32('#interrupt-cells', 3);
  // #address-cells/#size-cells/ranges would matter only for an ITS child;
  // dtc still expects #address-cells on every interrupt provider.
  w.propertyU32('#address-cells', 2);
  w.propertyU32('#size-cells', 2);
  w.propertyNull('ranges');
  w.propertyNull('interrupt-controller');
  w.propertyCells('reg', [...cells64(o.gic.distBase), ...cells64(o.gic.distSize), ...cells64(o.gic.redistBase), ...cells64(o.gic.redistSize)]);
  w.propertyPhandle(gicPhandle);
  w.endNode(gic);

  const timer = w.beginNode('timer');
  w.propertyString('compatible', 'arm,armv8-timer');
  // Binding order: secure phys, non-secure phys, virtual, hypervisor. With
  // GICv3 the flags cell carries no CPU mask; the timers are level-low.
  w.propertyCells('interrupts', [o.timer.securePhys, o.timer.nonSecurePhys, o.timer.virt, o.timer.hyp].flatMap((ppi) => [GIC_PPI, ppi, IRQ_TYPE_LEVEL_LOW]));
  w.propertyNull('always-on');
  w.endNode(timer);

  for (const u of o.uarts) {
    const n = w.beginNode(pl011Name(u));
    w.propertyStringList('compatible', ['arm,pl011', 'arm,primecell']);
    w.propertyCells('reg', [...cells64(u.base), ...cells64(PL011_SIZE)]);
    w.propertyCells('interrupts', [GIC_SPI, u.spi, IRQ_TYPE_LEVEL_HIGH]);
    // pl011.yaml: "uartclk" drives the baud generator, "apb_pclk" the bus.
    w.propertyCells('clocks', [clockPhandle, clockPhandle]);
    w.propertyStringList('clock-names', ['uartclk', 'apb_pclk']);
    w.propertyU32('arm,primecell-periphid', PL011_PERIPHID);
    w.endNode(n);
  }

  if (o.powerKey) writePowerKey(w, o.powerKey, clockPhandle);

  for (const v of o.virtioMmio ?? []) {
    const n = w.beginNode(`virtio_mmio@${v.base.toString(16)}`);
    w.propertyString('compatible', 'virtio,mmio');
    w.propertyCells('reg', [...cells64(v.base), ...cells64(v.size)]);
    // Edge: each raise is one KVM_IRQ_LINE pulse, and the vCPU threads answer
    // InterruptACK without telling JS, so nothing could lower a level line.
    w.propertyCells('interrupts', [GIC_SPI, v.spi, IRQ_TYPE_EDGE_RISING]);
    // KVM guest RAM is ordinary cacheable host memory: the device sees the
    // guest's cached writes, so the guest needs no cache maintenance for DMA.
    w.propertyNull('dma-coherent');
    w.endNode(n);
  }

  w.endNode(root);
  const bootAff = o.cpuMpidrs[0]! & MPIDR_AFFINITY_MASK;
  return w.finish({ bootCpuId: Number(bootAff & 0xffff_ffffn) });
}

/**
 * The PL061 (gpio/pl061-gpio.yaml) and a gpio-keys node on it
 * (input/gpio-keys.yaml) whose one key is KEY_POWER, as QEMU's virt machine
 * describes its power button. The input device is named "gpio-keys".
 */
function writePowerKey(w: FdtWriter, g: Arm64PowerKeyGpio, clockPhandle: number): void {
  const gpioPhandle = w.allocPhandle();
  const n = w.beginNode(`pl061@${g.base.toString(16)}`);
  w.propertyStringList('compatible', ['arm,pl061', 'arm,primecell']);
  w.propertyCells('reg', [...cells64(g.base), ...cells64(PL061_SIZE)]);
  w.propertyCells('interrupts', [GIC_SPI, g.spi, IRQ_TYPE_LEVEL_HIGH]);
  w.propertyNull('gpio-controller');
  w.propertyU32('#gpio-cells', 2);
  w.propertyCells('clocks', [clockPhandle]);
  w.propertyStringList('clock-names', ['apb_pclk']);
  w.propertyU32('arm,primecell-periphid', PL061_PERIPHID);
  w.propertyPhandle(gpioPhandle);
  w.endNode(n);
  const keys = w.beginNode('gpio-keys');
  w.propertyString('compatible', 'gpio-keys');
  const key = w.beginNode('poweroff');
  w.propertyString('label', 'GPIO Key Poweroff');
  w.propertyU32('linux,code', KEY_POWER);
  w.propertyCells('gpios', [gpioPhandle, g.powerKeyPin, GPIO_ACTIVE_HIGH]);
  w.endNode(key);
  w.endNode(keys);
}

/**
 * cpus.yaml: `reg` is MPIDR_EL1 affinity; one cell (Aff2..Aff0) unless some
 * CPU has a non-zero Aff3, then two cells. No `status`: every CPU is usable
 * and comes up through PSCI CPU_ON (OpenVMM marks secondaries "disabled",
 * which makes Linux skip them).
 */
function writeCpus(w: FdtWriter, mpidrs: readonly bigint[]): void {
  const affs = mpidrs.map((m) => m & MPIDR_AFFINITY_MASK);
  const twoCells = affs.some((a) => a > 0xff_ffffn);
  const cpus = w.beginNode('cpus');
  w.propertyU32('#address-cells', twoCells ? 2 : 1);
  w.propertyU32('#size-cells', 0);
  for (const aff of affs) {
    const cpu = w.beginNode(`cpu@${aff.toString(16)}`);
    w.propertyString('device_type', 'cpu');
    w.propertyString('compatible', 'arm,armv8');
    w.propertyCells('reg', twoCells ? cells64(aff) : [Number(aff)]);
    w.propertyString('enable-method', 'psci');
    w.endNode(cpu);
  }
  w.endNode(cpus);
}
