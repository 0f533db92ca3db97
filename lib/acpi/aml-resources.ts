/**
 * Resource descriptors for _CRS: the few a legacy PC device and a
 * virtio-mmio slot need (I/O ports, ISA IRQs, a fixed 32-bit memory window,
 * extended interrupts) and the End Tag that closes a ResourceTemplate.
 * Encoders only; nothing here allocates ports or IRQs (the layout does).
 * Spec: ACPI 6.5 §6.4 (Resource Data Types for ACPI).
 */
import { FormatError } from '../errors';
import { AmlTerm, buffer, concat } from './aml';
import { checkUint } from './checks';
import { checksum8 } from './sdt';

// Small item tags are (name << 3) | length; large items are 0x80 | name (§6.4.2, §6.4.3).
const IRQ_NO_FLAGS_TAG = 0x22; // IRQ descriptor, 2-byte form
const IRQ_TAG = 0x23; // IRQ descriptor, 3-byte form with the information byte
const IO_TAG = 0x47;
const FIXED_IO_TAG = 0x4b;
const END_TAG = 0x79;
const MEMORY32_FIXED_TAG = 0x86;
const EXTENDED_INTERRUPT_TAG = 0x89;

export interface InterruptFlags {
  /** Edge-triggered (true) or level-triggered (false). */
  edge: boolean;
  activeLow?: boolean;
  shared?: boolean;
  wakeCapable?: boolean;
}

function resErr(field: string, message: string, actual: string): FormatError {
  return new FormatError('ERR_AML_RESOURCE', `aml resource: ${message}`, { format: 'aml', field, actual });
}

function isaIrqMask(irqs: readonly number[], field: string): number {
  if (irqs.length === 0) throw resErr(field, 'an irq descriptor needs at least one irq', '[]');
  let mask = 0;
  for (const irq of irqs) {
    if (!Number.isInteger(irq) || irq < 0 || irq > 15) throw resErr(field, `isa irq ${irq} is outside 0..15`, String(irq));
    mask |= 1 << irq;
  }
  return mask;
}

/** IRQNoFlags () {irqs}: ISA IRQs, which means edge-triggered, active-high, exclusive (§6.4.2.1). */
export function irqNoFlags(irqs: readonly number[]): Uint8Array {
  const mask = isaIrqMask(irqs, 'IRQNoFlags');
  return Uint8Array.of(IRQ_NO_FLAGS_TAG, mask & 0xff, mask >> 8);
}

/** IRQ (Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) {irqs} (§6.4.2.1). */
export function irq(irqs: readonly number[], flags: InterruptFlags): Uint8Array {
  const mask = isaIrqMask(irqs, 'IRQ');
  // Information byte: bit 0 mode (1 edge), bit 3 polarity (1 low), bit 4 sharing, bit 5 wake.
  const info = (flags.edge ? 1 : 0) | (flags.activeLow ? 1 << 3 : 0) | (flags.shared ? 1 << 4 : 0) | (flags.wakeCapable ? 1 << 5 : 0);
  return Uint8Array.of(IRQ_TAG, mask & 0xff, mask >> 8, info);
}

export interface IoRange {
  /** Lowest base address the device may be configured to. */
  min: number;
  /** Highest base address; equal to min for a device at a fixed port. */
  max?: number;
  alignment?: number;
  length: number;
  /** Decode16 (true, the default) or Decode10 for devices that decode only 10 address lines. */
  decode16?: boolean;
}

/** IO (Decode16, min, max, alignment, length) (§6.4.2.5). */
export function io(range: IoRange): Uint8Array {
  const max = range.max ?? range.min;
  const alignment = range.alignment ?? 1;
  checkUint(range.min, 16, 'IO min', 'aml');
  checkUint(max, 16, 'IO max', 'aml');
  checkUint(alignment, 8, 'IO alignment', 'aml');
  checkUint(range.length, 8, 'IO length', 'aml');
  if (max < range.min) throw resErr('IO max', `io max 0x${max.toString(16)} is below min 0x${range.min.toString(16)}`, String(max));
  const info = range.decode16 === false ? 0 : 1;
  return Uint8Array.of(IO_TAG, info, range.min & 0xff, range.min >> 8, max & 0xff, max >> 8, alignment, range.length);
}

/** FixedIO (base, length): a 10-bit decoded port range (§6.4.2.6). */
export function fixedIo(base: number, length: number): Uint8Array {
  checkUint(base, 10, 'FixedIO base', 'aml');
  checkUint(length, 8, 'FixedIO length', 'aml');
  return Uint8Array.of(FIXED_IO_TAG, base & 0xff, base >> 8, length);
}

/** Memory32Fixed (ReadWrite|ReadOnly, base, size) (§6.4.3.4). */
export function memory32Fixed(base: number, size: number, writeable = true): Uint8Array {
  checkUint(base, 32, 'Memory32Fixed base', 'aml');
  checkUint(size, 32, 'Memory32Fixed size', 'aml');
  if (base + size > 2 ** 32) throw resErr('Memory32Fixed size', `memory range 0x${base.toString(16)}+0x${size.toString(16)} crosses 4 GiB`, String(size));
  const out = new Uint8Array(12);
  const dv = new DataView(out.buffer);
  out[0] = MEMORY32_FIXED_TAG;
  dv.setUint16(1, 9, true); // length of the data that follows the 3-byte large-item header
  out[3] = writeable ? 1 : 0;
  dv.setUint32(4, base, true);
  dv.setUint32(8, size, true);
  return out;
}

/**
 * Interrupt (ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) {gsis}
 * (§6.4.3.6). Unlike IRQ it names GSIs above 15, which is why virtio-mmio slots use it.
 */
export function extendedInterrupt(gsis: readonly number[], flags: InterruptFlags, consumer = true): Uint8Array {
  if (gsis.length === 0 || gsis.length > 255) throw resErr('Interrupt', `interrupt descriptor lists ${gsis.length} interrupts, expected 1..255`, String(gsis.length));
  for (const g of gsis) checkUint(g, 32, 'Interrupt number', 'aml');
  const out = new Uint8Array(5 + 4 * gsis.length);
  const dv = new DataView(out.buffer);
  out[0] = EXTENDED_INTERRUPT_TAG;
  dv.setUint16(1, 2 + 4 * gsis.length, true);
  // Flags: bit 0 consumer, bit 1 mode (1 edge), bit 2 polarity (1 low), bit 3 sharing, bit 4 wake.
  out[3] =
    (consumer ? 1 : 0) | (flags.edge ? 1 << 1 : 0) | (flags.activeLow ? 1 << 2 : 0) | (flags.shared ? 1 << 3 : 0) | (flags.wakeCapable ? 1 << 4 : 0);
  out[4] = gsis.length;
  gsis.forEach((g, k) => dv.setUint32(5 + 4 * k, g, true));
  return out;
}

export interface ResourceTemplateOptions {
  /**
   * Fill the End Tag checksum (true, default) so the whole template sums to 0,
   * or write 0, which §6.4.2.9 says means "treat the checksum as valid" and is
   * what iasl emits.
   */
  checksum?: boolean;
}

/** ResourceTemplate () {descriptors}: a Buffer holding the descriptors and an End Tag (§6.4.2.9). */
export function resourceTemplate(descriptors: readonly Uint8Array[], opts: ResourceTemplateOptions = {}): AmlTerm {
  const body = concat([...descriptors, Uint8Array.of(END_TAG, 0)]);
  if (opts.checksum !== false) body[body.length - 1] = checksum8(body);
  return buffer(body);
}
