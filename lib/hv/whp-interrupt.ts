/**
 * An x86 MSI message (what a userspace IOAPIC or a device sends the local
 * APICs) as WHvRequestInterrupt's WHV_INTERRUPT_CONTROL. Pure: no native
 * code, so it is tested on any host. Intel SDM vol. 3 §11.11.1-2 (address:
 * destination ID bits 19:12, destination mode bit 2; data: vector 7:0,
 * delivery mode 10:8, trigger mode 15).
 */
import { NodevmmError } from '../errors';
import { hex } from '../util/bytes';
import type { WhpInterrupt } from './native';
import type { X86MsiMessage } from './partition';

/** The MSI address window: 0xFEE00000-0xFEEFFFFF. */
const MSI_ADDRESS_MASK = 0xfff00000;
const MSI_ADDRESS_BASE = 0xfee00000;
/** WHV_INTERRUPT_TYPE by MSI delivery mode (fixed, lowest priority, SMI, -, NMI, INIT, -, ExtINT). */
const WHP_TYPE_BY_DELIVERY_MODE: Record<number, number> = { 0: 0, 1: 1, 4: 4, 5: 5 };

/** The WHP interrupt an MSI message asks for; throws (one sentence) on one WHP cannot deliver. */
export function whpInterruptFromMsi(msg: X86MsiMessage): WhpInterrupt {
  const address = msg.address >>> 0;
  const data = msg.data >>> 0;
  if ((address & MSI_ADDRESS_MASK) >>> 0 !== MSI_ADDRESS_BASE) {
    throw new NodevmmError('ERR_INVALID_ARG', `msi address ${hex(address)} is outside the local APIC window 0xfee00000-0xfeefffff`);
  }
  const deliveryMode = (data >>> 8) & 7;
  const type = WHP_TYPE_BY_DELIVERY_MODE[deliveryMode];
  if (type === undefined) throw new NodevmmError('ERR_INVALID_ARG', `msi delivery mode ${deliveryMode} (data ${hex(data)}) cannot be requested through WHvRequestInterrupt`);
  return {
    type,
    destinationMode: (address >>> 2) & 1,
    triggerMode: (data >>> 15) & 1,
    destination: (address >>> 12) & 0xff,
    vector: data & 0xff,
  };
}
