import test from 'ava';
import { ConfigError } from '../../../lib/errors';
import { parseRunArgs } from '../../../lib/cli/args';
import { resolveVmConfig } from '../../../lib/vm/config';
import { attachVirtioDevices, virtioSlots, openDisk } from '../../../lib/vm/virtio-devices';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { IoBus } from '../../../lib/hv/io-bus';
import { FakeDriver, RAM } from './driver';
import { IOAPIC_START, MMIO_GAP_START } from '../../../lib/arch/x86_64/layout';
import { buildX86AcpiTables } from '../../../lib/acpi/x86-tables';
import { ACPI_PLATFORM } from '../../../lib/arch/x86_64/layout';

test('slots are 4 KiB apart inside the MMIO gap below the IOAPIC, one edge-triggered GSI each, disks first', (t) => {
  const slots = virtioSlots({ disks: [{ path: 'a' }, { path: 'b' }], rng: true, virtioConsole: true });
  t.deepEqual(slots.map((s) => s.device.kind), ['blk', 'blk', 'rng', 'console']);
  t.deepEqual(slots.map((s) => s.irq), [16, 17, 18, 19]);
  for (const s of slots) {
    t.true(s.base >= MMIO_GAP_START && s.base + s.size <= IOAPIC_START);
    t.is(s.size, 0x1000);
    t.is(s.trigger, 'edge');
  }
  t.is(new Set(slots.map((s) => s.base)).size, 4);
});

test('the DSDT carries one LNRO0005 device per slot', (t) => {
  const slots = virtioSlots({ disks: [{ path: 'a' }], rng: true, virtioConsole: false });
  const acpi = buildX86AcpiTables({ vcpus: 1, serialPorts: [], ...ACPI_PLATFORM, virtioMmio: slots });
  const text = Buffer.from(acpi.blob).toString('latin1');
  t.is(text.split('LNRO0005').length - 1, 2);
});

test('config rejects bad disks and too many devices, naming each field', (t) => {
  const e = t.throws(() => resolveVmConfig({ kernel: 'k', disks: [{ path: '' }, { path: 'x', readonly: 'yes' as never }, 7 as never], rng: 1 as never }), { instanceOf: ConfigError });
  t.deepEqual(e!.issues.map((i) => i.path), ['disks[0].path', 'disks[1].readonly', 'disks[2]', 'rng']);
  const many = Array.from({ length: 8 }, (_, i) => ({ path: `d${i}` }));
  t.throws(() => resolveVmConfig({ kernel: 'k', disks: many, rng: true }), { message: /more than the 8/ });
  const ok = resolveVmConfig({ kernel: 'k', disks: [{ path: 'x' }] });
  t.deepEqual(ok.disks, [{ path: 'x', readonly: false }]);
  t.false(ok.rng);
});

test('--disk PATH[,ro], --rng and --virtio-console become config', (t) => {
  const a = parseRunArgs(['--kernel', 'k', '--disk', 'root.img', '--disk=data.img,ro', '--rng', '--virtio-console']);
  t.deepEqual(a.config.disks, [{ path: 'root.img', readonly: false }, { path: 'data.img', readonly: true }]);
  t.true(a.config.rng);
  t.true(a.config.virtioConsole);
  t.throws(() => parseRunArgs(['--kernel', 'k', '--disk', 'a,rw']), { message: /not PATH, PATH,ro, PATH,snapshot or PATH,overlay=FILE/ });
});

test('openDisk names the file and the reason in one sentence', (t) => {
  t.throws(() => openDisk('/nonexistent/disk.img', false), { message: 'disk image /nonexistent/disk.img does not exist' });
  t.throws(() => openDisk('/tmp', true), { message: 'disk image /tmp is a directory' });
});

test("the virtio console's kicks are MMIO exits (no ioeventfd): Linux spins, interrupts off, until each transmit buffer comes back, and it is back when the QueueNotify write returns", (t) => {
  const cfg = { disks: [], rng: true, virtioConsole: true };
  const slots = virtioSlots(cfg);
  const asked: number[] = [];
  const registered: Array<[number, number]> = [];
  const memory = GuestMemory.anonymous([{ gpa: 0, size: RAM }]);
  const v = attachVirtioDevices({
    cfg,
    slots,
    memory,
    mmio: new IoBus('mmio'),
    irq: () => ({ set: () => {}, pulse: () => {} }),
    queueNotifier: (base) => {
      asked.push(base);
      return (index) => {
        registered.push([base, index]);
        return () => {};
      };
    },
  });
  const rngBase = slots.find((s) => s.device.kind === 'rng')!.base;
  const consoleSlot = slots.findIndex((s) => s.device.kind === 'console');
  t.deepEqual(asked, [rngBase], 'only the rng asks for kicks without exits');
  const d = new FakeDriver(v.transports[consoleSlot]!, {}, memory);
  d.up([64, 64]);
  t.deepEqual(registered.filter(([b]) => b !== rngBase), [], 'no queue of the console registered a notifier');
  const tx = d.queues[1]!;
  const text = new TextEncoder().encode('GUEST-AGENT-READY\n');
  d.offer(tx, d.chain(tx, [{ gpa: d.alloc(text.length, text), len: text.length }]));
  d.kick(tx);
  t.deepEqual(d.takeUsed(tx), [[0, 0]], 'the transmit buffer is used before the kick returns');
  v.dispose();
});
