/**
 * The Differentiated System Description Table for the Linux Direct PC: the
 * sleep-state packages Linux needs to power off (\_S0, \_S5), and under \_SB
 * the ISA UARTs, the CMOS RTC, one ACPI0007 processor device per vCPU and
 * one LNRO0005 node per virtio-mmio slot. Definitions only: no methods with
 * side effects, no OperationRegions, so the AML never touches hardware.
 * Spec: ACPI 6.5 §5.2.11.1 (DSDT), §7.4.2 (\_Sx), §6.1.5/§6.1.12 (_HID/_UID), §8.4 (ACPI0007).
 */
import { FormatError } from '../errors';
import * as aml from './aml';
import { io, irqNoFlags, memory32Fixed, extendedInterrupt, resourceTemplate } from './aml-resources';
import { checkUint } from './checks';
import { encodeSdt } from './sdt';

/** Revision 2 makes AML Integers 64 bits wide (revision 1 truncates them to 32). */
export const DSDT_REVISION = 2;

export interface SerialPortDesc {
  /** Shown to the OS as _DDN ("COM1"); any short ASCII string. */
  name: string;
  port: number;
  /** ISA IRQ, 0-15. */
  irq: number;
}

export interface VirtioMmioDesc {
  base: number;
  size: number;
  /** GSI of the slot's interrupt. */
  irq: number;
  /** Default 'edge', which is what a KVM irqfd delivers without a resample fd. */
  trigger?: 'edge' | 'level';
}

export interface DsdtOptions {
  /** Processor devices get _UID 0..vcpus-1, the UIDs the MADT gives the local APICs. */
  vcpus: number;
  serialPorts: readonly SerialPortDesc[];
  virtioMmio: readonly VirtioMmioDesc[];
  /** The CMOS RTC's port and ISA IRQ; null when there is none. */
  rtc: { port: number; irq: number } | null;
}

/** Value for PM1_CNT.SLP_TYP: our PM device powers off on SLP_EN with SLP_TYP 0. */
const SLP_TYP_S5 = 0;
const SLP_TYP_S0 = 0;

const UART_PORT_COUNT = 8;
const RTC_PORT_COUNT = 2;

/** prefix + index in upper-case hex, filling the 4-character NameSeg ("C" + "00A" for vCPU 10). */
function indexedName(prefix: string, index: number): string {
  const digits = 4 - prefix.length;
  if (index >= 16 ** digits) {
    throw new FormatError('ERR_ACPI_VALUE', `dsdt: too many "${prefix}" devices, index ${index} does not fit ${digits} hex digits`, {
      format: 'acpi',
      field: prefix,
      expected: `< ${16 ** digits}`,
      actual: String(index),
    });
  }
  return prefix + index.toString(16).toUpperCase().padStart(digits, '0');
}

function serialDevice(port: SerialPortDesc, index: number): aml.AmlTerm {
  checkUint(port.port, 16, `serialPorts[${index}].port`);
  return aml.device(indexedName('UAR', index + 1), [
    aml.hid('PNP0501'), // 16550A-compatible COM port
    aml.uid(index + 1),
    aml.name('_DDN', port.name),
    aml.crs(resourceTemplate([io({ min: port.port, length: UART_PORT_COUNT }), irqNoFlags([port.irq])])),
  ]);
}

function rtcDevice(rtc: { port: number; irq: number }): aml.AmlTerm {
  return aml.device('RTC0', [
    aml.hid('PNP0B00'), // AT-compatible CMOS RTC
    aml.crs(resourceTemplate([io({ min: rtc.port, length: RTC_PORT_COUNT }), irqNoFlags([rtc.irq])])),
  ]);
}

function processorDevice(index: number): aml.AmlTerm {
  // Linux's processor driver pairs each ACPI0007 device with the MADT entry of the same UID.
  return aml.device(indexedName('C', index), [aml.hid('ACPI0007'), aml.uid(index), aml.sta()]);
}

function virtioMmioDevice(slot: VirtioMmioDesc, index: number): aml.AmlTerm {
  return aml.device(indexedName('VR', index), [
    aml.hid('LNRO0005'), // the ID Linux's virtio_mmio driver matches in its ACPI table
    aml.uid(index),
    aml.crs(
      resourceTemplate([
        memory32Fixed(slot.base, slot.size),
        extendedInterrupt([slot.irq], { edge: (slot.trigger ?? 'edge') === 'edge' }),
      ]),
    ),
  ]);
}

export function encodeDsdt(opts: DsdtOptions): Uint8Array {
  if (!Number.isInteger(opts.vcpus) || opts.vcpus < 1 || opts.vcpus > 255) {
    throw new FormatError('ERR_ACPI_VALUE', `dsdt: vcpu count ${opts.vcpus} is outside 1..255`, {
      format: 'acpi',
      field: 'vcpus',
      expected: '1..255',
      actual: String(opts.vcpus),
    });
  }
  const sb: aml.AmlTerm[] = [
    ...opts.serialPorts.map(serialDevice),
    ...(opts.rtc ? [rtcDevice(opts.rtc)] : []),
    ...Array.from({ length: opts.vcpus }, (_, i) => processorDevice(i)),
    ...opts.virtioMmio.map(virtioMmioDevice),
  ];
  const body = aml.concat([
    // Package {PM1a SLP_TYP, PM1b SLP_TYP}; there is no PM1b block, so its value is unused.
    aml.name('_S0', aml.pkg([SLP_TYP_S0, SLP_TYP_S0])),
    aml.name('_S5', aml.pkg([SLP_TYP_S5, SLP_TYP_S5])),
    aml.scope('\\_SB', sb),
  ]);
  return encodeSdt({ signature: 'DSDT', revision: DSDT_REVISION }, body);
}
