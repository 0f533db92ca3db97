/**
 * The irqchip choice from config to machine: validation, the hypervisor's
 * offer, and the MADT that follows it (no 8259 with the userspace irqchip).
 */
import test from 'ava';
import { buildX86AcpiTables } from '../../../lib/acpi/x86-tables';
import { ACPI_PLATFORM } from '../../../lib/arch/x86_64/layout';
import { ConfigError } from '../../../lib/errors';
import { resolveVmConfig } from '../../../lib/vm/config';
import { chooseIrqchip, describeIoapic } from '../../../lib/vm/x86-machine';
import { Ioapic, REDIR_TRIGGER_LEVEL_BIT } from '../../../lib/devices/irqchip/ioapic';

test("irqchip takes 'kernel' or 'userspace' on x86_64, is left unset by default, and is refused elsewhere with the field named", (t) => {
  t.is(resolveVmConfig({ kernel: 'k' }, 'x86_64').irqchip, undefined);
  t.is(resolveVmConfig({ kernel: 'k', irqchip: 'userspace' }, 'x86_64').irqchip, 'userspace');
  t.is(resolveVmConfig({ kernel: 'k', irqchip: 'kernel' }, 'x86_64').irqchip, 'kernel');
  const bad = t.throws(() => resolveVmConfig({ kernel: 'k', irqchip: 'split' as never }, 'x86_64'), { instanceOf: ConfigError });
  t.regex(bad.message, /irqchip: "split" must be 'kernel' or 'userspace'/);
  const arm = t.throws(() => resolveVmConfig({ kernel: 'k', irqchip: 'userspace' }, 'aarch64'), { instanceOf: ConfigError });
  t.regex(arm.message, /irqchip.*x86_64 option/);
});

test("the machine takes the config's irqchip when the hypervisor offers it, its first offer when unset, and one sentence otherwise", (t) => {
  t.is(chooseIrqchip(undefined, ['kernel', 'userspace'], 'kvm'), 'kernel');
  t.is(chooseIrqchip(undefined, ['userspace'], 'whp'), 'userspace');
  t.is(chooseIrqchip('userspace', ['kernel', 'userspace'], 'kvm'), 'userspace');
  t.throws(() => chooseIrqchip('userspace', ['kernel'], 'kvm'), { message: "irqchip 'userspace' is not available on this host's kvm (it offers 'kernel')" });
});

test('the MADT says PCAT_COMPAT (an 8259 pair) only when the machine has one', (t) => {
  const opts = { vcpus: 1, serialPorts: [], ...ACPI_PLATFORM };
  const flags = (legacyPic?: boolean) => {
    const m = buildX86AcpiTables(legacyPic === undefined ? opts : { ...opts, legacyPic }).tables.find((x) => x.signature === 'APIC')!.bytes;
    return new DataView(m.buffer, m.byteOffset).getUint32(40, true);
  };
  t.is(flags(), 1);
  t.is(flags(true), 1);
  t.is(flags(false), 0);
});

test('diagnose names the userspace IOAPIC pins that are asserted, pending, unmasked and awaiting an EOI', (t) => {
  const ioapic = new Ioapic({ id: 0, deliver: () => {} });
  t.is(describeIoapic(ioapic), 'ioapic asserted - pending - unmasked - awaiting-eoi -');
  for (const [index, value] of [[0x10 + 2 * 4, 0x31], [0x10 + 2 * 9, 0x49 | REDIR_TRIGGER_LEVEL_BIT]] as const) {
    ioapic.write(0, 1, index);
    ioapic.write(0x10, 4, value);
  }
  ioapic.setLevel(9, true);
  ioapic.setLevel(12, true); // masked: stays pending
  t.is(describeIoapic(ioapic), 'ioapic asserted 9,12 pending 9,12 unmasked 4:0x31E,9:0x49L awaiting-eoi 9');
});
