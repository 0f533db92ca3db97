import test from 'ava';
import { loadLinuxDirectArm64 } from '../../../lib/arch/aarch64/linux-direct';
import { arm64RamRanges, kvmDefaultMpidr, PL011_0_START } from '../../../lib/arch/aarch64/layout';
import { NodevmmError } from '../../../lib/errors';
import { findNode, getCells, getString, parseFdt } from '../../../lib/fdt/reader';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { ARM64_VIRTIO_PLACEMENT } from '../../../lib/vm/arm64-machine';
import { virtioSlots } from '../../../lib/vm/virtio-devices';
import { syntheticImage } from '../aarch64/synthetic-image';
import { decompile } from '../fdt/dtc-tools';
import { testNeeding } from '../../needs';

const dtcTest = testNeeding(['dtc', 'fdtget']);

const RAM = 64 * 1024 * 1024;

test('arm64 slots sit at the bottom of the mmio gap, 4 KiB apart, on SPIs 16 up, edge-triggered, disks first', (t) => {
  const slots = virtioSlots({ disks: [{ path: 'a' }, { path: 'b', readonly: true }], rng: true, virtioConsole: true }, ARM64_VIRTIO_PLACEMENT);
  t.deepEqual(slots.map((s) => s.device.kind), ['blk', 'blk', 'rng', 'console']);
  t.deepEqual(slots.map((s) => s.base), [0xc000_0000, 0xc000_1000, 0xc000_2000, 0xc000_3000]);
  t.deepEqual(slots.map((s) => s.irq), [16, 17, 18, 19]);
  for (const s of slots) {
    t.is(s.size, 0x1000);
    t.is(s.trigger, 'edge');
    t.true(s.base + s.size <= PL011_0_START);
  }
});

test('nine arm64 virtio devices are refused with the number that fits', (t) => {
  const disks = Array.from({ length: 8 }, (_, i) => ({ path: `d${i}` }));
  const e = t.throws(() => virtioSlots({ disks, rng: true, virtioConsole: false }, ARM64_VIRTIO_PLACEMENT), { instanceOf: NodevmmError });
  t.is(e?.message, '9 virtio devices were asked for, at most 8 fit (one interrupt each)');
});

dtcTest('the loaded device tree has a node for every slot, at the address and SPI the slot list wires', (t) => {
  const slots = virtioSlots({ disks: [{ path: 'a' }], rng: true, virtioConsole: true }, ARM64_VIRTIO_PLACEMENT);
  const mem = GuestMemory.anonymous(arm64RamRanges(RAM));
  const r = loadLinuxDirectArm64(mem, {
    kernel: syntheticImage({ imageSize: 0x20000n, fileSize: 0x3000 }),
    cmdline: 'console=ttyAMA0',
    cpuMpidrs: [kvmDefaultMpidr(0)],
    memoryBytes: RAM,
    virtioMmio: slots.map((s) => ({ base: s.base, size: s.size, spi: s.irq })),
  });
  const dtb = mem.read(r.dtbGpa, r.dtbSize);
  t.is(decompile(dtb).stderr, '');
  const root = parseFdt(dtb).root;
  for (const s of slots) {
    const node = findNode(root, `/virtio_mmio@${s.base.toString(16)}`);
    t.truthy(node, `node for ${s.device.kind}`);
    t.is(getString(node!, 'compatible'), 'virtio,mmio');
    t.deepEqual(getCells(node!, 'reg'), [0, s.base, 0, s.size]);
    t.deepEqual(getCells(node!, 'interrupts'), [0, s.irq, 1]);
  }
});
