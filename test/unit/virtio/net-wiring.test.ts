import test from 'ava';
import { ConfigError } from '../../../lib/errors';
import { parseRunArgs } from '../../../lib/cli/args';
import { defaultMac, resolveVmConfig } from '../../../lib/vm/config';
import { virtioSlots } from '../../../lib/vm/virtio-devices';
import { tapErrorMessage } from '../../../lib/devices/tap';

test('net slots come right after the disks, before rng and console', (t) => {
  const cfg = resolveVmConfig({ kernel: 'k', disks: [{ path: 'a' }], net: [{ tap: 'tap0' }, { tap: 'tap1' }], rng: true, virtioConsole: true });
  const slots = virtioSlots(cfg);
  t.deepEqual(slots.map((s) => s.device), [{ kind: 'blk', index: 0 }, { kind: 'net', index: 0 }, { kind: 'net', index: 1 }, { kind: 'rng' }, { kind: 'console' }]);
  t.deepEqual(slots.map((s) => s.irq), [16, 17, 18, 19, 20]);
});

test('config: a NIC gets a stable, locally administered unicast default MAC, distinct per TAP', (t) => {
  const a = resolveVmConfig({ kernel: 'k', name: 'web', net: [{ tap: 'tap0' }, { tap: 'tap1', mac: '52:54:00:AA:BB:CC' }] });
  t.regex(a.net[0]!.mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
  t.is(a.net[0]!.mac, defaultMac('web', 'tap0', 0));
  t.is(resolveVmConfig({ kernel: 'k', name: 'web', net: [{ tap: 'tap0' }] }).net[0]!.mac, a.net[0]!.mac, 'the same config gives the same MAC');
  t.not(resolveVmConfig({ kernel: 'k', name: 'web', net: [{ tap: 'tap9' }] }).net[0]!.mac, a.net[0]!.mac);
  t.is(a.net[1]!.mac, '52:54:00:aa:bb:cc');
  const first = parseInt(a.net[0]!.mac.slice(0, 2), 16);
  t.is(first & 2, 2, 'locally administered');
  t.is(first & 1, 0, 'unicast');
  t.deepEqual(resolveVmConfig({ kernel: 'k' }).net, []);
});

test('config rejects bad NICs, naming the field and the value', (t) => {
  const e = t.throws(
    () =>
      resolveVmConfig({
        kernel: 'k',
        net: [
          { tap: 'a-very-long-tap-name' },
          { tap: 'tap 0' },
          { tap: 'tap1', mac: '52:54:00:12:34' },
          { tap: 'tap2', mac: '01:00:5e:00:00:01' },
          { tap: 'tap3' },
          { tap: 'tap3' },
          { tap: '' },
          'tap4' as never,
          { tap: 'tap5', ip: '10.0.0.1' } as never,
        ],
      }),
    { instanceOf: ConfigError },
  );
  t.deepEqual(
    e!.issues.map((i) => i.path),
    ['net[0].tap', 'net[1].tap', 'net[2].mac', 'net[3].mac', 'net[5].tap', 'net[6].tap', 'net[7]', 'net[8].ip'],
  );
  const msg = (p: string) => e!.issues.find((i) => i.path === p)!.message;
  t.is(msg('net[0].tap'), '"a-very-long-tap-name" is longer than the 15 bytes an interface name may have');
  t.is(msg('net[2].mac'), '"52:54:00:12:34" is not a MAC address like "52:54:00:12:34:56"');
  t.regex(msg('net[3].mac'), /multicast/);
  t.regex(msg('net[5].tap'), /used twice/);
  t.throws(() => resolveVmConfig({ kernel: 'k', net: 'tap0' as never }), { message: /net: must be an array/ });
  const many = Array.from({ length: 7 }, (_, i) => ({ path: `d${i}` }));
  t.throws(() => resolveVmConfig({ kernel: 'k', disks: many, net: [{ tap: 't0' }, { tap: 't1' }] }), { message: /9 virtio devices \(disks, net, shares, vsock, rng, console\) are more than the 8/ });
});

test('--net tap:NAME[,mac=MAC] is repeatable and becomes config; malformed values name the flag', (t) => {
  const a = parseRunArgs(['--kernel', 'k', '--net', 'tap:tap0', '--net=tap:tap1,mac=52:54:00:00:00:01']);
  t.deepEqual(a.config.net, [{ tap: 'tap0' }, { tap: 'tap1', mac: '52:54:00:00:00:01' }]);
  const e = t.throws(() => parseRunArgs(['--kernel', 'k', '--net', 'tap0']), { instanceOf: ConfigError });
  t.deepEqual(e!.issues, [{ path: '--net', message: '"tap0" is not tap:NAME[,mac=MAC] or user[,hostfwd=tcp::HOSTPORT-:GUESTPORT][,mac=MAC]' }]);
  t.throws(() => parseRunArgs(['--kernel', 'k', '--net', 'tap:tap0,ip=1']), { message: /not tap:NAME/ });
  t.throws(() => parseRunArgs(['--kernel', 'k', '--net']), { message: /needs a value/ });
});

test('TAP open failures are one sentence naming the TAP and what to do', (t) => {
  t.is(tapErrorMessage('tap0', 'ENOENT', 'x'), 'TAP tap0 cannot be opened: /dev/net/tun does not exist (load the tun module: modprobe tun)');
  t.is(tapErrorMessage('tap0', 'EBUSY', 'x'), 'TAP tap0 is busy: another process (or VM) has it open');
  t.regex(tapErrorMessage('tap0', 'EPERM', 'x'), /^TAP tap0 cannot be opened by this user: run as root, or create it for this user first \(ip tuntap add dev tap0 mode tap user \$USER\)$/);
  t.is(tapErrorMessage('eth0', 'EINVAL', 'x'), 'TAP eth0 cannot be attached: a network interface of that name exists and is not a TAP');
  t.is(tapErrorMessage('tap0', 'EIO', 'attach TAP tap0 failed: Input/output error (EIO)'), 'TAP tap0 cannot be opened: attach TAP tap0 failed: Input/output error (EIO)');
});
