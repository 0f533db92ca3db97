import test from 'ava';
import { FormatError, NodevmmError } from '../../../lib/errors';
import { parseIgvm } from '../../../lib/igvm/parse';
import { planIgvmLoad } from '../../../lib/loader/igvm/plan';
import { loadIgvm } from '../../../lib/loader/igvm/load';
import { inspectIgvm } from '../../../lib/igvm/inspect';
import { GuestMemory } from '../../../lib/memory/guest-memory';
import { buildLinuxDirectIgvm } from '../../../lib/loader/igvm/linux-direct';
import { relocatableTestIgvm } from '../../../lib/testing/relocatable-igvm';
import { makeBzImage } from '../loader/fixtures';
import { fixCrc, REAL_FILE_MISSING, realBytes, smallNative } from './helpers';
import { testWhen } from '../../needs';

/** mulberry32: small, seeded, reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const MiB = 2 ** 20;
const CASES_REAL = 2500;
const CASES_OWN = 7500;
const CASES_LINUX_DIRECT = 2000;
const CASES_RELOCATABLE = 2000;
/** A runaway case (a walk the caps should have cut short): its CPU time, far above the ~200 ms the slowest real case takes. */
const PER_CASE_LIMIT_MS = 1500;

// One bounded memory reused by every case: loads either fit it or are refused for missing RAM.
const memory = GuestMemory.anonymous([{ gpa: 0, size: 64 * MiB }, { gpa: 2 ** 30, size: 2 * MiB }, { gpa: 512 * 2 ** 30, size: 16 * MiB }]);
/** The relocatable image's cases also move its region to 1 GiB, so the page-table rebuild sees mutated tables. */
const RELOCATE_TO = 2 ** 30;

type Outcome = 'loaded' | 'refused';

function runCase(bytes: Uint8Array, inspect: boolean, relocate: boolean): Outcome {
  try {
    const f = parseIgvm(bytes);
    if (inspect) inspectIgvm(bytes);
    const plan = planIgvmLoad(f, relocate ? { relocateTo: RELOCATE_TO } : {});
    loadIgvm(memory, f, plan, { vpCount: 1, commandLine: 'x', madt: new Uint8Array(8), srat: new Uint8Array(8), deviceTree: new Uint8Array(8) });
    return 'loaded';
  } catch (e) {
    if (e instanceof FormatError || e instanceof NodevmmError) return 'refused';
    throw e;
  }
}

/** Mutate `b` in place (within `limit` bytes) and return the edits so they can be undone. */
function mutateInPlace(b: Uint8Array, limit: number, rnd: () => number): [number, number][] {
  const undo: [number, number][] = [];
  const set = (i: number, v: number) => {
    undo.push([i, b[i]!]);
    b[i] = v & 0xff;
  };
  const n = 1 + Math.floor(rnd() * 4);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let k = 0; k < n; k++) {
    const i = Math.floor(rnd() * limit);
    const kind = rnd();
    if (kind < 0.4) set(i, b[i]! ^ (1 << Math.floor(rnd() * 8)));
    else if (kind < 0.6) set(i, [0, 0xff, 0x80, 0x01][Math.floor(rnd() * 4)]!);
    else {
      // Header-length or field edit: rewrite an aligned u32 with an edge value.
      const at = (i & ~3) + (rnd() < 0.5 ? 4 : 0);
      if (at + 4 > limit) continue;
      const v = [0, 1, 7, 8, 20, 24, 0xfff, 0x1000, 0x7fffffff, 0x80000000, 0xffffffff, Math.floor(rnd() * 2 ** 32)][Math.floor(rnd() * 12)]!;
      for (let j = 0; j < 4; j++) undo.push([at + j, b[at + j]!]);
      dv.setUint32(at, v >>> 0, true);
    }
  }
  return undo;
}

function fuzz(t: import('ava').ExecutionContext, name: string, base: Uint8Array, cases: number, seed: number, mutateLimit: number, relocate = false): void {
  const rnd = prng(seed);
  const work = base.slice();
  const crcBackup = work.slice(16, 24);
  const counts: Record<Outcome, number> = { loaded: 0, refused: 0 };
  let slowest = 0;
  for (let c = 0; c < cases; c++) {
    const truncate = rnd() < 0.15;
    let input: Uint8Array;
    let undo: [number, number][] = [];
    if (truncate) {
      input = work.subarray(0, Math.floor(rnd() * work.length));
    } else {
      undo = mutateInPlace(work, mutateLimit, rnd);
      // Mostly keep the CRC valid so the deeper checks are reached.
      if (rnd() < 0.8) fixCrc(work);
      input = work;
    }
    // CPU time, not wall time: a loaded machine (CI runs other tiers beside this one) stretches wall time, not work.
    const start = process.cpuUsage();
    let outcome: Outcome;
    try {
      outcome = runCase(input, base.length < 1 * MiB, relocate);
    } catch (e) {
      return t.fail(`${name} case ${c} (seed ${seed}) threw ${(e as Error).name}: ${(e as Error).message}`);
    }
    const used = process.cpuUsage(start);
    slowest = Math.max(slowest, (used.user + used.system) / 1000);
    counts[outcome]++;
    for (let i = undo.length - 1; i >= 0; i--) work[undo[i]![0]] = undo[i]![1];
    work.set(crcBackup, 16);
  }
  t.log(`${name}: ${cases} cases, ${counts.loaded} loaded, ${counts.refused} refused, slowest ${slowest.toFixed(1)} ms of CPU`);
  t.true(slowest < PER_CASE_LIMIT_MS, `slowest case took ${slowest} ms of CPU`);
  t.true(counts.refused > 0);
}

testWhen(REAL_FILE_MISSING)('mutated and truncated copies of the real file load cleanly or fail with a typed error', (t) => {
  const real = realBytes();
  // Mutations target the fixed header, the header section and the first page of file data (the NATIVE context).
  fuzz(t, 'real', real, CASES_REAL, 0x1963, 0x7210 + 0x1000);
});

test('mutated and truncated copies of our own builds load cleanly or fail with a typed error', (t) => {
  const own = smallNative();
  fuzz(t, 'own', own, CASES_OWN, 0xc0c0, own.length);
});

test('mutated and truncated copies of a Linux Direct IGVM build load cleanly or fail with a typed error', (t) => {
  const built = buildLinuxDirectIgvm({ kernel: makeBzImage(), initrd: new Uint8Array(4096).fill(7), cmdline: 'console=ttyS0', memoryBytes: 64 * MiB });
  // The headers and the first pages of data (GDT, page tables, boot_params).
  fuzz(t, 'linux-direct', built.file, CASES_LINUX_DIRECT, 0x11d1, Math.min(built.file.length, 0x4000));
});

test('mutated and truncated copies of the relocatable image, relocated to 1 GiB, load cleanly or fail with a typed error', (t) => {
  const bytes = relocatableTestIgvm('FUZZ\n', { parameters: true });
  fuzz(t, 'relocatable', bytes, CASES_RELOCATABLE, 0x4e10c, bytes.length, true);
});
