/**
 * scripts/kvm-host.js --monitor and qemuArgs' monitorSocket: QEMU's monitor on a unix socket,
 * to see where a silent emulated host's CPU is (docs/testing.md).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { qemuArgs } from '../../../lib/testing/kvm-host';

const SCRIPT = path.resolve(__dirname, '../../../../scripts/kvm-host.js');

test('qemuArgs puts the monitor on the socket only when asked', (t) => {
  const args = qemuArgs('/k', '/i', '/r', '/a', { monitorSocket: '/tmp/mon.sock' });
  const i = args.indexOf('-monitor');
  t.true(i >= 0);
  t.is(args[i + 1], 'unix:/tmp/mon.sock,server=on,wait=off');
  t.false(qemuArgs('/k', '/i', '/r', '/a', {}).includes('-monitor'));
});

test('--monitor without a socket path, or followed by another flag, is refused in one sentence before any host boots', (t) => {
  for (const [flags, shown] of [[['--monitor'], 'nothing'], [['--monitor', '--quiet'], '"--quiet"']] as const) {
    const r = spawnSync(process.execPath, [SCRIPT, ...flags, '--', 'true'], { encoding: 'utf8', timeout: 30_000 });
    t.is(r.status, 2, r.stderr);
    t.is(r.stderr.trim(), `kvm-host: --monitor needs the path of a unix socket, not ${shown}`);
  }
});
