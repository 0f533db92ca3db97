import test from 'ava';
import { ARM64_BOOT_PSTATE, loadLinuxDirectArm64 } from '../../../lib/arch/aarch64/linux-direct';
import { arm64RamRanges, kvmDefaultMpidr } from '../../../lib/arch/aarch64/layout';
import { findNode, getString, getU64, parseFdt } from '../../../lib/fdt/reader';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { ConfigError, FormatError } from '../../../lib/errors';
import { syntheticImage } from './synthetic-image';
import { decompile } from '../fdt/dtc-tools';
import { testNeeding } from '../../needs';

const dtcTest = testNeeding(['dtc', 'fdtget']);

const MiB = 1024 * 1024;
const RAM = 64 * MiB;

function memory(size = RAM): GuestMemory {
  return GuestMemory.anonymous(arm64RamRanges(size));
}

const cpus = (n: number) => Array.from({ length: n }, (_, i) => kvmDefaultMpidr(i));

test('without an initrd the kernel sits at RAM+16 MiB and the DTB on the page after image_size', (t) => {
  const mem = memory();
  const kernel = syntheticImage({ imageSize: 0x20000n, fileSize: 0x3000 });
  const r = loadLinuxDirectArm64(mem, { kernel, cmdline: 'console=ttyAMA0', cpuMpidrs: cpus(1), memoryBytes: RAM });
  t.is(r.kernelGpa, 0x4100_0000);
  t.is(r.entry, 0x4100_0000);
  t.is(r.kernelSize, 0x20000);
  t.is(r.dtbGpa, 0x4102_0000);
  t.is(r.initrdRange, undefined);
  t.deepEqual(mem.read(r.kernelGpa, kernel.length), kernel);
  // The tail of image_size beyond the file (BSS) reads as zero.
  t.deepEqual(mem.read(r.kernelGpa + kernel.length, 16), new Uint8Array(16));
});

dtcTest('with an initrd: initrd at RAM+16 MiB, kernel at the next 2 MiB boundary plus text_offset', (t) => {
  const mem = memory();
  const initrd = new Uint8Array(3 * MiB + 5).fill(0x5a);
  const kernel = syntheticImage({ textOffset: 0x80000n, imageSize: 0x10_0000n });
  const r = loadLinuxDirectArm64(mem, { kernel, initrd, cmdline: 'rdinit=/init', cpuMpidrs: cpus(2), memoryBytes: RAM });
  t.deepEqual(r.initrdRange, { start: 0x4100_0000, end: 0x4100_0000 + initrd.length });
  t.is(r.kernelGpa, 0x4140_0000 + 0x80000);
  t.is(r.dtbGpa, r.kernelGpa + 0x10_0000);
  t.deepEqual(mem.read(0x4100_0000, initrd.length), initrd);

  const dtb = mem.read(r.dtbGpa, r.dtbSize);
  t.is(decompile(dtb).stderr, '');
  const chosen = findNode(parseFdt(dtb).root, '/chosen')!;
  t.is(getString(chosen, 'bootargs'), 'rdinit=/init');
  t.is(getU64(chosen, 'linux,initrd-start'), 0x4100_0000n);
  t.is(getU64(chosen, 'linux,initrd-end'), BigInt(0x4100_0000 + initrd.length));
});

test('boot registers: pc is the entry, x0 the DTB, PSTATE EL1h with DAIF masked', (t) => {
  const r = loadLinuxDirectArm64(memory(), { kernel: syntheticImage(), cmdline: '', cpuMpidrs: cpus(4), memoryBytes: RAM });
  t.is(r.bootRegs.pc, BigInt(r.entry));
  t.is(r.bootRegs.x0, BigInt(r.dtbGpa));
  t.is(r.bootRegs.pstate, ARM64_BOOT_PSTATE);
  t.is(ARM64_BOOT_PSTATE & 0xfn, 0b0101n); // M[3:0] = EL1h
  t.is((ARM64_BOOT_PSTATE >> 6n) & 0xfn, 0xfn); // F, I, A, D
  t.is(r.dtbGpa % 8, 0); // booting.rst: 8-byte aligned
});

test('an initrd too big for ram is a ConfigError naming the shortfall', (t) => {
  const e = t.throws(
    () => loadLinuxDirectArm64(memory(32 * MiB), { kernel: syntheticImage(), initrd: new Uint8Array(15 * MiB), cmdline: '', cpuMpidrs: cpus(1), memoryBytes: 32 * MiB }),
    { instanceOf: ConfigError },
  );
  t.regex(e?.message ?? '', /ram below the mmio gap ends at 0x42000000/);
});

test('memory that does not map the layout ram is a ConfigError', (t) => {
  t.throws(() => loadLinuxDirectArm64(memory(32 * MiB), { kernel: syntheticImage(), cmdline: '', cpuMpidrs: cpus(1), memoryBytes: RAM }), { instanceOf: ConfigError });
});

test('a gzip kernel is refused before anything is written', (t) => {
  const mem = memory();
  const gz = new Uint8Array(4096);
  gz.set([0x1f, 0x8b, 8]);
  const e = t.throws(() => loadLinuxDirectArm64(mem, { kernel: gz, initrd: new Uint8Array(8).fill(1), cmdline: '', cpuMpidrs: cpus(1), memoryBytes: RAM }), { instanceOf: FormatError });
  t.is(e?.code, 'ERR_ARM64_IMAGE_GZIP');
  t.deepEqual(mem.read(0x4100_0000, 8), new Uint8Array(8));
});
