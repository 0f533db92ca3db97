/**
 * The boot loaders under mutated images, after the IGVM fuzzer's model:
 * every input loads or fails with a typed error (NodevmmError and its
 * subclasses: FormatError, ConfigError, GuestMemoryError), never anything
 * else. Covered: x86 Linux direct boot of a bzImage and of an ELF vmlinux
 * (PVH note included), arm64 Image, initrd placement, and the cpio writer
 * with hostile names and sizes. Each failure names the seed that replays
 * it (`NODEVMM_FUZZ_SEED=<seed>`).
 */
import test from 'ava';
import { NodevmmError } from '../../../lib/errors';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { ramRangesFor } from '../../../lib/arch/x86_64/layout';
import { loadLinuxDirectX86 } from '../../../lib/loader/linux-direct';
import { placeInitrd } from '../../../lib/loader/initrd';
import { loadLinuxDirectArm64 } from '../../../lib/arch/aarch64/linux-direct';
import { arm64RamRanges, kvmDefaultMpidr } from '../../../lib/arch/aarch64/layout';
import { CpioWriter } from '../../../lib/initramfs/cpio';
import { makeBzImage, makeVmlinux } from '../loader/fixtures';
import { syntheticImage } from '../aarch64/synthetic-image';
import { caseSeed, prng, type Rng } from './prng';

const MiB = 1024 * 1024;
const RAM = 64 * MiB;
const ONLY_SEED = process.env.NODEVMM_FUZZ_SEED ? Number(process.env.NODEVMM_FUZZ_SEED) : undefined;
/** A load copies up to 63 MiB of initrd into guest RAM: bounded, but not by the 50 ms of a device call (the IGVM fuzzer allows 1500). */
const LOAD_LIMIT_MS = 1500;

type Outcome = 'loaded' | 'refused';

const EDGES = [0, 1, 0x7f, 0x80, 0xff, 0x1000, 0xffff, 0x10000, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

/** A mutated copy of `base`: bit flips, edge bytes and u32 edge values in the first `limit` bytes, or a truncation. */
function mutate(base: Uint8Array, limit: number, rnd: Rng): Uint8Array {
  if (rnd.chance(0.1)) return base.slice(0, rnd.int(base.length));
  const b = base.slice();
  const dv = new DataView(b.buffer);
  const n = 1 + rnd.int(4);
  for (let k = 0; k < n; k++) {
    const i = rnd.int(Math.min(limit, b.length));
    const kind = rnd();
    if (kind < 0.4) b[i] = b[i]! ^ (1 << rnd.int(8));
    else if (kind < 0.6) b[i] = rnd.pick([0, 0xff, 0x80, 0x01]);
    else if (i + 4 <= b.length) dv.setUint32(i & ~3, rnd.chance(0.8) ? rnd.pick(EDGES) : rnd.int(2 ** 32), true);
  }
  return b;
}

function randomCmdline(rnd: Rng): string {
  if (rnd.chance(0.7)) return 'console=ttyS0 quiet';
  const len = rnd.pick([0, 1, 255, 2047, 2048, 4096, 70_000]);
  return Array.from({ length: len }, () => String.fromCharCode(rnd.chance(0.9) ? 0x20 + rnd.int(0x5f) : rnd.int(0x100))).join('');
}

/** Initrds are views of one buffer: the cases differ in size, and a fresh 63 MiB per case only costs time. */
const initrdBytes = new Uint8Array(63 * MiB);

function randomInitrd(rnd: Rng): Uint8Array | undefined {
  if (rnd.chance(0.4)) return undefined;
  const size = rnd.chance(0.9) ? rnd.pick([0, 1, 4096, 3 * MiB + 5]) : rnd.pick([40 * MiB, 63 * MiB]);
  return initrdBytes.subarray(0, size);
}

interface Target {
  name: string;
  cases: number;
  seed: number;
  run(rnd: Rng): void;
}

const x86Memory = GuestMemory.anonymous(ramRangesFor(RAM));
const arm64Memory = GuestMemory.anonymous(arm64RamRanges(RAM));
const bzImage = makeBzImage();
const vmlinux = makeVmlinux({ pvh: true });
const arm64Image = syntheticImage({ imageSize: 0x20000n, fileSize: 0x3000 });

const targets: Target[] = [
  {
    name: 'x86 bzImage',
    cases: 1000,
    seed: 0xb2,
    run(rnd) {
      loadLinuxDirectX86(x86Memory, { kernel: mutate(bzImage, 0x400, rnd), initrd: randomInitrd(rnd), cmdline: randomCmdline(rnd), ramRanges: ramRangesFor(RAM) });
    },
  },
  {
    name: 'x86 ELF vmlinux',
    cases: 1000,
    seed: 0xe1f,
    run(rnd) {
      loadLinuxDirectX86(x86Memory, { kernel: mutate(vmlinux, Math.min(vmlinux.length, 0x400), rnd), initrd: randomInitrd(rnd), cmdline: randomCmdline(rnd), ramRanges: ramRangesFor(RAM), protocol: rnd.pick(['auto', 'pvh', 'linux64'] as const) });
    },
  },
  {
    name: 'arm64 Image',
    cases: 1000,
    seed: 0xa64,
    run(rnd) {
      const cpus = Array.from({ length: 1 + rnd.int(4) }, (_, i) => kvmDefaultMpidr(i));
      loadLinuxDirectArm64(arm64Memory, { kernel: mutate(arm64Image, 64, rnd), initrd: randomInitrd(rnd), cmdline: randomCmdline(rnd), cpuMpidrs: cpus, memoryBytes: RAM });
    },
  },
  {
    name: 'initrd placement',
    cases: 1000,
    seed: 0x1d,
    run(rnd) {
      const pick = () => (rnd.chance(0.7) ? rnd.int(RAM) : rnd.pick([0, -1, 2 ** 32, 2 ** 53, Number.NaN, 1.5, rnd.int(2 ** 32)]));
      placeInitrd({ kernelEnd: pick(), initrdSize: pick(), initrdAddrMax: pick(), ramRanges: ramRangesFor(RAM) });
    },
  },
  {
    name: 'cpio writer',
    cases: 1000,
    seed: 0xc910,
    run(rnd) {
      const w = new CpioWriter();
      const name = () => rnd.pick(['init', 'bin/sh', '/etc/../x', '', '.', '..', 'a//b', 'x'.repeat(rnd.pick([1, 255, 4096, 70_000])), '\u0000bad', 'dir/']);
      for (let i = 0, n = rnd.int(6); i < n; i++) {
        const k = rnd.int(4);
        if (k === 0) w.addFile(name(), new Uint8Array(rnd.int(4096)), rnd.chance(0.8) ? 0o755 : rnd.int(2 ** 32));
        else if (k === 1) w.addDir(name(), rnd.chance(0.8) ? 0o755 : rnd.int(2 ** 32));
        else if (k === 2) w.addSymlink(name(), name());
        else w.addDevice(name(), rnd.pick(['c', 'b'] as const), rnd.chance(0.8) ? rnd.int(256) : rnd.pick([-1, 2 ** 32, 1.5]), rnd.int(256));
      }
      w.finish();
    },
  },
];

for (const target of targets) {
  test(`${target.name}: every mutated input loads or fails with a typed error`, (t) => {
    const seeds = ONLY_SEED !== undefined ? [ONLY_SEED] : Array.from({ length: target.cases }, (_, i) => caseSeed(target.seed, i));
    const counts: Record<Outcome, number> = { loaded: 0, refused: 0 };
    let slowest = 0;
    for (const seed of seeds) {
      const start = performance.now();
      try {
        target.run(prng(seed));
        counts.loaded++;
      } catch (e) {
        if (!(e instanceof NodevmmError)) return t.fail(`${target.name}: case with seed ${seed} (replay: NODEVMM_FUZZ_SEED=${seed}) threw ${(e as Error)?.name}: ${(e as Error)?.message}`);
        counts.refused++;
      }
      slowest = Math.max(slowest, performance.now() - start);
    }
    t.log(`${target.name}: ${seeds.length} cases, ${counts.loaded} loaded, ${counts.refused} refused, slowest ${slowest.toFixed(1)} ms`);
    t.true(slowest < LOAD_LIMIT_MS, `slowest case took ${slowest.toFixed(1)} ms`);
    t.true(counts.refused > 0 || seeds.length === 1);
  });
}
