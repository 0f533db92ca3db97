/**
 * lib/testing/kvm-host.ts: a frozen emulated host is given up on within
 * `stallMs`, not after the run's whole time limit. QEMU is frozen for real
 * (SIGSTOP) once the host is up. Needs qemu-system-x86_64 and the cached
 * guest artifacts; skipped without them, as CI installs both.
 */
import * as fs from 'node:fs';
import { findGuestArtifacts, guestCacheRoot } from '../../../lib/testing/artifacts';
import { missingToolsReason } from '../../../lib/testing/host-tools';
import { KVM_HOST_READY_MARKER, runInKvmHost } from '../../../lib/testing/kvm-host';
import { testWhen } from '../../needs';

const artifacts = findGuestArtifacts('x86_64');
const skip = missingToolsReason(['qemu-system-x86_64']) ?? (!artifacts ? `no guest artifacts in ${guestCacheRoot()} (npm test or node scripts/guest-artifacts.js fetches them)` : undefined);

/** Our child processes named `name`. */
function children(name: string): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && comm.startsWith(name)) out.push(Number(pid));
    } catch {
      // gone
    }
  }
  return out;
}

testWhen(skip)('a frozen emulated host fails with ERR_KVM_HOST_STALLED after stallMs, not at the time limit', async (t) => {
  let frozenAt = 0;
  let seen = '';
  const run = runInKvmHost('sleep 600', {
    cwd: '/',
    timeoutMs: 300_000,
    stallMs: 15_000,
    smp: 1,
    artifacts: artifacts!,
    onConsole: (text) => {
      seen += text;
      if (frozenAt || !seen.includes(KVM_HOST_READY_MARKER)) return;
      const [pid] = children('qemu-system');
      if (pid === undefined) return;
      frozenAt = Date.now();
      process.kill(pid, 'SIGSTOP');
    },
  });
  const err = await t.throwsAsync(run, { code: 'ERR_KVM_HOST_STALLED' });
  t.regex(err!.message, /used no CPU for \d+ s: the emulated host is frozen/);
  t.true(frozenAt > 0, 'the host came up and was frozen');
  t.log(`gave up ${Date.now() - frozenAt} ms after the freeze (stallMs 15000, time limit 300000)`);
  t.deepEqual(children('qemu-system'), [], 'QEMU was killed');
});

testWhen(skip)('console text keeps multibyte characters whole across chunk boundaries (ava titles carry "›")', async (t) => {
  // 3000 three-byte characters over a serial line arrive in many chunks, most of which end
  // mid-character; decoding each chunk alone turns those into U+FFFD.
  const r = await runInKvmHost(`printf '%.0s\\342\\200\\272' $(seq 3000); echo; echo END-OF-TEXT`, { cwd: '/', timeoutMs: 300_000, smp: 1, artifacts: artifacts! });
  t.is(r.exitCode, 0);
  const line = r.consoleLog.split(/\r?\n/).find((l) => l.startsWith('›'));
  t.is(line?.replace(/\r/g, ''), '›'.repeat(3000));
  t.false(r.consoleLog.includes('\ufffd'), 'no replacement characters');
});
