/**
 * Tier 1: `nodevmm run` as a process on this machine's /dev/kvm: the exit
 * statuses the CLI documents for disk errors, an unmappable --memory and the
 * signals that stop it.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { kvmSkipReason } from '../../lib/testing/kvm-test-helpers';
import { tinyPvhKernel } from '../../lib/testing/tiny-pvh';

const skip = kvmSkipReason();
const kvm = skip ? test.skip : test;
if (skip) console.log(`# SKIP kvm tier: ${skip}`);

const BIN = path.resolve(__dirname, '../../../bin/nodevmm.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-cli-'));
const kernel = path.join(dir, 'tiny-pvh');
fs.writeFileSync(kernel, tinyPvhKernel('CLI-READY\n', { powerOff: false }));
const baseArgs = ['run', '--kernel', kernel, '--boot', 'pvh', '-m', '64M'];

test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

kvm('disk images that are missing, a directory, under 512 bytes or a character device exit 2 with one sentence', (t) => {
  const small = path.join(dir, 'small.img');
  fs.writeFileSync(small, Buffer.alloc(100));
  const cases: Array<[string, RegExp]> = [
    [path.join(dir, 'missing.img'), /does not exist/],
    [dir, /is a directory/],
    [small, /is 100 bytes, smaller than one 512-byte sector/],
    ['/dev/null', /is not a regular file or block device/],
  ];
  for (const [disk, why] of cases) {
    const r = spawnSync(process.execPath, [BIN, ...baseArgs, '--com1', 'none', '--disk', disk], { timeout: 30_000 });
    t.is(r.status, 2, `${disk}: ${r.stderr}`);
    const err = r.stderr.toString();
    t.regex(err, /^nodevmm: disk image .* .*\n$/, disk);
    t.true(err.includes(disk) && why.test(err), err);
  }
});

kvm('--memory the host cannot map, even with --overcommit, exits 2 naming --memory and the value', (t) => {
  const r = spawnSync(process.execPath, [BIN, 'run', '--kernel', kernel, '--boot', 'pvh', '--memory', '100T', '--overcommit', '--com1', 'none'], { timeout: 30_000 });
  t.is(r.status, 2, r.stderr.toString());
  t.regex(r.stderr.toString(), /^nodevmm: --memory: 100T of guest RAM could not be mapped on this host \(.*ENOMEM.*\); use a smaller size\n$/);
});

/** Start the CLI on the tiny guest, wait for its output, send `signal`, return the exit status. */
async function statusAfter(signal: NodeJS.Signals): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...baseArgs, '--com1', 'stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('CLI-READY')) resolve();
    });
    child.once('exit', () => reject(new Error(`nodevmm exited before the guest printed: ${stderr}`)));
  });
  child.kill(signal);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  return { code, stderr };
}

kvm('SIGTERM stops nodevmm run with exit status 143 and SIGINT with 130', async (t) => {
  const term = await statusAfter('SIGTERM');
  t.is(term.code, 143, term.stderr);
  const int = await statusAfter('SIGINT');
  t.is(int.code, 130, int.stderr);
});

kvm('--trace prints the start-up milestones, the exit counters and the JS thread\'s own CPU time', (t) => {
  const once = path.join(dir, 'tiny-pvh-poweroff');
  fs.writeFileSync(once, tinyPvhKernel('CLI-TRACE\n'));
  const r = spawnSync(process.execPath, [BIN, 'run', '--kernel', once, '--boot', 'pvh', '-m', '64M', '--com1', 'stdio', '--trace'], { timeout: 30_000, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.true(r.stdout.includes('CLI-TRACE'), r.stdout);
  t.regex(r.stderr, /^nodevmm: since process start: cli \d+ms, images read \d+ms, vm built \d+ms, vcpus running \d+ms$/m);
  // The scheduler's per-thread run time of the main thread (/proc/self/task/<pid>/schedstat).
  t.regex(r.stderr, /^nodevmm: exits to JS \d+, native \d+, posted \d+; JS dispatches \d+ \(posted-write drains \d+, rescues \d+\); process CPU user \d+ms system \d+ms, JS thread on CPU \d+ms$/m);
});
