/**
 * lib/testing/host-watchdog.ts: the rule by which the emulated host tools
 * give up on a host whose kernel is dead or wedged, fed console text the way
 * QEMU's serial output arrives (any chunking, CR LF line ends).
 */
import test from 'ava';
import { createHostWatchdog } from '../../../lib/testing/host-watchdog';

/** Feed `chunks` in order; the first verdict and the index of the chunk that gave it. */
function run(chunks: string[]): { verdict: string | undefined; at: number } {
  const w = createHostWatchdog();
  for (let i = 0; i < chunks.length; i++) {
    const v = w.feed(chunks[i]!);
    if (v) return { verdict: v, at: i };
  }
  return { verdict: undefined, at: -1 };
}

test('a soft lockup of a minute or more wedges the host; a shorter one may clear', (t) => {
  const short = '[   48.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [node:123]\r\n';
  const long = '[  112.9] watchdog: BUG: soft lockup - CPU#1 stuck for 63s! [node:123]\r\n';
  t.deepEqual(run([short, short.replace('22s', '48s')]), { verdict: undefined, at: -1 });
  const r = run([short, 'some output\r\n', long, 'more\r\n']);
  t.is(r.at, 2);
  t.is(r.verdict, `the emulated host's kernel is wedged ("soft lockup - CPU#1 stuck for 63s! [node:123]")`);
  t.regex(run(['watchdog: BUG: soft lockup - CPU#0 stuck for 1136s! [kvm:7]\n']).verdict!, /stuck for 1136s/);
});

test('a kernel panic is dead at once, even before its line ends', (t) => {
  const r = run(['[  300.0] Kernel panic - not syncing: corrupted stack end detected inside scheduler\r\n']);
  t.is(r.verdict, `the emulated host's kernel panicked ("Kernel panic - not syncing: corrupted stack end detected inside scheduler")`);
  t.regex(run(['[  300.0] Kernel panic - not syncing: Fatal exception']).verdict!, /panicked \("Kernel panic - not syncing: Fatal exception"\)/);
});

test('an RCU stall reported once may pass; reported again, the host is wedged', (t) => {
  const first = 'rcu: INFO: rcu_preempt self-detected stall on CPU\r\n';
  const again = 'rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\r\n';
  t.deepEqual(run([first, 'rcu: \t0-....: (5249 ticks this GP)\r\n']), { verdict: undefined, at: -1 });
  const r = run([first, 'noise\r\n', again]);
  t.is(r.at, 2);
  t.is(r.verdict, `the emulated host's kernel is wedged (RCU stall reported 2 times, last "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:")`);
});

test('a line split across chunks is judged whole, and the verdict stays once given', (t) => {
  const w = createHostWatchdog();
  t.is(w.feed('watchdog: BUG: soft lockup - CPU#3 stu'), undefined);
  t.is(w.feed('ck for 6'), undefined);
  const v = w.feed('1s! [qemu:9]\r\nnext');
  t.regex(v!, /CPU#3 stuck for 61s/);
  t.is(w.feed('anything'), v);
});

test('ordinary boot and test output never trips it', (t) => {
  const boot = [
    '[    0.000000] Linux version 6.1.0-28-amd64\r\n',
    '[    2.1] rcu: Hierarchical RCU implementation.\r\n',
    '[    2.2] rcu: \tRCU restricting CPUs from NR_CPUS=8192 to nr_cpu_ids=4.\r\n',
    '[    3.0] watchdog: Delayed init of the lockup detector failed: -19\r\n',
    'ok 1 - soft lockup - CPU#0 stuck for 5s is what a guest printed\r\n',
    'NODEVMM-KVM-HOST-READY 3.2\r\n',
  ];
  t.deepEqual(run(boot), { verdict: undefined, at: -1 });
});
