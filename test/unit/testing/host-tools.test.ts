/**
 * lib/testing/host-tools.ts: what `npm test` installs, per host. The three
 * facts (commands on PATH, root, apt-get) are injected, so every row of the
 * decision table runs here without touching this machine's packages; `npm test`
 * (scripts/run-tests.js) runs the real thing before its tiers.
 */
import test from 'ava';
import { installHint, missingToolsReason, planProvision, provisionHostTools, type HostFacts } from '../../../lib/testing/host-tools';

const TOOLS = [
  { command: 'dtc', pkg: 'device-tree-compiler' },
  { command: 'fdtget', pkg: 'device-tree-compiler' },
  { command: 'cpio', pkg: 'cpio' },
];

function host(present: string[], root: boolean, apt: boolean): HostFacts & { installed: string[] } {
  const have = new Set(present);
  const h = {
    installed: [] as string[],
    hasCommand: (c: string) => have.has(c),
    isRoot: () => root,
    hasApt: () => apt,
  };
  return h;
}

test('nothing missing: nothing to install, whoever runs it', (t) => {
  for (const [root, apt] of [[true, true], [false, false], [true, false], [false, true]] as const) {
    t.deepEqual(planProvision(TOOLS, host(['dtc', 'fdtget', 'cpio'], root, apt)), { missing: [], install: [] });
  }
});

test('missing tools as root with apt: their packages, each once, in table order', (t) => {
  const plan = planProvision(TOOLS, host(['cpio'], true, true));
  t.deepEqual(plan.missing.map((m) => m.command), ['dtc', 'fdtget']);
  t.deepEqual(plan.install, ['device-tree-compiler']);
  t.is(plan.blockedBecause, undefined);
});

test('missing tools without root: nothing installed, the reason says so', (t) => {
  const plan = planProvision(TOOLS, host([], false, true));
  t.deepEqual(plan.install, []);
  t.is(plan.missing.length, 3);
  t.regex(plan.blockedBecause!, /not running as root/);
});

test('missing tools without apt-get: nothing installed, the reason says so (root or not)', (t) => {
  for (const root of [true, false]) {
    const plan = planProvision(TOOLS, host(['dtc'], root, false));
    t.deepEqual(plan.install, []);
    t.regex(plan.blockedBecause!, /apt-get is not available/);
  }
});

test('provisionHostTools runs apt-get once for what is missing and re-checks PATH', (t) => {
  const have = new Set(['cpio']);
  const facts: HostFacts = { hasCommand: (c) => have.has(c), isRoot: () => true, hasApt: () => true };
  const calls: string[][] = [];
  const r = provisionHostTools(TOOLS, facts, (pkgs) => {
    calls.push(pkgs);
    have.add('dtc');
    have.add('fdtget');
    return true;
  });
  t.deepEqual(calls, [['device-tree-compiler']]);
  t.deepEqual(r, { installed: ['device-tree-compiler'], missing: [], reason: undefined });
});

test('provisionHostTools reports a failed apt-get and what is still missing', (t) => {
  const r = provisionHostTools(TOOLS, host(['cpio'], true, true), () => false);
  t.deepEqual(r.installed, []);
  t.deepEqual(r.missing.map((m) => m.command), ['dtc', 'fdtget']);
  t.is(r.reason, 'apt-get install failed');
});

test('provisionHostTools never calls apt-get when it cannot or need not', (t) => {
  const never = () => {
    t.fail('apt-get was called');
    return false;
  };
  t.deepEqual(provisionHostTools(TOOLS, host(['dtc', 'fdtget', 'cpio'], true, true), never), { installed: [], missing: [] });
  const r = provisionHostTools(TOOLS, host([], false, true), never);
  t.is(r.missing.length, 3);
  t.regex(r.reason!, /not running as root/);
});

test('the reason line names the missing commands and the packages that bring them', (t) => {
  t.is(missingToolsReason(['dtc', 'cpio'], (c) => c === 'cpio'), 'needs dtc (apt-get install device-tree-compiler; npm test installs it when run as root)');
  t.is(missingToolsReason(['dtc'], () => true), undefined);
  t.is(installHint(['dtc', 'fdtget', 'iasl']), 'apt-get install device-tree-compiler acpica-tools');
});
