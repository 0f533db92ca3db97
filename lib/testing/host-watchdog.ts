/**
 * Notices an emulated KVM host whose kernel is dead or wedged, from its
 * console. Such a host never recovers: seen here, "soft lockup - CPU#0 stuck
 * for 1136s" from ~90 s into a 1400 s benchmark run on a 2-CPU host while
 * QEMU kept burning CPU (so the frozen-host check in qemu-stall.ts never
 * fired) and the run used its whole time limit; every vCPU of a 4-vCPU guest
 * stuck in KVM_RUN; and panics under load ("corrupted stack end detected
 * inside scheduler"). The host tools (kvm-host.ts, arm64-kvm-host.ts) feed
 * their console through this and give up at the first verdict, so every user
 * (tests, benchmarks, npm start, examples) gets the rule.
 *
 * The rule:
 *  - "Kernel panic - not syncing": dead at once;
 *  - "soft lockup - CPU#N stuck for Ns" with N >= 60: a CPU has not
 *    scheduled for a minute (the kernel warns from ~20 s on, and a loaded TCG
 *    host can show a short one and recover);
 *  - an RCU stall ("rcu: INFO: rcu_sched detected stalls",
 *    "... self-detected stall on CPU") reported a second time: the kernel
 *    repeats the report while the same stall lasts (every ~63 s with
 *    Debian's 21 s timeout), while a one-off report under TCG load can pass.
 */

/** Soft lockups shorter than this (seconds) may still clear. */
export const SOFT_LOCKUP_DEAD_SECONDS = 60;
/** RCU stall reports before the host counts as wedged. */
export const RCU_STALL_REPORTS = 2;

const PANIC = /Kernel panic - not syncing[^\n]*/;
const SOFT_LOCKUP = /soft lockup - CPU#\d+ stuck for (\d+)s[^\n]*/;
const RCU_STALL = /rcu: INFO: \w+ (?:self-)?detected stalls?[^\n]*/;

/** Feeds console text (any chunking) and returns, once, why the host is dead. */
export interface HostWatchdog {
  /** The verdict for the text so far: a sentence naming the console line, or undefined while the host looks alive. */
  feed(text: string): string | undefined;
}

export function createHostWatchdog(): HostWatchdog {
  let partial = '';
  let rcuReports = 0;
  let verdict: string | undefined;
  const judge = (line: string): string | undefined => {
    const panic = PANIC.exec(line);
    if (panic) return `the emulated host's kernel panicked ("${panic[0].trim()}")`;
    const lockup = SOFT_LOCKUP.exec(line);
    if (lockup && Number(lockup[1]) >= SOFT_LOCKUP_DEAD_SECONDS) return `the emulated host's kernel is wedged ("${lockup[0].trim()}")`;
    const rcu = RCU_STALL.exec(line);
    if (rcu && ++rcuReports >= RCU_STALL_REPORTS) return `the emulated host's kernel is wedged (RCU stall reported ${rcuReports} times, last "${rcu[0].trim()}")`;
    return undefined;
  };
  return {
    feed(text: string): string | undefined {
      if (verdict) return verdict;
      const lines = (partial + text.replace(/\r/g, '')).split('\n');
      // The last piece has no newline yet: keep it (bounded) for the next chunk.
      partial = lines.pop()!.slice(-4096);
      for (const line of lines) {
        verdict = judge(line);
        if (verdict) return verdict;
      }
      // A panic line is final even before its newline arrives (the host may print nothing more).
      const early = PANIC.exec(partial);
      if (early) verdict = `the emulated host's kernel panicked ("${early[0].trim()}")`;
      return verdict;
    },
  };
}
