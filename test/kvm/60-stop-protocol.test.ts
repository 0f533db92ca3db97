/**
 * Tier 1: stopping a VM ends in bounded time from any vCPU state. Each mode
 * of stop-stress-child.js destroys two-vCPU VMs at random moments, hundreds
 * of rounds in a row, in a child process: a hung stop blocks the child's
 * main thread inside the native Join(), so only another process can notice.
 * A round that does not finish within ROUND_TIMEOUT_MS fails the test.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { kvmSkipReason } from '../../lib/testing/kvm-test-helpers';

const skip = kvmSkipReason();
const kvm = skip ? test.serial.skip : test.serial;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

/** A round takes a few milliseconds; this only catches a hang. */
const ROUND_TIMEOUT_MS = 5_000;
const CHILD = path.join(__dirname, 'stop-stress-child.js');

interface StressResult {
  rounds: number;
  hungAt?: number;
  error?: string;
  /** From the child's last line: device reads and writes answered, vCPU stop events seen. */
  reads?: number;
  writes?: number;
  stops?: number;
}

function stress(mode: string, rounds: number, seed: number): Promise<StressResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CHILD, mode, String(rounds), String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let done = 0;
    let buf = '';
    let stderr = '';
    let result: StressResult | undefined;
    let totals: Pick<StressResult, 'reads' | 'writes' | 'stops'> = {};
    let timer = setTimeout(onHang, ROUND_TIMEOUT_MS);
    function onHang(): void {
      result = { rounds: done, hungAt: done };
      child.kill('SIGKILL');
    }
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('round ')) {
          done++;
          clearTimeout(timer);
          timer = setTimeout(onHang, ROUND_TIMEOUT_MS);
        } else if (line.startsWith('done ')) {
          const [, reads, writes, stops] = /^done reads (\d+) writes (\d+) stops (\d+)/.exec(line) ?? [];
          totals = { reads: Number(reads), writes: Number(writes), stops: Number(stops) };
        } else if (line.startsWith('error ')) {
          result ??= { rounds: done, error: line.slice(6) };
        }
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (!result && code !== 0) result = { rounds: done, error: `child exited with ${code ?? signal}: ${stderr.slice(-2000)}` };
      resolve({ ...(result ?? { rounds: done }), ...totals });
    });
  });
}

const seed = Date.now() >>> 0;
for (const [mode, rounds, what] of [
  ['timer', 800, 'from a timer or an immediate while both vCPUs exit'],
  ['device', 800, "from the other vCPU's device handler"],
  ['throw', 500, 'after a device handler threw (the host-error stop)'],
  ['rep', 500, 'while a vCPU is inside a rep insb string of port reads'],
] as const) {
  kvm(`destroying a two-vCPU VM ${what} never hangs (${rounds} rounds)`, async (t) => {
    const r = await stress(mode, rounds, seed);
    t.log(`mode ${mode}, seed ${seed}: ${r.rounds} rounds, ${r.reads} device reads, ${r.writes} device writes, ${r.stops} vcpu stops`);
    t.is(r.hungAt, undefined, `round ${r.hungAt} of mode ${mode} (seed ${seed}) did not finish within ${ROUND_TIMEOUT_MS} ms: the stop hung`);
    t.is(r.error, undefined);
    t.is(r.rounds, rounds);
    t.true(r.reads! > rounds, 'vCPU 0 waited on the TypeScript device in most rounds');
    if (mode === 'device' || mode === 'throw') t.true(r.writes! > 0, "vCPU 1's device handler ran");
    // A destroy is not a vCPU stop: only the host-error path of the throw mode reports one (once per round).
    t.is(r.stops, mode === 'throw' ? rounds : 0);
  });
}
