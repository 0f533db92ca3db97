import test from 'ava';
import * as L from '../../../lib/arch/aarch64/layout';
import { ConfigError } from '../../../lib/errors';

test('redistributors for the maximum cpu count end exactly at the distributor', (t) => {
  const r = L.gicRedistributorRange(L.GIC_MAX_CPUS);
  t.is(r.start + r.size, L.GIC_DIST_START);
  t.throws(() => L.gicRedistributorRange(L.GIC_MAX_CPUS + 1), { instanceOf: ConfigError });
  t.throws(() => L.gicRedistributorRange(0), { instanceOf: ConfigError });
});

test('no device overlaps another or ram, and all sit inside the mmio gap', (t) => {
  const redist = L.gicRedistributorRange(L.GIC_MAX_CPUS);
  const regions = [
    { name: 'dist', start: L.GIC_DIST_START, size: L.GIC_DIST_SIZE },
    { name: 'redist', start: redist.start, size: redist.size },
    { name: 'uart0', start: L.PL011_0_START, size: L.PL011_SIZE },
    { name: 'uart1', start: L.PL011_1_START, size: L.PL011_SIZE },
    { name: 'virtio', start: L.VIRTIO_MMIO_START, size: L.VIRTIO_MMIO_LAST + 1 - L.VIRTIO_MMIO_START },
  ];
  for (const a of regions) {
    t.true(a.start >= L.MMIO_LOW_START && a.start + a.size <= L.MMIO_LOW_START + L.MMIO_LOW_SIZE, a.name);
    for (const b of regions) if (a !== b) t.true(a.start + a.size <= b.start || b.start + b.size <= a.start, `${a.name} / ${b.name}`);
  }
  t.is(L.GIC_DIST_START % 0x10000, 0);
  t.is(L.GIC_REDIST_START % 0x10000, 0);
});

test('virtio-mmio slots have one SPI each, none shared with a uart, all within the vGIC default SPIs', (t) => {
  t.is(L.VIRTIO_MMIO_SPIS.length, L.VIRTIO_MMIO_SLOT_COUNT);
  const spis = [L.PL011_0_SPI, L.PL011_1_SPI, ...L.VIRTIO_MMIO_SPIS];
  t.is(new Set(spis).size, spis.length);
  for (const s of spis) t.true(s >= 0 && s < L.KVM_DEFAULT_SPI_COUNT, `spi ${s}`);
  t.is(L.VIRTIO_MMIO_START % L.VIRTIO_MMIO_SLOT_SIZE, 0);
  t.true(L.VIRTIO_MMIO_START >= L.RAM_START + L.RAM_LOW_MAX_SIZE, 'above the largest low ram');
});

test('ram starts at 1 GiB and continues above 4 GiB past the mmio gap', (t) => {
  t.deepEqual(L.arm64RamRanges(256 * 1024 * 1024), [{ gpa: 0x4000_0000, size: 256 * 1024 * 1024 }]);
  t.deepEqual(L.arm64RamRanges(4 * 1024 ** 3), [
    { gpa: 0x4000_0000, size: 2 * 1024 ** 3 },
    { gpa: 0x1_0000_0000, size: 2 * 1024 ** 3 },
  ]);
  t.throws(() => L.arm64RamRanges(1000), { instanceOf: ConfigError });
});

test('kvm default mpidr packs 16 cpus per Aff0 block and sets bit 31', (t) => {
  t.is(L.kvmDefaultMpidr(0), 0x8000_0000n);
  t.is(L.kvmDefaultMpidr(15), 0x8000_000fn);
  t.is(L.kvmDefaultMpidr(16), 0x8000_0100n);
  t.is(L.kvmDefaultMpidr(0x1234), 0x8001_2304n);
});
