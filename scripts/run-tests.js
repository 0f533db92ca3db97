#!/usr/bin/env node
// The test runner behind `npm test`: node scripts/run-tests.js unit|kvm|e2e|all
//  - builds with tsc (and the CLI bundle) first when dist/ is missing or older than a source file;
//  - unit: dist/test/unit; kvm: dist/test/kvm on the local /dev/kvm (skipped without one; on
//    Windows the backend conformance suite against WHP, skipped without it);
//  - e2e: dist/test/e2e directly where /dev/kvm is a real KVM, otherwise in the emulated KVM host
//    (QEMU TCG + SVM, see docs/testing.md): one host for most files, one for each file that needs
//    a host of another shape, up to three hosts each;
//  - first provisions the host, once: the tools the tiers run (dtc, cpio, iasl, QEMU, ...) with
//    apt-get when root on a machine with apt (lib/testing/host-tools.ts), and the guest artifacts;
//    what it cannot provide, the tests that need it skip (fail under CI=true), and the summary says
//    what was missing and how to get it;
//  - prints each tier's wall time and ends with exactly one line "N passed, N failed, N skipped".
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const AVA_CLI = path.join(ROOT, 'node_modules', 'ava', 'entrypoints', 'cli.mjs');
const TIERS = { unit: 'dist/test/unit', kvm: 'dist/test/kvm', e2e: 'dist/test/e2e', 'e2e-arm64': 'dist/test/e2e-arm64' };
/**
 * The whole e2e tier's budget, retries included, so CI cannot hang. A healthy run takes ~20 min
 * here; the rest is room for retries in fresh hosts (a wedged host costs up to E2E_SILENCE_MS
 * before its retry). 45 min keeps .ci/run under an hour at worst, inside CI's 90.
 */
const E2E_HOST_TIMEOUT_MS = Number(process.env.NODEVMM_E2E_TIMEOUT_MS || 45 * 60 * 1000);
const TIER_TIMEOUT_MS = 30 * 60 * 1000;

function log(msg) {
  process.stdout.write(`[run-tests] ${msg}\n`);
}

/**
 * Every tier's failed tests, each with the start of what it printed, shown again just above the
 * summary line: CI keeps a log's tail, and a failure's reason is otherwise thousands of lines up.
 */
const FAILURES = [];
const DIGEST_LINES = 16;
const DIGEST_WIDTH = 240;

/** The failed tests in TAP output (lib/testing/tap-failures.ts, built before any tier runs). */
function tapFailures(text) {
  return require('../dist/lib/testing/tap-failures').tapFailures(text, { lines: DIGEST_LINES, width: DIGEST_WIDTH });
}

function newestMtime(dir, filter) {
  let newest = 0;
  if (!fs.existsSync(dir)) return newest;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(p, filter));
    else if (filter(entry.name)) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

function buildIfStale() {
  const isTs = (n) => n.endsWith('.ts') && !n.endsWith('.d.ts');
  const src = Math.max(...['lib', 'test', 'scripts'].map((d) => newestMtime(path.join(ROOT, d), isTs)), fs.statSync(path.join(ROOT, 'tsconfig.json')).mtimeMs);
  const built = newestMtime(path.join(ROOT, 'dist'), (n) => n.endsWith('.js'));
  if (built >= src && built > 0) return;
  log(built === 0 ? 'dist/ is missing: building with tsc' : 'dist/ is older than the sources: building with tsc');
  const started = Date.now();
  const r = spawnSync('npx', ['tsc', '-p', '.'], { cwd: ROOT, stdio: 'inherit' });
  // tsc still emits when some file has type errors; the tests then show what is broken.
  if (r.status !== 0) log(`tsc exited with status ${r.status}; running the tests on what it emitted`);
  // The CLI's bundle, as npm run build:ts makes it: the tests that run bin/nodevmm.js then start it the way users do.
  const b = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'bundle-cli.js')], { cwd: ROOT, stdio: 'inherit' });
  if (b.status !== 0) log(`bundle-cli exited with status ${b.status}; bin/nodevmm.js loads dist/ module by module`);
  log(`build took ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

function testFiles(dir) {
  const abs = path.join(ROOT, dir);
  if (!fs.existsSync(abs)) return [];
  return fs.readdirSync(abs, { recursive: true })
    .filter((f) => f.endsWith('.test.js'))
    .map((f) => path.join(dir, f))
    .sort();
}

/** Counts from ava's TAP output; the summary comments win, the ok/not ok lines are the fallback. */
function parseTap(text) {
  const lines = text.replace(/\r/g, '').split('\n');
  const summary = {};
  let pass = 0, fail = 0, skip = 0, todo = 0;
  for (const line of lines) {
    const s = /^# (pass|fail|skip|todo)\s+(\d+)\s*$/.exec(line);
    if (s) summary[s[1]] = Number(s[2]);
    if (/^not ok \d+/.test(line)) {
      if (/# TODO/.test(line)) todo++;
      else fail++;
    } else if (/^ok \d+/.test(line)) {
      if (/# SKIP/.test(line)) skip++;
      else pass++;
    }
  }
  if ('pass' in summary || 'fail' in summary) {
    return { passed: summary.pass || 0, failed: summary.fail || 0, skipped: (summary.skip || 0) + (summary.todo || 0) };
  }
  return { passed: pass, failed: fail, skipped: skip + todo };
}

function runAva(files, env) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [AVA_CLI, '--tap', ...files], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => {
      log(`ava ran longer than ${TIER_TIMEOUT_MS / 1000} s: killing it`);
      child.kill('SIGKILL');
    }, TIER_TIMEOUT_MS);
    child.stdout.on('data', (d) => {
      out += d;
      process.stdout.write(d);
    });
    child.stderr.on('data', (d) => process.stderr.write(d));
    child.on('close', (status) => {
      clearTimeout(timer);
      const counts = parseTap(out);
      FAILURES.push(...tapFailures(out));
      if (status !== 0 && counts.failed === 0) FAILURES.push({ title: `ava exited with status ${status} on ${files.map((f) => path.basename(f)).join(', ')} without a failed test`, detail: [] });
      // A crash before any test ran (a syntax error, a missing module) is a failure, not zero tests.
      if (status !== 0 && counts.failed === 0) counts.failed = 1;
      resolve(counts);
    });
  });
}

function skipped(files, reason) {
  log(`skipping ${files.length} test file(s): ${reason}`);
  return { passed: 0, failed: 0, skipped: files.length };
}

/**
 * A tier that cannot run here: CI exists to prove it, so there it is one
 * failure (with the reason); locally, a machine without the tool skips it.
 */
function unavailable(files, reason) {
  if (!process.env.CI) return skipped(files, reason);
  log(`cannot run ${files.length} test file(s): ${reason}`);
  FAILURES.push({ title: `cannot run ${files.map((f) => path.basename(f)).join(', ')}`, detail: [reason] });
  return { passed: 0, failed: 1, skipped: 0 };
}

async function runUnit() {
  const files = testFiles(TIERS.unit);
  if (files.length === 0) return skipped(files, 'no unit test files');
  return runAva(files);
}

/**
 * On Windows the kvm tier is the backend conformance suite against WHP (docs/windows.md); the
 * other kvm files use Linux-only host features (eventfds, TAP, vsock, disk I/O into guest pages).
 */
const WIN32_KVM_FILES = ['15-backend-conformance.test.js'];

async function runKvm() {
  let files = testFiles(TIERS.kvm);
  if (process.platform === 'win32') {
    files = files.filter((f) => WIN32_KVM_FILES.includes(path.basename(f)));
    if (files.length === 0) return skipped(files, `no backend conformance suite (${WIN32_KVM_FILES.join(', ')}) in ${TIERS.kvm}`);
    const probe = require('../dist/lib/hv/hypervisor').openHypervisor().probe();
    if (!probe.ok) return skipped(files, probe.message);
    log('local Windows Hypervisor Platform: running the backend conformance suite against WHP');
    return runAva(files);
  }
  if (files.length === 0) return skipped(files, 'no kvm test files');
  const { detectKvm } = require('../dist/lib/testing/detect');
  const kvm = detectKvm();
  if (!kvm.present) return skipped(files, kvm.reason);
  log(`local ${kvm.reason}`);
  return runAva(files);
}

async function runE2e() {
  // NODEVMM_E2E_FILES=many-vms,virtio runs only those files (by name, without .test.js).
  const only = process.env.NODEVMM_E2E_FILES?.split(',').map((f) => `${f.trim()}.test.js`);
  const files = testFiles(TIERS.e2e).filter((f) => !only || only.includes(path.basename(f)));
  if (files.length === 0) return skipped(files, 'no e2e test files');
  const { detectKvm } = require('../dist/lib/testing/detect');
  const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');
  const kvm = detectKvm();
  let artifacts;
  try {
    artifacts = await ensureGuestArtifacts({ arch: 'x86_64', onProgress: (m) => log(`artifacts: ${m}`) });
  } catch (err) {
    return unavailable(files, `guest artifacts unavailable: ${err.code || ''} ${err.message}`);
  }
  if (kvm.kind === 'real') {
    log(`running e2e directly: ${kvm.reason}`);
    return runAva(files);
  }
  if (spawnSync('qemu-system-x86_64', ['--version']).error) {
    return unavailable(files, `${kvm.reason}, and qemu-system-x86_64 is not installed for the emulated KVM host (apt-get install qemu-system-x86)`);
  }
  // One emulated host and one ava run serve all files but those that need a host of another
  // shape: a host boot and ava's start-up inside it cost ~60-75 s per file (a file whose
  // tests all skip took 75 s on its own), ten files ~11 min of a ~20 min tier.
  const alone = files.filter((f) => E2E_HOST_OVERRIDES[path.basename(f)]);
  const shared = files.filter((f) => !alone.includes(f));
  const groups = [...(shared.length ? [shared] : []), ...alone.map((f) => [f])];
  log(`${kvm.reason}: running the e2e files in the emulated KVM host, ${groups.length} host session(s): ${groups.map((g) => g.map((f) => path.basename(f, '.test.js')).join(' + ')).join('; ')}`);
  const total = { passed: 0, failed: 0, skipped: 0 };
  const flaky = [];
  const started = Date.now();
  for (const group of groups) {
    const counts = await runE2eGroupInHost(group, { artifacts, started, flaky });
    for (const k of Object.keys(total)) total[k] += counts[k];
  }
  if (flaky.length) {
    log(`FLAKY: ${flaky.length} e2e test(s) failed in the emulated host and then passed in a fresh one:`);
    for (const f of flaky) log(`  ${f}`);
  }
  return total;
}

/**
 * Each test's file, bare title and outcome from ava's TAP output. With several files ava
 * prefixes titles with the file's name ("virtio › title"); with one file it does not, and
 * the test belongs to `files[0]`.
 */
function tapTests(text, files) {
  const byName = new Map(files.map((f) => [path.basename(f, '.test.js'), f]));
  const tests = [];
  for (const line of text.replace(/\r/g, '').split('\n')) {
    const m = /^(not ok|ok) \d+ - (.*?)(?: # (SKIP|TODO)\b.*)?$/.exec(line);
    if (!m) continue;
    const status = m[3] ? 'skip' : m[1] === 'ok' ? 'pass' : 'fail';
    let file = files[0];
    let title = m[2];
    const sep = title.indexOf(' \u203a ');
    if (files.length > 1 && sep > 0 && byName.has(title.slice(0, sep))) {
      file = byName.get(title.slice(0, sep));
      title = title.slice(sep + 3);
    }
    tests.push({ file, title, status });
  }
  return tests;
}

const E2E_ATTEMPTS = 3;
/**
 * A console quiet for this long ends the attempt: the longest quiet stretch of a healthy tier
 * was 70 s (2026-12-07, in many-vms; the host prints a line per guest boot, ava one per test).
 */
const E2E_SILENCE_MS = 4 * 60 * 1000;
/** One attempt's limit: the shared session runs ~13 min when healthy, many-vms ~9. */
const E2E_ATTEMPT_MS = 35 * 60 * 1000;
/**
 * Files that need another emulated host. many-vms: eight nested guests at once
 * need an emulated host with one CPU and one TCG thread. With several TCG
 * threads they crashed the host's kernel ("TASK stack guard page was hit", 2 or
 * 8 CPUs, QEMU's guests too); with one thread but 2 emulated CPUs, QEMU's own 8
 * microvm guests all stalled in early boot for 900 s (and 7 of ours); with one
 * CPU, QEMU's 8 and ours all booted and ran (2026-11-22, docs/testing.md).
 */
const E2E_HOST_OVERRIDES = { 'many-vms.test.js': { tcgThread: 'single', smp: 1 } };

/**
 * Some e2e files in one emulated KVM host and one ava run (one at a time:
 * --concurrency=1, since several guests booting at once upset the host), with
 * up to three fresh hosts.
 *
 * Guests under the emulated host occasionally die in early boot (a triple
 * fault or a stall before the console, in a few percent of boots, for QEMU's
 * guests as well as ours: docs/testing.md), and the host's own kernel (TCG
 * with nested SVM) now and then panics or wedges under load. Neither is a test
 * result, so a test that fails there, or never reports because the host died,
 * runs again in a fresh host; tests that already passed do not (ava --match
 * '!title'), and files whose tests all passed are left out. A real bug fails
 * all three times and is counted; every test that needed a retry is printed
 * as FLAKY so it stays visible.
 */
async function runE2eGroupInHost(files, { artifacts, started, flaky }) {
  const { runInKvmHost } = require('../dist/lib/testing/kvm-host');
  const quote = (a) => `'${a.replace(/'/g, `'\\''`)}'`;
  const key = (t) => `${path.basename(t.file)}: ${t.title}`;
  const outcome = new Map(); // key -> { file, title, status }, latest attempt wins
  const digests = new Map(); // key -> what a failed test printed, latest failure wins
  const failedBefore = new Set();
  const reported = new Set(); // files with at least one reported test
  let pending = files; // files with a test still to run or rerun
  let unexplained = 0; // attempts that ended badly without naming a failed test
  const name = files.length === 1 ? files[0] : `${files.length} e2e files`;
  for (let attempt = 1; attempt <= E2E_ATTEMPTS; attempt++) {
    // Nothing left that a host could run (a file rerun only because the host died in it, which
    // died again before reporting): an ava run without files would run every test file.
    if (pending.length === 0) break;
    const remaining = E2E_HOST_TIMEOUT_MS - (Date.now() - started);
    if (remaining < 60_000) {
      log(`no time left in the e2e budget for ${pending.join(', ')}`);
      unexplained = 1;
      break;
    }
    const done = [...outcome.values()].filter((t) => t.status !== 'fail' && pending.includes(t.file)).map((t) => `--match=${quote(`!${t.title}`)}`);
    const argv = [AVA_CLI, ...pending].map(quote).concat('--concurrency=1', done).join(' ');
    let result;
    let seen = '';
    try {
      result = await runInKvmHost(`${JSON.stringify(process.execPath)} ${argv} --tap`, {
        cwd: ROOT,
        timeoutMs: Math.min(remaining, E2E_ATTEMPT_MS),
        artifacts,
        // The host tool gives up on a panicked or wedged host itself (host-watchdog.ts) and
        // sizes it to DEFAULT_KVM_HOST_CPUS, one CPU per vCPU of the largest guest here (4).
        // A host can also wedge with QEMU burning CPU and nothing on its console (seen twice in
        // one CI run, in x86-linux-direct): every e2e file prints a TAP line per test and the
        // host kernel a line per guest boot, so a console silent for E2E_SILENCE_MS means a dead
        // host, not a slow one.
        silenceMs: E2E_SILENCE_MS,
        ...E2E_HOST_OVERRIDES[path.basename(files[0])],
        onConsole: (text) => {
          seen += text;
          process.stdout.write(text.replace(/\r/g, ''));
        },
      });
    } catch (err) {
      process.stdout.write('\n');
      log(`emulated KVM host failed on ${name} (attempt ${attempt} of ${E2E_ATTEMPTS}): ${err.code || ''} ${err.message.split('\n')[0]}`);
      // Whatever the console showed before the host died still counts.
      const tests = tapTests(seen, pending);
      tests.forEach(record);
      unexplained = 1;
      pending = stillPending(tests.length ? tests[tests.length - 1].file : undefined);
      continue;
    }
    process.stdout.write('\n');
    log(`${name}: emulated KVM host ready in ${(result.bootMs / 1000).toFixed(1)} s, ava exit ${result.exitCode}, ${(result.durationMs / 1000).toFixed(1)} s in all (attempt ${attempt} of ${E2E_ATTEMPTS})`);
    const tests = tapTests(result.consoleLog, pending);
    tests.forEach(record);
    for (const f of tapFailures(result.consoleLog)) {
      const t = tests.find((x) => x.status === 'fail' && f.title.endsWith(x.title));
      if (t) digests.set(key(t), { title: key(t), detail: f.detail });
    }
    const failedNow = tests.filter((t) => t.status === 'fail');
    // ava failing without a failed test (a crash, a timeout) is a failure too.
    unexplained = result.exitCode !== 0 && failedNow.length === 0 ? 1 : 0;
    if (failedNow.length === 0 && unexplained === 0) break;
    // ava failing after reporting only passes is no guest flake (and a rerun would match no test).
    if (failedNow.length === 0 && tests.length > 0) break;
    pending = stillPending(undefined);
    if (attempt < E2E_ATTEMPTS) log(`FLAKY? ${failedNow.map((t) => JSON.stringify(key(t))).join(', ') || `ava exit ${result.exitCode}`} failed in the emulated host: running ${failedNow.length ? 'them' : 'the files'} again in a fresh host`);
  }
  const counts = { passed: 0, failed: 0, skipped: 0 };
  for (const t of outcome.values()) {
    if (t.status === 'pass') counts.passed++;
    else if (t.status === 'skip') counts.skipped++;
    else counts.failed++;
    if (t.status === 'pass' && failedBefore.has(key(t))) flaky.push(key(t));
  }
  for (const t of outcome.values()) {
    if (t.status === 'fail') FAILURES.push(digests.get(key(t)) ?? { title: key(t), detail: [] });
  }
  // A named failure already explains a bad exit; without one, the files still failed.
  if (counts.failed === 0 && unexplained) {
    counts.failed = unexplained;
    FAILURES.push({ title: `${name}: the emulated KVM host ended without naming a failed test (above: its last attempt)`, detail: [] });
  }
  return counts;

  function record(t) {
    if (t.status === 'fail') failedBefore.add(key(t));
    outcome.set(key(t), t);
    reported.add(t.file);
  }

  /**
   * What the next host runs: files with a failed test, files that reported nothing, and the
   * file that was running when the host died (its later tests never reported).
   */
  function stillPending(runningWhenDied) {
    return pending.filter((f) => f === runningWhenDied || !reported.has(f) || [...outcome.values()].some((t) => t.file === f && t.status === 'fail'));
  }
}

/**
 * The arm64 proof runs here, not in the x86 emulated host: its test boots an
 * emulated arm64 KVM host (QEMU TCG) itself. It needs qemu-system-aarch64 10 or
 * newer (lib/testing/arm64-host-qemu.ts), the cross-built addon and the arm64
 * artifacts; the addon is built here when the tools exist, the artifacts and
 * (when the system's is older) Debian's backports QEMU are fetched here.
 */
async function runE2eArm64() {
  const files = testFiles(TIERS['e2e-arm64']);
  if (files.length === 0) return skipped(files, 'no arm64 e2e test files');
  if (spawnSync('qemu-system-aarch64', ['--version']).error) {
    return unavailable(files, 'qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)');
  }
  const arm64Addon = path.join(ROOT, 'build-arm64', 'Release', 'nodevmm.node');
  // An addon older than native/ would test yesterday's exit paths (or lack a binding the TS now calls).
  const arm64Stale = fs.existsSync(arm64Addon) && fs.statSync(arm64Addon).mtimeMs < Math.max(newestMtime(path.join(ROOT, 'native'), () => true), fs.statSync(path.join(ROOT, 'binding.gyp')).mtimeMs);
  if (!fs.existsSync(arm64Addon) || arm64Stale) {
    if (spawnSync('aarch64-linux-gnu-g++', ['--version']).error) {
      return unavailable(files, 'no aarch64 cross compiler to build the arm64 addon (apt-get install g++-aarch64-linux-gnu)');
    }
    log(`cross-building the arm64 addon (scripts/cross-build-arm64.sh)${arm64Stale ? ': build-arm64/ is older than native/' : ''}`);
    const r = spawnSync('sh', [path.join(ROOT, 'scripts', 'cross-build-arm64.sh')], { cwd: ROOT, stdio: 'inherit', timeout: 15 * 60 * 1000 });
    if (r.status !== 0) {
      FAILURES.push({ title: 'cross-building the arm64 addon (scripts/cross-build-arm64.sh)', detail: [`exit status ${r.status} (its output is above)`] });
      return { passed: 0, failed: 1, skipped: 0 };
    }
  }
  const { ensureArm64Artifacts } = require('../dist/lib/testing/arm64-kvm-host');
  const { ensureArm64HostQemu } = require('../dist/lib/testing/arm64-host-qemu');
  try {
    await ensureArm64Artifacts({ onProgress: (m) => log(`arm64 artifacts: ${m}`) });
  } catch (err) {
    return unavailable(files, `arm64 artifacts unavailable: ${err.code || ''} ${err.message}`);
  }
  try {
    log(`arm64 host QEMU: ${ensureArm64HostQemu({ onProgress: (m) => log(`arm64 host QEMU: ${m}`) })}`);
  } catch (err) {
    return unavailable(files, err.message);
  }
  return runAva(files);
}

/**
 * What `npm test` sets up before its tiers, like `npm start` does: the host tools (apt-get,
 * visibly, only when something is missing and we may) and the guest artifacts the unit and
 * e2e tiers read. Returns lines for the summary naming what is still missing.
 */
async function provision(plan) {
  const { provisionHostTools, installHint } = require('../dist/lib/testing/host-tools');
  const notes = [];
  const started = Date.now();
  const tools = provisionHostTools(undefined, undefined, undefined, (m) => log(`provision: ${m}`));
  if (tools.installed.length) log(`provision: installed ${tools.installed.join(' ')}`);
  if (tools.missing.length) {
    const commands = tools.missing.map((t) => t.command);
    log(`provision: missing ${commands.join(', ')} (${tools.reason}); the tests that need them skip`);
    notes.push(`missing tools: ${commands.join(', ')}; get them with \`${installHint(commands)}\` or run npm test as root on a machine with apt-get`);
  }
  if (plan.includes('unit') || plan.includes('e2e')) {
    const { ensureGuestArtifacts, guestCacheRoot } = require('../dist/lib/testing/artifacts');
    try {
      await ensureGuestArtifacts({ arch: 'x86_64', onProgress: (m) => log(`provision: artifacts: ${m}`) });
    } catch (err) {
      log(`provision: guest artifacts unavailable: ${err.message}`);
      notes.push(`no guest artifacts in ${guestCacheRoot()} (${err.message.split('\n')[0]}); they need apt-get (apt-get download) and Debian's archive: node scripts/guest-artifacts.js`);
    }
  }
  log(`provision: done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return notes;
}

async function main() {
  const mode = process.argv[2] || 'all';
  const plan = { unit: ['unit'], kvm: ['kvm'], e2e: ['e2e', 'e2e-arm64'], 'e2e-x86': ['e2e'], 'e2e-arm64': ['e2e-arm64'], all: ['unit', 'kvm', 'e2e', 'e2e-arm64'] }[mode];
  if (!plan) {
    process.stderr.write('usage: node scripts/run-tests.js unit|kvm|e2e|e2e-x86|e2e-arm64|all\n');
    process.exit(2);
  }
  buildIfStale();
  const notes = await provision(plan);
  const runners = { unit: runUnit, kvm: runKvm, e2e: runE2e, 'e2e-arm64': runE2eArm64 };
  const total = { passed: 0, failed: 0, skipped: 0 };
  const timings = [];
  for (const tier of plan) {
    const started = Date.now();
    log(`tier ${tier}: starting`);
    let counts;
    try {
      counts = await runners[tier]();
    } catch (err) {
      log(`tier ${tier}: ${err.stack || err}`);
      counts = { passed: 0, failed: 1, skipped: 0 };
    }
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    timings.push(`${tier} ${secs} s`);
    log(`tier ${tier}: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped in ${secs} s`);
    for (const k of Object.keys(total)) total[k] += counts[k];
  }
  log(`wall time per tier: ${timings.join(', ')}`);
  if (FAILURES.length) {
    log(`failed, in short (each in full above):`);
    for (const f of FAILURES) {
      log(`  not ok - ${f.title}`);
      for (const l of f.detail) log(`    ${l}`);
    }
  }
  if (notes.length && total.skipped) {
    log('some tests skipped because this machine lacks what they need:');
    for (const n of notes) log(`  ${n}`);
  }
  process.stdout.write(`${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped\n`);
  process.exit(total.failed > 0 ? 1 : 0);
}

main();
