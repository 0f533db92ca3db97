/**
 * The device tree an x86 host hands to an IGVM image through the
 * DEVICE_TREE parameter: the shape OpenVMM gives OpenHCL (openvmm-facts §3.4)
 * minus what a KVM host does not have (VMBus): CPUs by APIC ID, memory
 * nodes with their IGVM memory-map type, the command line, the COM1 port on
 * an x86 PIO bus, and an `/openhcl` node saying the host allocated the
 * memory, with 64 bytes of entropy. Pure: values in, DTB bytes out.
 * Two parts follow OpenHCL's reading of the tree rather than dtc's lint:
 * the entropy bytes sit in a property named `reg`, and the PIO serial port
 * has `interrupts` without an interrupt parent (an ISA IRQ number).
 */
import { FdtWriter } from '../../fdt/writer';
import type { IgvmMemoryMapEntry } from './load';

export interface IgvmHostDeviceTreeOptions {
  /** APIC ID of each vCPU, in vCPU order; the first is the boot CPU. */
  apicIds: readonly number[];
  memory: readonly IgvmMemoryMapEntry[];
  /** Omitted: /chosen has no bootargs (the image keeps its own command line). */
  bootargs?: string;
  /** Legacy serial ports the guest may use, by I/O port and ISA IRQ. */
  serial?: readonly { port: number; irq: number }[];
  /** 64 random bytes for the guest's early entropy (the caller draws them). */
  entropy: Uint8Array;
}

const cells64 = (v: number): number[] => [Math.floor(v / 2 ** 32), v >>> 0];

export function buildIgvmHostDeviceTree(o: IgvmHostDeviceTreeOptions): Uint8Array {
  const w = new FdtWriter();
  const root = w.beginNode('');
  w.propertyU32('#address-cells', 2);
  w.propertyU32('#size-cells', 2);
  w.propertyString('model', 'nodevmm');

  const cpus = w.beginNode('cpus');
  w.propertyU32('#address-cells', 1);
  w.propertyU32('#size-cells', 0);
  o.apicIds.forEach((apicId) => {
    const cpu = w.beginNode(`cpu@${apicId.toString(16)}`);
    w.propertyString('device_type', 'cpu');
    w.propertyU32('reg', apicId);
    w.propertyU32('numa-node-id', 0);
    w.propertyString('status', 'okay');
    w.endNode(cpu);
  });
  w.endNode(cpus);

  // Sorted by address (OpenVMM emits them in reverse, so consumers sort anyway).
  for (const m of [...o.memory].sort((a, b) => a.gpa - b.gpa)) {
    const mem = w.beginNode(`memory@${m.gpa.toString(16)}`);
    w.propertyString('device_type', 'memory');
    w.propertyCells('reg', [...cells64(m.gpa), ...cells64(m.size)]);
    w.propertyU32('microsoft,igvm-type', m.type);
    w.propertyU32('numa-node-id', 0);
    w.endNode(mem);
  }

  if (o.serial?.length) {
    const pio = w.beginNode('pio-bus');
    w.propertyStringList('compatible', ['x86-pio-bus']);
    w.propertyU32('#address-cells', 1);
    w.propertyU32('#size-cells', 1);
    for (const s of o.serial) {
      const uart = w.beginNode(`serial@${s.port.toString(16)}`);
      w.propertyStringList('compatible', ['ns16550']);
      w.propertyCells('reg', [s.port, 8]);
      w.propertyCells('interrupts', [s.irq]);
      w.propertyU32('current-speed', 115200);
      w.propertyU32('clock-frequency', 0);
      w.endNode(uart);
    }
    w.endNode(pio);
  }

  const chosen = w.beginNode('chosen');
  if (o.bootargs !== undefined) w.propertyString('bootargs', o.bootargs);
  w.endNode(chosen);

  const openhcl = w.beginNode('openhcl');
  w.propertyString('memory-allocation-mode', 'host');
  const entropy = w.beginNode('entropy');
  w.property('reg', o.entropy);
  w.endNode(entropy);
  w.endNode(openhcl);

  w.endNode(root);
  return w.finish({ bootCpuId: o.apicIds[0] ?? 0 });
}
