/**
 * lib/testing/e2e.ts timeoutReport: what a test says about a guest that
 * never stopped.
 */
import test from 'ava';
import { timeoutReport } from '../../../lib/testing/e2e';

test('timeoutReport names the limit, the time spent, the marker state, the last 30 lines and the diagnosis', (t) => {
  const log = Array.from({ length: 40 }, (_, i) => `line ${i}`).join('\r\n') + '\r\n';
  const m = timeoutReport('guest', log, 181_234, 180_000, 'vcpu0 RIP 0xffff');
  const lines = m.split('\n');
  t.is(lines[0], 'guest did not stop within 180 s (181.2 s spent, before GUEST-INIT-OK); last 30 console lines:');
  t.deepEqual(lines.slice(1, 31), Array.from({ length: 30 }, (_, i) => `line ${i + 10}`));
  t.is(lines[31], 'diagnosis: vcpu0 RIP 0xffff');
  t.is(lines.length, 32);
});

test('timeoutReport says when the guest got past GUEST-INIT-OK, and copes with a short log', (t) => {
  const m = timeoutReport('microvm guest', 'boot\nGUEST-INIT-OK\nhang\n', 5000, 5000);
  t.is(m, 'microvm guest did not stop within 5 s (5.0 s spent, after GUEST-INIT-OK); last 3 console lines:\nboot\nGUEST-INIT-OK\nhang');
});
