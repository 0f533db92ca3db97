#!/usr/bin/env node
'use strict';
/**
 * The README's quick start on a fresh clone, as a new user types it: clones
 * this checkout's HEAD into a new temporary folder and, with an empty npm
 * cache and an empty NODEVMM_CACHE, runs
 *
 *   npm install && npm start     exactly as written; the guest's shell gets
 *                                `echo` and `exit` on stdin (no terminal), and
 *                                npm start must end with status 0
 *   npm run test:unit            `npm test`'s runner and provisioning, unit tier only
 *
 * `npm test` in full takes ~40 min here and CI already runs it on its own
 * checkout, so the fresh clone runs the unit tier: what differs in a fresh
 * clone (no dist/, no build/, no guest cache, no npm cache) is set up by the
 * commands above, and the unit tier reads all of it (the addon, the guest
 * artifacts, the tools). docs/testing.md says the same. Prints each step's
 * time; removes the folder at the end, also on failure. Exit 0 when all
 * passed. Usage: node scripts/fresh-clone-check.js [--keep]
 */
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const keep = process.argv.includes('--keep');
/** npm install builds the addon and downloads every package; npm start fetches Debian's kernel and may boot the emulated KVM host. */
const INSTALL_AND_START_TIMEOUT_MS = 40 * 60 * 1000;
const UNIT_TIMEOUT_MS = 20 * 60 * 1000;
const MARKER = 'FRESH-CLONE-SHELL-OK';

function log(msg) {
  process.stdout.write(`[fresh-clone] ${msg}\n`);
}

/**
 * Runs `command` under sh in `cwd`, echoing its output. When `shell` is set,
 * waits for the guest shell's prompt, types an echo of a marker and `exit`.
 */
function run(command, { cwd, env, timeoutMs, shell }) {
  return new Promise((resolve) => {
    const started = Date.now();
    // Own process group, so a timeout takes npm, node, QEMU and the VMM down together.
    const child = spawn('sh', ['-c', command], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    let out = '';
    let typed = false;
    let sawMarker = false;
    const onData = (stream) => (d) => {
      stream.write(d);
      if (!shell) return;
      out = (out + d.toString('latin1')).slice(-4096);
      // busybox sh -l prompts "/ # " once the guest is up, then asks the terminal for the cursor position (ESC [6n).
      if (!typed && /(?:^|\n)[~/][^\n]* # $/.test(out.replace(/\x1b\[[0-9;?]*[A-Za-z]|\r/g, ''))) {
        typed = true;
        child.stdin.write(`echo ${MARKER.slice(0, 6)}''${MARKER.slice(6)}\r`);
        child.stdin.write('exit\r');
      }
      if (out.includes(MARKER)) sawMarker = true;
    };
    child.stdout.on('data', onData(process.stdout));
    child.stderr.on('data', onData(process.stderr));
    child.stdin.on('error', () => {});
    const timer = setTimeout(() => {
      log(`${command}: no end after ${timeoutMs / 1000} s: killing it`);
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
    }, timeoutMs);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, seconds: (Date.now() - started) / 1000, sawMarker });
    });
  });
}

/** `shared/testdata/igvm/` beside this checkout or a folder above it, as test/unit/igvm/helpers.ts looks. */
function findIgvmFixtureDir() {
  if (process.env.NODEVMM_IGVM_TESTDATA) return process.env.NODEVMM_IGVM_TESTDATA;
  for (let dir = path.dirname(root); ; dir = path.dirname(dir)) {
    const d = path.join(dir, 'shared', 'testdata', 'igvm');
    if (fs.existsSync(path.join(d, 'coconut-svsm-qemu-snp-tdx-native-v2.igvm'))) return d;
    if (path.dirname(dir) === dir) return undefined;
  }
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-fresh-clone-'));
  const results = [];
  try {
    const checkout = path.join(work, 'nodevmm');
    const head = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8' }).stdout.trim();
    log(`cloning ${root} at ${head} into ${checkout}`);
    const clone = spawnSync('git', ['clone', '-q', '--no-hardlinks', root, checkout], { stdio: 'inherit' });
    if (clone.status !== 0) throw new Error('git clone failed');
    spawnSync('git', ['checkout', '-q', head], { cwd: checkout, stdio: 'inherit' });
    const env = {
      ...process.env,
      npm_config_cache: path.join(work, 'npm-cache'),
      NODEVMM_CACHE: path.join(work, 'nodevmm-cache'),
    };
    // The IGVM fixture lives beside the checkout, not in it (docs/testing.md): point the clone at ours.
    const fixture = findIgvmFixtureDir();
    if (fixture) env.NODEVMM_IGVM_TESTDATA = fixture;
    for (const k of Object.keys(env)) {
      // npm run passes its own configuration down; the clone must see a user's, not ours.
      if (k.startsWith('npm_') && k !== 'npm_config_cache' && k !== 'npm_config_nodedir') delete env[k];
    }
    const steps = [
      { command: 'npm install && npm start', timeoutMs: INSTALL_AND_START_TIMEOUT_MS, shell: true },
      { command: 'npm run test:unit', timeoutMs: UNIT_TIMEOUT_MS },
    ];
    for (const step of steps) {
      log(`$ ${step.command}`);
      const r = await run(step.command, { cwd: checkout, env, timeoutMs: step.timeoutMs, shell: step.shell });
      const ok = r.status === 0 && (!step.shell || r.sawMarker);
      results.push({ step: step.command, ok, seconds: r.seconds });
      log(`${step.command}: ${ok ? 'ok' : 'FAILED'} (status ${r.status ?? r.signal}${step.shell ? `, guest shell ${r.sawMarker ? 'answered' : 'never answered'}` : ''}) in ${r.seconds.toFixed(1)} s`);
      if (!ok) break;
    }
  } finally {
    if (keep) log(`kept ${work}`);
    else fs.rmSync(work, { recursive: true, force: true });
  }
  const ok = results.length === 2 && results.every((r) => r.ok);
  log(`${ok ? 'passed' : 'FAILED'}: ${results.map((r) => `${r.step} ${r.seconds.toFixed(0)} s`).join(', ')}`);
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    log(`failed: ${e.message}`);
    process.exit(1);
  },
);
