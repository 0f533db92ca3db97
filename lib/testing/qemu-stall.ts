/**
 * Notices an emulated host that froze: QEMU using no CPU at all for a while.
 * A TCG host that still runs, even idle, costs QEMU a few clock ticks every
 * few seconds (3-4 ticks per 10 s measured here for the x86 host), so a flat
 * CPU time over a minute and more means the emulated machine stopped (seen
 * 2026-12-06 with eight nested guests: QEMU's CPU time flat for minutes, the
 * host's clock stopped). The runners then give up at once instead of waiting
 * out their whole time limit.
 */
import * as fs from 'node:fs';

/** Default for the runners' stallMs: no CPU used by QEMU for this long is a frozen host. */
export const DEFAULT_STALL_MS = 90_000;

/** User plus system CPU time of a process, in clock ticks; undefined once it is gone. */
export function processCpuTicks(pid: number): number | undefined {
  try {
    // Fields after the command name (which may hold spaces and parentheses): utime is the 14th, stime the 15th.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

/**
 * Call `onStall(seconds)` once process `pid` has used no CPU for `stallMs`
 * (0: never), and `onIdle(seconds)` once after a third of that (a chance to
 * wake it: see kvm-host.ts). Returns the function that stops watching.
 */
export function watchForStall(pid: number | undefined, stallMs: number, onStall: (idleSeconds: number) => void, onIdle?: (idleSeconds: number) => void): () => void {
  if (pid === undefined || stallMs <= 0) return () => {};
  let ticks = -1;
  let movedAt = Date.now();
  let nudged = false;
  const timer = setInterval(() => {
    const now = processCpuTicks(pid);
    if (now === undefined) return;
    if (now !== ticks) {
      ticks = now;
      movedAt = Date.now();
      nudged = false;
    } else if (Date.now() - movedAt >= stallMs) {
      clearInterval(timer);
      onStall(Math.round((Date.now() - movedAt) / 1000));
    } else if (onIdle && !nudged && Date.now() - movedAt >= stallMs / 3) {
      nudged = true;
      onIdle(Math.round((Date.now() - movedAt) / 1000));
    }
  }, Math.min(10_000, stallMs / 3));
  return () => clearInterval(timer);
}
