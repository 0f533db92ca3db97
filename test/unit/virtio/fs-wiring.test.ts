/**
 * virtio-fs shares in the configuration, on the command line and in the
 * slot list: every problem named with its field and value, one slot per
 * share after the NICs, and createVm refusing a directory that is not there.
 */
import test from 'ava';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError } from '../../../lib/errors';
import { parseRunArgs } from '../../../lib/cli/args';
import { resolveVmConfig } from '../../../lib/vm/config';
import { virtioSlots } from '../../../lib/vm/virtio-devices';
import { createVm } from '../../../lib/vm/vm';

test('share slots come after the NICs and before vsock, rng and console', (t) => {
  const cfg = resolveVmConfig({ kernel: 'k', disks: [{ path: 'a' }], net: [{ tap: 'tap0' }], shares: [{ path: '/a', tag: 'a' }, { path: '/b', tag: 'b', readOnly: true }], vsock: { cid: 3 }, rng: true });
  t.deepEqual(virtioSlots(cfg).map((s) => s.device), [{ kind: 'blk', index: 0 }, { kind: 'net', index: 0 }, { kind: 'fs', index: 0 }, { kind: 'fs', index: 1 }, { kind: 'vsock' }, { kind: 'rng' }]);
  t.deepEqual(cfg.shares, [{ path: '/a', tag: 'a', readOnly: false }, { path: '/b', tag: 'b', readOnly: true }]);
  t.deepEqual(resolveVmConfig({ kernel: 'k' }).shares, []);
});

test('config rejects bad shares, naming the field and the value, every one at once', (t) => {
  const e = t.throws(
    () =>
      resolveVmConfig({
        kernel: 'k',
        shares: [
          { path: '', tag: 'a' },
          { path: '/x', tag: 'y'.repeat(37) },
          { path: '/x', tag: 'ok' },
          { path: '/y', tag: 'ok' },
          { path: '/z', tag: 'z', readOnly: 'yes' as unknown as boolean },
          { path: '/z', tag: 'w', writable: true } as never,
        ],
      }),
    { instanceOf: ConfigError },
  );
  t.deepEqual(
    e!.issues.map((i) => [i.path, i.message]),
    [
      ['shares[0].path', 'must be a non-empty directory path, got ""'],
      ['shares[1].tag', `"${'y'.repeat(37)}" must be 1 to 36 bytes of UTF-8 without NUL`],
      ['shares[3].tag', '"ok" is used twice: the guest mounts a share by its tag'],
      ['shares[4].readOnly', 'must be true or false, got "yes"'],
      ['shares[5].writable', 'is not a known option (known: path, tag, readOnly)'],
    ],
  );
  t.throws(() => resolveVmConfig({ kernel: 'k', shares: Array.from({ length: 9 }, (_, i) => ({ path: '/d', tag: `t${i}` })) }), { message: /9 virtio devices \(disks, net, shares, vsock, rng, console\) are more than the 8/ });
});

test('--share HOSTDIR:TAG[,ro] becomes shares; anything else is refused with the flag and the value', (t) => {
  const a = parseRunArgs(['--kernel', 'k', '--share', '/srv/data:data', '--share', '/etc/x:conf,ro']);
  t.deepEqual(a.config.shares, [{ path: '/srv/data', tag: 'data' }, { path: '/etc/x', tag: 'conf', readOnly: true }]);
  for (const bad of ['/srv/data', '/srv/data:', ':tag', '/srv:a,rw']) {
    const e = t.throws(() => parseRunArgs(['--kernel', 'k', '--share', bad]), { instanceOf: ConfigError });
    t.deepEqual(e!.issues, [{ path: '--share', message: `${JSON.stringify(bad)} is not HOSTDIR:TAG or HOSTDIR:TAG,ro` }], bad);
  }
});

test('createVm refuses a share whose directory is missing, before anything starts', async (t) => {
  const missing = path.join(os.tmpdir(), 'nodevmm-no-such-share-dir');
  const e = await t.throwsAsync(createVm({ kernel: new Uint8Array(4096), shares: [{ path: missing, tag: 'gone' }] }), { instanceOf: ConfigError });
  t.is(e!.message, `shares[0].path: ${missing} is not a directory (share "gone")`);
});
