/**
 * examples/ are for users to copy: they may require only the package's
 * public entry points (nodevmm, nodevmm/testing), Node built-ins and ava, and
 * every one of those must resolve from the example's own folder (by
 * self-reference inside this checkout, as from node_modules in a user's).
 */
import test from 'ava';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';

const examples = path.resolve(__dirname, '..', '..', '..', '..', 'examples');
const ALLOWED = /^(nodevmm|nodevmm\/testing|ava|node:[a-z_/]+)$/;

for (const name of fs.readdirSync(examples).filter((f) => f.endsWith('.js'))) {
  test(`examples/${name} requires only public entry points, and they resolve`, (t) => {
    const file = path.join(examples, name);
    const source = fs.readFileSync(file, 'utf8');
    const specifiers = [...source.matchAll(/require\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1]!);
    t.true(specifiers.length > 0);
    t.deepEqual(specifiers.filter((s) => !ALLOWED.test(s)), [], `${name} reaches past the public entry points`);
    const req = createRequire(file);
    for (const s of specifiers) t.notThrows(() => req.resolve(s), s);
  });
}
