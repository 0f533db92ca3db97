/**
 * The CLI's modules in one file, loaded with a V8 code cache: what makes
 * `nodevmm run` start fast (docs/benchmarks.md, "CLI start-up").
 *
 * `writeModuleBundle` (run by `npm run build:ts`, scripts/bundle-cli.js)
 * packs the compiled CommonJS tree an entry module reaches through literal
 * relative `require()`s into one file: a header naming each module, its
 * dependencies and the size and mtime of the file it was copied from, then
 * the sources. `loadModuleBundle` runs that tree without Node's per-module
 * resolution (the stat, realpath and package.json walks that cost about a
 * third of requiring the CLI) and compiles each module with cached V8 code
 * from `<cache root>/compile-cache/` (Node 20 has no compile cache of its
 * own; `module.enableCompileCache` arrives in Node 22.1).
 *
 * Each module still runs as its own script under its own file name, so
 * stack traces and `__dirname` read as if it had been required from
 * dist/, and it is entered in require.cache under that name: a later plain
 * `require()` of the same file gets the same instance, never a second copy.
 * A bundle whose files changed since it was written (a `tsc` without the
 * bundle step) is not used: the caller falls back to plain `require()`.
 */
import fs = require('node:fs');
import path = require('node:path');
import vm = require('node:vm');
import Module = require('node:module');

const MAGIC = 'nodevmm-module-bundle 1\n';

interface BundledModule {
  /** Path relative to the bundle's folder, '/'-separated. */
  file: string;
  /** Literal relative require() specifiers → index of the module they name. */
  deps: Record<string, number>;
  /** Size and mtime (ms) of the file when it was bundled. */
  stamp: [number, number];
  /** Where its source lies in the bundle text after the header. */
  at: [number, number];
}

interface BundleHeader {
  /** Content hash: names the code cache, so a cache never outlives its bundle. */
  id: string;
  modules: BundledModule[];
}

/** Modules of a relative require() that resolve to a .js file under `root`. */
function resolveRelative(from: string, spec: string, root: string): string | undefined {
  const p = path.resolve(path.dirname(from), spec);
  for (const c of [p, `${p}.js`, path.join(p, 'index.js')]) {
    if (!c.endsWith('.js') || !c.startsWith(root + path.sep)) continue;
    try {
      if (fs.statSync(c).isFile()) return c;
    } catch {}
  }
  return undefined;
}

/**
 * Packs `entry` and every .js module under the folder of `outFile` that it
 * reaches through literal relative require()s (lazy ones inside functions
 * too) into `outFile`. Returns what went in.
 */
export function writeModuleBundle(entry: string, outFile: string): { modules: number; bytes: number } {
  const root = path.dirname(path.resolve(outFile));
  const files: string[] = [];
  const index = new Map<string, number>();
  const mods: BundledModule[] = [];
  const sources: string[] = [];
  const visit = (file: string): number => {
    const seen = index.get(file);
    if (seen !== undefined) return seen;
    const i = files.length;
    index.set(file, i);
    files.push(file);
    const st = fs.statSync(file);
    // Kept whole, `//# sourceMappingURL=` included: the module runs under its own file name, so the map beside it applies.
    const src = fs.readFileSync(file, 'utf8');
    const mod: BundledModule = { file: path.relative(root, file).split(path.sep).join('/'), deps: {}, stamp: [st.size, st.mtimeMs], at: [0, 0] };
    mods.push(mod);
    sources.push(src);
    for (const m of src.matchAll(/\brequire\(\s*(['"])(\.{1,2}\/[^'"]*)\1\s*\)/g)) {
      const target = resolveRelative(file, m[2]!, root);
      if (target) mod.deps[m[2]!] = visit(target);
    }
    return i;
  };
  const first = path.resolve(entry);
  if (!first.startsWith(root + path.sep)) throw new Error(`module bundle: entry ${entry} is not under ${root}`);
  visit(first);
  let at = 0;
  const bodies = sources.map((src, i) => {
    // Wrapped as Node wraps a CommonJS module (so the loader compiles a slice of the file, no
    // concatenated copy), and ASCII only (so the loader reads it as latin1, ~6x faster than
    // decoding UTF-8 with a few non-ASCII characters in it): \uXXXX means the same code unit in
    // strings, templates, regular expressions, identifiers and comments alike.
    const body = toAscii(`${WRAPPER[0]}${src}${WRAPPER[1]}`);
    mods[i]!.at = [at, body.length];
    at += body.length;
    return body;
  });
  const body = bodies.join('');
  // Build time only: node:crypto stays out of the CLI's start-up.
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  const id = createHash('sha256').update(JSON.stringify(mods)).update(body).digest('hex').slice(0, 20);
  const header: BundleHeader = { id, modules: mods };
  const text = `${MAGIC}${toAscii(JSON.stringify(header))}\n${body}`;
  const tmp = `${outFile}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, outFile);
  return { modules: mods.length, bytes: text.length };
}

/** Node's CommonJS wrapper (lib/internal/modules/cjs/loader.js): the first line keeps its line number. */
const WRAPPER = ['(function (exports, require, module, __filename, __dirname) { ', '\n});'] as const;

function toAscii(s: string): string {
  return s.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export interface LoadedBundle<T> {
  /** The entry module's exports. */
  exports: T;
  /** Modules compiled so far, and how many of them from cached code V8 accepted. */
  readonly compiled: { modules: number; fromCache: number };
  /**
   * Writes the code cache for the next process when this one compiled
   * modules it had no valid cache for, or when `complete` (the caller ran
   * its main path to the end) and the cache on disk came from a run that
   * did not. Never throws; a cache that cannot be written is skipped.
   */
  saveCodeCache(complete: boolean): void;
}

export interface LoadBundleOptions {
  /** Folder for the code cache; none: compile without one. */
  cacheDir?: string | undefined;
  /**
   * Check every bundled file's size and mtime against the bundle's record
   * (default true). Only a checkout can go stale, where tsc may rewrite
   * dist/ without the bundle step; an installed package cannot (and npm
   * pack resets every mtime, so there the record never matches).
   */
  verify?: boolean;
}

/**
 * V8 rejects cached code made under other flags: one cache per set of
 * Node/V8 flags (tests run with --expose-gc), not per `-e` script or preload.
 */
function flagsKey(): string {
  const s = process.execArgv.filter((a) => a.startsWith('--') && !/^--(eval|print|require|import)\b/.test(a)).join(' ');
  let h = 5381;
  for (let i = 0; i < s.length; i++) h = ((h * 33) ^ s.charCodeAt(i)) >>> 0;
  return h.toString(16);
}

interface CodeCache {
  complete: boolean;
  entries: Record<string, [number, number]>;
  data: Buffer;
}

function readCodeCache(file: string, id: string): CodeCache | undefined {
  try {
    const buf = fs.readFileSync(file);
    const n = buf.readUInt32LE(0);
    const h = JSON.parse(buf.toString('utf8', 4, 4 + n)) as { id: string; complete: boolean; entries: Record<string, [number, number]> };
    if (h.id !== id) return undefined;
    return { complete: h.complete, entries: h.entries, data: buf.subarray(4 + n) };
  } catch {
    return undefined;
  }
}

/**
 * Runs the bundle at `file` and returns its entry module, or undefined when
 * there is no usable bundle (missing, unreadable, another format, or any of
 * its files changed since it was written): then require the entry instead.
 */
export function loadModuleBundle<T>(file: string, opts: LoadBundleOptions = {}): LoadedBundle<T> | undefined {
  let text: Buffer;
  let dir: string;
  try {
    // The real path: require() names modules by it, and require.cache must agree.
    dir = path.dirname(fs.realpathSync.native(file));
    text = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  if (text.toString('latin1', 0, MAGIC.length) !== MAGIC) return undefined;
  const eol = text.indexOf(10, MAGIC.length);
  let header: BundleHeader;
  try {
    header = JSON.parse(text.toString('latin1', MAGIC.length, eol)) as BundleHeader;
  } catch {
    return undefined;
  }
  const base = eol + 1;
  const mods = header.modules;
  const names = mods.map((m) => `${dir}/${m.file}`);
  for (let i = 0; opts.verify !== false && i < mods.length; i++) {
    const st = fs.statSync(names[i]!, { throwIfNoEntry: false });
    if (!st || st.size !== mods[i]!.stamp[0] || st.mtimeMs !== mods[i]!.stamp[1]) return undefined;
  }

  const cacheFile = opts.cacheDir ? path.join(opts.cacheDir, `cli-${header.id}-${process.version}-${process.arch}-${flagsKey()}.v8cache`) : undefined;
  const cache = cacheFile ? readCodeCache(cacheFile, header.id) : undefined;
  const scripts = new Map<number, vm.Script>();
  let stale = !cache;
  const compiled = { modules: 0, fromCache: 0 };

  const load = (i: number, parent: Module): unknown => {
    const filename = names[i]!;
    const known = require.cache[filename];
    if (known) return known.exports;
    const mod = mods[i]!;
    const cached = cache?.entries[mod.file];
    // Only the modules that run are turned into strings; each is already wrapped (writeModuleBundle).
    const script = new vm.Script(text.toString('latin1', base + mod.at[0], base + mod.at[0] + mod.at[1]), {
      filename,
      cachedData: cached ? cache!.data.subarray(cached[0], cached[0] + cached[1]) : undefined,
    });
    compiled.modules++;
    if (cached && !script.cachedDataRejected) compiled.fromCache++;
    else stale = true;
    scripts.set(i, script);
    const m = new Module(filename, parent);
    m.filename = filename;
    require.cache[filename] = m;
    let plain: NodeJS.Require | undefined;
    const fallback = () => (plain ??= Module.createRequire(filename));
    const req = ((id: string) => {
      const dep = mod.deps[id];
      if (dep !== undefined) return load(dep, m);
      return fallback()(id);
    }) as NodeJS.Require;
    req.resolve = ((id: string, o?: { paths?: string[] }) => fallback().resolve(id, o)) as NodeJS.RequireResolve;
    req.cache = require.cache;
    req.main = require.main;
    try {
      (script.runInThisContext() as (...a: unknown[]) => void).call(m.exports, m.exports, req, m, filename, path.dirname(filename));
    } catch (e) {
      delete require.cache[filename];
      throw e;
    }
    m.loaded = true;
    return m.exports;
  };

  const exports = load(0, module) as T;
  return {
    exports,
    compiled,
    saveCodeCache(complete: boolean): void {
      if (!cacheFile || (!stale && (cache!.complete || !complete))) return;
      try {
        const entries: Record<string, [number, number]> = {};
        const parts: Buffer[] = [];
        let off = 0;
        for (const [i, s] of scripts) {
          const b = s.createCachedData();
          entries[mods[i]!.file] = [off, b.length];
          off += b.length;
          parts.push(b);
        }
        const h = Buffer.from(JSON.stringify({ id: header.id, complete, entries }));
        const len = Buffer.alloc(4);
        len.writeUInt32LE(h.length);
        fs.mkdirSync(opts.cacheDir!, { recursive: true });
        const tmp = `${cacheFile}.${process.pid}.tmp`;
        try {
          // Written whole and synced before it replaces the old one: V8 checks a cache's version,
          // flags, source length and payload length, but (in release builds) not its bytes.
          const fd = fs.openSync(tmp, 'w');
          try {
            fs.writeSync(fd, Buffer.concat([len, h, ...parts]));
            fs.fsyncSync(fd);
          } finally {
            fs.closeSync(fd);
          }
          fs.renameSync(tmp, cacheFile);
        } finally {
          fs.rmSync(tmp, { force: true });
        }
        pruneCodeCaches(opts.cacheDir!, path.basename(cacheFile));
      } catch {}
    },
  };
}

/** Caches of older bundles: each rebuild makes a new one; drop those not rewritten for a week. */
function pruneCodeCaches(dir: string, keep: string): void {
  const weekAgo = Date.now() - 7 * 24 * 3600 * 1000;
  for (const f of fs.readdirSync(dir)) {
    if (f === keep || !f.startsWith('cli-') || !f.endsWith('.v8cache')) continue;
    try {
      if (fs.statSync(path.join(dir, f)).mtimeMs < weekAgo) fs.rmSync(path.join(dir, f), { force: true });
    } catch {}
  }
}
