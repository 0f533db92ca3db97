/**
 * `nodevmm run` arguments: the memory rule (refuse more guest RAM than the
 * host's RAM plus swap unless --overcommit) and the exit statuses the CLI
 * documents for configuration errors, run as a real process where it needs
 * no /dev/kvm (the memory rule runs before the hypervisor is opened).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseRunArgs, RUN_USAGE } from '../../../lib/cli/args';
import { checkGuestMemoryFits, hostBackableBytes } from '../../../lib/cli/host-memory';
import { ConfigError } from '../../../lib/errors';
import { resolveVmConfig } from '../../../lib/vm/config';

const BIN = path.resolve(__dirname, '../../../../bin/nodevmm.js');
const GiB = 2 ** 30;

test('-m and --memory are recorded as typed; --overcommit is a flag', (t) => {
  const a = parseRunArgs(['--kernel', 'k', '-m', '4000G']);
  t.deepEqual(a.memoryArg, { flag: '-m', value: '4000G' });
  t.is(a.config.memory, '4000G');
  t.false(a.overcommit);
  const b = parseRunArgs(['--kernel', 'k', '--memory=512', '--overcommit']);
  t.deepEqual(b.memoryArg, { flag: '--memory', value: '512' });
  t.is(b.config.memory, '512M');
  t.true(b.overcommit);
});

test('guest RAM above the host RAM plus swap is refused in one sentence naming the flag and the value', (t) => {
  const e = t.throws(() => checkGuestMemoryFits('-m', '4000G', 4000 * GiB, 24 * GiB, false), { instanceOf: ConfigError });
  t.regex(e!.message, /^-m: 4000G \(3\.9 TiB\) is more guest RAM than this host can back \(24 GiB of RAM and swap\); .*--overcommit/);
  t.notRegex(e!.message, /\n/);
  t.notThrows(() => checkGuestMemoryFits('-m', '4000G', 4000 * GiB, 24 * GiB, true));
  t.notThrows(() => checkGuestMemoryFits('--memory', '24G', 24 * GiB, 24 * GiB, false));
});

test('the host size counts swap from /proc/meminfo', (t) => {
  t.is(hostBackableBytes('MemTotal: 1 kB\nSwapTotal:     2048 kB\n'), os.totalmem() + 2048 * 1024);
  t.is(hostBackableBytes(''), os.totalmem());
});

test('the run help documents the exit statuses of SIGINT (130) and SIGTERM (143) and --overcommit', (t) => {
  t.regex(RUN_USAGE, /130 killed\s+by Ctrl-A x or SIGINT/);
  t.regex(RUN_USAGE, /143 killed by SIGTERM/);
  t.regex(RUN_USAGE, /--overcommit/);
});

test('nodevmm run -m above the host exits 2 naming -m before opening /dev/kvm', (t) => {
  const r = spawnSync(process.execPath, [BIN, 'run', '--kernel', 'no-such-kernel', '-m', '100T', '--com1', 'none'], { timeout: 30_000 });
  t.is(r.status, 2, r.stderr.toString());
  t.regex(r.stderr.toString(), /^nodevmm: -m: 100T \(100 TiB\) is more guest RAM than this host can back .*\n$/);
});

test('--irqchip passes kernel or userspace to the config, which refuses anything else naming the field', (t) => {
  t.is(parseRunArgs(['--kernel', 'k', '--irqchip', 'userspace']).config.irqchip, 'userspace');
  t.is(parseRunArgs(['--kernel', 'k', '--irqchip=kernel']).config.irqchip, 'kernel');
  t.is(parseRunArgs(['--kernel', 'k']).config.irqchip, undefined);
  t.regex(RUN_USAGE, /--irqchip kernel\|userspace/);
  t.throws(() => resolveVmConfig(parseRunArgs(['--kernel', 'k', '--irqchip', 'split']).config, 'x86_64'), { message: /irqchip: "split" must be 'kernel' or 'userspace'/ });
});

test('--restore takes a folder and refuses machine options; --disk flags become its disk overrides', (t) => {
  const a = parseRunArgs(['--restore', 'snap', '--disk', 'a.img,snapshot', '--com1', 'stdio', '--snapshot-dir', 'next']);
  t.is(a.restore, 'snap');
  t.is(a.snapshotDir, 'next');
  t.deepEqual(a.config.disks, [{ path: 'a.img', overlay: 'temp' }]);
  const e = t.throws(() => parseRunArgs(['--restore', 'snap', '--kernel', 'k', '-m', '1G']), { instanceOf: ConfigError });
  t.regex(e!.message, /--restore: cannot be combined with the machine option kernel/);
  t.regex(e!.message, /--restore: cannot be combined with the machine option memory/);
  t.regex(RUN_USAGE, /Ctrl-A s snapshots into --snapshot-dir/);
});
