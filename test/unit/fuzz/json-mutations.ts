/**
 * Random mutations of JSON data, for fuzzing what reads saved state back:
 * values replaced by other types, boundary and out-of-range numbers, fields
 * dropped or added, base64 of other lengths, arrays grown, strings cut.
 */
import type { Rng } from './prng';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every path to a value in `v` (objects and arrays included). */
function paths(v: Json, at: Array<string | number> = [], out: Array<Array<string | number>> = []): Array<Array<string | number>> {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...at, i], out));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) paths(x, [...at, k], out);
  return out;
}

function get(v: Json, path: ReadonlyArray<string | number>): Json {
  let cur: Json = v;
  for (const k of path) cur = (cur as Record<string | number, Json>)[k]!;
  return cur;
}

function set(root: Json, path: ReadonlyArray<string | number>, value: Json | undefined): Json {
  if (path.length === 0) return value === undefined ? null : value;
  const parent = get(root, path.slice(0, -1)) as Record<string | number, Json>;
  const k = path[path.length - 1]!;
  if (value === undefined) {
    if (Array.isArray(parent)) parent.splice(k as number, 1);
    else delete parent[k];
  } else parent[k] = value;
  return root;
}

function randomValue(rnd: Rng, old: Json): Json | undefined {
  const n = typeof old === 'number' ? old : 0;
  switch (rnd.int(16)) {
    case 0:
      return undefined; // drop the field
    case 1:
      return null;
    case 2:
      return rnd.pick([true, false]);
    case 3:
      return rnd.pick(['', 'x', '0x', '0xzz', 'AAAA', '====', 'A'.repeat(rnd.int(5000)), '0x' + 'f'.repeat(17), String(n)]);
    case 4:
      return rnd.pick([-1, 0.5, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 53), 1e300, Number.MAX_VALUE]);
    case 5:
      return n + rnd.pick([1, -1, 2, 16, 256, 0x10000]);
    case 6:
      return rnd.int(0x10000);
    case 7:
      return [];
    case 8:
      return Array.from({ length: rnd.int(70) }, () => rnd.int(300));
    case 9:
      return {};
    case 10:
      // Longer (or shorter) base64 of random bytes.
      return Buffer.from(rnd.bytes(rnd.pick([0, 1, 15, 16, 17, 32, 33, 64, 65, 127, 128, 129, 4096, 70000]))).toString('base64');
    case 11:
      return rnd.pick([0, 1, 3, 12, 1024, 32768, 65535, 65536]); // queue sizes and indices at the edges
    case 12:
      return rnd.pick([0x1000, 0xff_fff0, 0x10_0000, 0x10_0000 - 8, 2 ** 40, 0x4_0002]); // addresses in, at the edge of and outside RAM
    case 13:
      return `0x${rnd.int(2 ** 32).toString(16)}${rnd.int(2 ** 32).toString(16).padStart(8, '0')}`;
    case 14:
      return typeof old === 'string' ? old.slice(0, rnd.int(old.length + 1)) : old;
    default:
      return n ^ (1 << rnd.int(32));
  }
}

/** One to three random changes to a copy of `state`. */
export function mutateJson(state: Json, rnd: Rng): Json {
  let s = JSON.parse(JSON.stringify(state)) as Json;
  const changes = 1 + rnd.int(3);
  for (let i = 0; i < changes; i++) {
    const all = paths(s);
    const path = rnd.pick(all);
    const old = get(s, path);
    if (rnd.chance(0.1) && old && typeof old === 'object' && !Array.isArray(old)) {
      (old as Record<string, Json>)[rnd.pick(['extra', '__proto__', 'constructor', 'rx'])] = rnd.int(9);
      continue;
    }
    if (rnd.chance(0.05) && Array.isArray(old) && old.length) {
      old.push(JSON.parse(JSON.stringify(old[0]!)) as Json);
      continue;
    }
    s = set(s, path, randomValue(rnd, old));
  }
  return s;
}

