/**
 * lib/cli/module-bundle.ts: a bundle runs its modules as require() would
 * (same instances in require.cache, own file names in stack traces, lazy
 * requires, files outside the bundle), is refused once any bundled file
 * changed, and its code cache is written, accepted by the next process and
 * survives being corrupted. Each load runs in a fresh process: require.cache
 * would otherwise answer from the first one.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeModuleBundle } from '../../../lib/cli/module-bundle';
import { tempDir } from '../../temp-dir';

const MODULE_BUNDLE = path.resolve(__dirname, '../../../lib/cli/module-bundle.js');

/** A small compiled-looking tree: a.js → b.js eagerly, sub/c.js lazily, ../data.json from outside the bundle's folder. */
function fixture(t: { teardown(f: () => void): void }): { root: string; bundle: string; cacheDir: string } {
  const dir = tempDir(t, 'nodevmm-bundle-test-');
  const root = path.join(dir, 'lib');
  fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'data.json'), '{"answer":42}');
  fs.writeFileSync(
    path.join(root, 'a.js'),
    [
      '"use strict";',
      'const b = require("./b");',
      'exports.b = b;',
      'exports.lazy = () => require("./sub/c").name;',
      'exports.json = () => require("../data.json").answer;',
      'exports.where = () => [__filename, __dirname];',
      'exports.fail = () => { throw new Error("from a"); };',
      '',
    ].join('\n'),
  );
  // Non-ASCII in a comment, a string, a template and a regular expression (the bundle stores them escaped).
  fs.writeFileSync(path.join(root, 'b.js'), '"use strict";\n// naïve → comment\nexports.name = "b";\nexports.path = require("node:path").sep;\nexports.text = ["naïve → 😀", `—${1}`, /^[→—]+$/u.test("→—")];\n');
  fs.writeFileSync(path.join(root, 'sub', 'c.js'), '"use strict";\nexports.name = "c:" + require("../b").name;\n');
  const bundle = path.join(root, 'test.bundle');
  writeModuleBundle(path.join(root, 'a.js'), bundle);
  return { root, bundle, cacheDir: path.join(dir, 'cache') };
}

/** Loads the bundle in a fresh node, runs `body` (with `bundle` in scope, or undefined), prints its JSON result. */
function inChild(bundle: string, cacheDir: string | undefined, body: string, verify = true): any {
  const src = `
    const { loadModuleBundle } = require(${JSON.stringify(MODULE_BUNDLE)});
    const bundle = loadModuleBundle(${JSON.stringify(bundle)}, { cacheDir: ${JSON.stringify(cacheDir)}, verify: ${verify} });
    const out = (() => { ${body} })();
    process.stdout.write(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['-e', src], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

test('bundled modules behave as required ones: one instance per file, lazy and outside requires, own names', (t) => {
  const { root, bundle } = fixture(t);
  const r = inChild(
    bundle,
    undefined,
    `const a = bundle.exports;
     let stack = ''; try { a.fail(); } catch (e) { stack = e.stack; }
     return {
       sameB: require(${JSON.stringify(path.join(root, 'b.js'))}) === a.b,
       sameA: require(${JSON.stringify(path.join(root, 'a.js'))}) === a,
       b: a.b.name, sep: a.b.path, text: a.b.text, lazy: a.lazy(), json: a.json(), where: a.where(), stack, compiled: bundle.compiled,
     };`,
  );
  t.true(r.sameB, 'a plain require() of a bundled file returns the bundled instance');
  t.true(r.sameA);
  t.is(r.b, 'b');
  t.is(r.sep, '/');
  t.deepEqual(r.text, ['naïve → 😀', '—1', true]);
  t.is(r.lazy, 'c:b');
  t.is(r.json, 42);
  t.deepEqual(r.where, [path.join(root, 'a.js'), root]);
  t.regex(r.stack, new RegExp(`at .*${path.join(root, 'a.js').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:7:`), 'the frame names the original file and line');
  t.deepEqual(r.compiled, { modules: 3, fromCache: 0 });
});

test('a bundle is not used once a bundled file changed, nor when it is missing or not a bundle', (t) => {
  const { root, bundle } = fixture(t);
  t.true(inChild(bundle, undefined, 'return bundle !== undefined;'));
  fs.writeFileSync(path.join(root, 'sub', 'c.js'), '"use strict";\nexports.name = "c2";\n');
  t.false(inChild(bundle, undefined, 'return bundle !== undefined;'), 'a changed lazy module refuses the bundle');
  t.true(inChild(bundle, undefined, 'return bundle !== undefined;', false), 'verify: false skips the check (an installed package)');
  t.false(inChild(path.join(root, 'missing.bundle'), undefined, 'return bundle !== undefined;'));
  fs.writeFileSync(path.join(root, 'junk.bundle'), 'not a bundle\n');
  t.false(inChild(path.join(root, 'junk.bundle'), undefined, 'return bundle !== undefined;'));
});

test('the code cache is written once, accepted by the next process, and replaced when corrupt', (t) => {
  const { bundle, cacheDir } = fixture(t);
  const run = (complete: boolean) =>
    inChild(bundle, cacheDir, `bundle.exports.lazy(); const c = { ...bundle.compiled }; bundle.saveCodeCache(${complete}); return c;`);
  t.deepEqual(run(false), { modules: 3, fromCache: 0 });
  const files = fs.readdirSync(cacheDir);
  t.is(files.length, 1);
  const file = path.join(cacheDir, files[0]!);
  t.deepEqual(run(false), { modules: 3, fromCache: 3 });
  const before = fs.statSync(file).mtimeMs;
  t.deepEqual(run(false), { modules: 3, fromCache: 3 });
  t.is(fs.statSync(file).mtimeMs, before, 'an up-to-date cache is not rewritten');
  // A cache from an incomplete run is replaced by the first complete one, once.
  run(true);
  t.not(fs.statSync(file).mtimeMs, before);
  const complete = fs.statSync(file).mtimeMs;
  run(true);
  t.is(fs.statSync(file).mtimeMs, complete);
  // Garbage in the cache: the bundle still loads, compiles without it, and writes a good one.
  fs.writeFileSync(file, Buffer.alloc(64, 0xff));
  t.deepEqual(run(false), { modules: 3, fromCache: 0 });
  t.deepEqual(run(false), { modules: 3, fromCache: 3 });
  t.deepEqual(fs.readdirSync(cacheDir), files, 'no temporary files are left behind');
});
