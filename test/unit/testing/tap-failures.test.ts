import test from 'ava';
import { tapFailures } from '../../../lib/testing/tap-failures';

// ava --tap output as the e2e-arm64 tier printed it on 2026-12-07 (the console's \r\n kept),
// with a passing, a TODO and a second failing test around it.
const TAP = [
  'TAP version 13',
  'ok 1 - boot › powers off',
  'not ok 2 - boot › arm64 through the public API: nodevmm run, withVm lifecycle',
  '#   FLAKY: node died of a native fault in the emulated arm64 host; running the proof once more in a fresh host. The report:',
  '#   NODEVMM-CRASH signal 11 code 1 addr 0xd28006c058000ec9 pc 0x0000ffff7b863bbc thread 117 "node"',
  '#   NODEVMM-CRASH end',
  '  ---',
  '    name: AssertionError',
  '    assertion: t.is()',
  '    details:',
  "      'Difference (- actual, + expected):': |-",
  '        - 139',
  '        + 0',
  `    message: "${'[com2] x\\r\\n'.repeat(60)}"`,
  "    at: 'ExecutionContext.is (file:///work/main/node_modules/ava/lib/assert.js:309:16)'",
  '  ...',
  '',
  'not ok 3 - boot › later # TODO',
  'not ok 4 - virtio › no detail',
  '1..4',
  '# tests 4',
  '# pass 1',
  '# fail 2',
].join('\r\n');

test('each failed test with its log lines and YAML block, TODOs left out, long lines cut', (t) => {
  const f = tapFailures(TAP);
  t.deepEqual(f.map((x) => x.title), ['boot › arm64 through the public API: nodevmm run, withVm lifecycle', 'virtio › no detail']);
  const d = f[0]!.detail;
  t.is(d[0], '#   FLAKY: node died of a native fault in the emulated arm64 host; running the proof once more in a fresh host. The report:');
  t.true(d.includes('        - 139') && d.includes('        + 0'), d.join('\n'));
  t.false(d.includes('  ---'));
  const message = d.find((l) => l.startsWith('    message:'))!;
  t.is(message.length, 240 + ' [...]'.length);
  t.true(message.endsWith(' [...]'));
  t.is(d[d.length - 1], "    at: 'ExecutionContext.is (file:///work/main/node_modules/ava/lib/assert.js:309:16)'", 'stops at the end of the block');
  t.deepEqual(f[1]!.detail, [], 'a failure followed by the plan has no detail');
});

test('the number of lines and their width are the caller\'s', (t) => {
  const [first] = tapFailures(TAP, { lines: 3, width: 21 });
  t.deepEqual(first!.detail, ['#   FLAKY: node died  [...]', '#   NODEVMM-CRASH sig [...]', '#   NODEVMM-CRASH end']);
});

test('output without failures gives none', (t) => {
  t.deepEqual(tapFailures('TAP version 13\nok 1 - a\n1..1\n# pass 1\n'), []);
  t.deepEqual(tapFailures(''), []);
});
