/**
 * NODEVMM_CRASH_REPORT=1 (native/crash_report.cc, installed by lib/hv/native.ts
 * when the addon loads): a process that dies of SIGSEGV first writes the
 * faulting thread, pc and a native backtrace to stderr, and still dies of the
 * signal (exit 139 from a shell, a core when enabled). Without the variable
 * nothing is installed.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { nativeCrashReport } from '../../../lib/testing/crash-report';

const nativeJs = path.resolve(__dirname, '..', '..', '..', 'lib', 'hv', 'native.js');
const crash = `require(${JSON.stringify(nativeJs)}).nativeBinding(); process.kill(process.pid, 'SIGSEGV');`;

function run(report: boolean): { signal: NodeJS.Signals | null; stderr: string } {
  const env = { ...process.env };
  delete env.NODEVMM_CRASH_REPORT;
  if (report) env.NODEVMM_CRASH_REPORT = '1';
  const r = spawnSync(process.execPath, ['-e', crash], { env, encoding: 'utf8', timeout: 30_000 });
  return { signal: r.signal, stderr: r.stderr };
}

test('with NODEVMM_CRASH_REPORT=1 a SIGSEGV prints the thread and a native backtrace, then kills the process as before', (t) => {
  const r = run(true);
  t.is(r.signal, 'SIGSEGV');
  t.regex(r.stderr, /NODEVMM-CRASH signal 11 code -?\d+ addr 0x[0-9a-f]{16} pc 0x[0-9a-f]{16} thread \d+ "node"/);
  t.regex(r.stderr, /nodevmm\.node\(\+0x[0-9a-f]+\)/, 'the backtrace starts in the handler, inside the addon');
  t.regex(r.stderr, /NODEVMM-CRASH end/);
});

test('without NODEVMM_CRASH_REPORT no handler is installed', (t) => {
  const r = run(false);
  t.is(r.signal, 'SIGSEGV');
  t.notRegex(r.stderr, /NODEVMM-CRASH/);
});

test('nativeCrashReport finds the whole report in a log, or its first line alone when the process died inside it', (t) => {
  const r = run(true);
  const whole = nativeCrashReport(`console before\n${r.stderr}console after\n`);
  t.regex(whole ?? '', /^NODEVMM-CRASH signal 11 [^\n]*\n[^]*NODEVMM-CRASH end$/);
  // Cut where a fault inside the report's backtrace would stop it.
  const cut = r.stderr.slice(0, r.stderr.indexOf('\n', r.stderr.indexOf('NODEVMM-CRASH signal')) + 1) + 'frame';
  t.regex(nativeCrashReport(cut) ?? '', /^NODEVMM-CRASH signal 11 code -?\d+ addr 0x[0-9a-f]{16} pc 0x[0-9a-f]{16} thread \d+ "node"$/);
  t.is(nativeCrashReport(run(false).stderr), undefined);
});
