/**
 * The TAP backend against the real /dev/net/tun (no KVM needed, but root or
 * CAP_NET_ADMIN is): busy and not-a-TAP errors, the watcher firing on the
 * kernel's own link-up traffic, writes counted by the interface, and close
 * freeing the fd and the interface. Skipped where TAPs cannot be made.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { TapBackend } from '../../../lib/devices/tap';
import { tapHostOps } from '../../../lib/hv/host-ops';

function tapSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'creating TAPs needs root';
  if (!fs.existsSync('/dev/net/tun')) return '/dev/net/tun does not exist';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'iproute2 (ip) is not installed';
  }
  return undefined;
}

const skip = tapSkipReason();
const tap = skip ? test.skip : test.serial;
if (skip) test.skip(`TAP tests skipped: ${skip}`, () => {});

const name = (tag: string) => `nvut${tag}${process.pid % 100000}`;

tap('a second open of the same TAP is busy; closing twice is harmless and frees the fd and the interface', (t) => {
  const n = name('a');
  const a = TapBackend.open(n, tapHostOps());
  t.teardown(() => a.close());
  t.is(a.name, n);
  t.true(fs.existsSync(`/sys/class/net/${n}`));
  t.throws(() => TapBackend.open(n, tapHostOps()), { code: 'ERR_TAP', message: `TAP ${n} is busy: another process (or VM) has it open` });
  a.watch(() => {});
  a.close();
  a.close();
  t.throws(() => fs.fstatSync(a.fd), { code: 'EBADF' });
  t.false(fs.existsSync(`/sys/class/net/${n}`), 'a non-persistent TAP goes away with its fd');
});

tap('an interface that is not a TAP is refused in one sentence', (t) => {
  t.throws(() => TapBackend.open('lo', tapHostOps()), { code: 'ERR_TAP', message: 'TAP lo cannot be attached: a network interface of that name exists and is not a TAP' });
});

tap('a user who may not open /dev/net/tun gets the permission sentence', (t) => {
  const module = JSON.stringify(require.resolve('../../../lib/devices/tap'));
  const hostOps = JSON.stringify(require.resolve('../../../lib/hv/host-ops'));
  const script = `let m, h; try { m = require(${module}); h = require(${hostOps}) } catch { console.log('unreadable'); process.exit(0) } try { m.TapBackend.open('nvutperm', h.tapHostOps()); console.log('opened') } catch (e) { console.log(e.code + ' ' + e.message) }`;
  const out = execFileSync(process.execPath, ['-e', script], { uid: 65534, gid: 65534, encoding: 'utf8' }).trim();
  if (out === 'unreadable') return t.pass('the checkout is not readable by nobody: nothing to check');
  t.is(out, 'ERR_TAP TAP nvutperm cannot be opened by this user: run as root, or create it for this user first (ip tuntap add dev nvutperm mode tap user $USER)');
});

tap('the watcher fires when the kernel sends on the TAP, and readv returns the frame after its virtio-net header', async (t) => {
  if (fs.readFileSync('/proc/sys/net/ipv6/conf/all/disable_ipv6', 'utf8').trim() === '1') return t.pass('IPv6 is disabled: no link-up traffic to watch');
  const n = name('b');
  const b = TapBackend.open(n, tapHostOps());
  t.teardown(() => b.close());
  const frame = await new Promise<Uint8Array>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no frame within 10 s of link up')), 10_000);
    b.watch(() => {
      const buf = new Uint8Array(2048);
      const len = b.readv([buf.subarray(0, 12), buf.subarray(12)]);
      if (len < 0) return;
      clearTimeout(timer);
      b.pauseReads();
      resolve(buf.subarray(0, len));
    });
    // Link up makes the kernel send IPv6 MLD reports and router solicitations through the TAP.
    execFileSync('ip', ['link', 'set', n, 'up']);
  });
  t.true(frame.length > 12 + 14);
  t.is((frame[12 + 12]! << 8) | frame[12 + 13]!, 0x86dd, 'an IPv6 frame after the 12-byte header');
});

tap('writev hands a frame to the interface, which counts it', (t) => {
  const n = name('c');
  const c = TapBackend.open(n, tapHostOps(), { vnetHdr: false });
  t.teardown(() => c.close());
  execFileSync('ip', ['link', 'set', n, 'up']);
  const count = () => Number(fs.readFileSync(`/sys/class/net/${n}/statistics/rx_packets`, 'utf8'));
  const before = count();
  // Broadcast ARP request from 52:54:00:00:00:01, split over two buffers.
  const eth = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x06]);
  const arp = Uint8Array.from([0, 1, 8, 0, 6, 4, 0, 1, 0x52, 0x54, 0, 0, 0, 1, 10, 9, 9, 2, 0, 0, 0, 0, 0, 0, 10, 9, 9, 1]);
  t.is(c.writev([eth, arp]), eth.length + arp.length);
  t.is(count(), before + 1);
});
