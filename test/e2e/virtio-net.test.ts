/**
 * Tier 2: virtio-net on a TAP with Debian's kernel. The VM runs in a child
 * process inside a fresh network namespace (test/e2e/virtio-net-vm.ts), so
 * the TAP, its address and the guest's traffic never touch the host's
 * network; the namespace is deleted whatever happens. Checked: the guest's
 * eth0 is virtio_net with our MAC and carrier, ping works both ways,
 * 4 MiB cross TCP each way with matching SHA-256 on both sides, a guest
 * reboot keeps the TAP and its host address, and after the VM stops no
 * /dev/net/tun fd is left open and the TAP is gone.
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import * as path from 'node:path';
import { e2eSkipReason } from '../../lib/testing/e2e';

function netSkipReason(): string | undefined {
  const e2e = e2eSkipReason();
  if (e2e) return e2e;
  if (process.getuid?.() !== 0) return 'network namespaces and TAPs need root';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'iproute2 (ip) is not installed';
  }
  return undefined;
}

const skip = netSkipReason();
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`virtio-net e2e skipped: ${skip}`, () => {});

interface Transfer {
  bytes: number;
  hostSha256: string;
  guestSha256: string;
  ms: number;
}

interface NetResult {
  guestMac: string;
  expectedMac: string;
  driver: string;
  features: string;
  carrier: string;
  guestPing: string;
  hostPing: string;
  up: Transfer;
  down: Transfer;
  rxErrors: string;
  tcp: string;
  pingAfterReboot: string;
  hostAddressKept: boolean;
  tunFds: number;
  tapGone: boolean;
  stats: Record<string, unknown>;
}

function runInNamespace(ns: string, tap: string, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, path.join(__dirname, 'virtio-net-vm.js'), tap], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const mbps = (t: Transfer) => ((t.bytes * 8) / (t.ms / 1000) / 1e6).toFixed(1);

e2e('a guest on a TAP pings the host and back, 4 MiB cross TCP each way intact, a reboot keeps the TAP, and stop frees it', async (t) => {
  t.timeout(900_000);
  const ns = `nvmm-net-${process.pid}`;
  const tap = 'nvtap0';
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  });
  execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  const r = await runInNamespace(ns, tap, 840_000);
  const line = /^NET-RESULT (.*)$/m.exec(r.stdout);
  if (!line) t.fail(`the VM side exited ${r.code} without a result:\n${r.stderr.slice(-6000)}`);
  const res = JSON.parse(line![1]!) as NetResult;
  t.is(r.code, 0);
  t.is(res.driver, 'virtio_net');
  t.is(res.guestMac, res.expectedMac);
  t.is(res.carrier, '1');
  t.regex(res.guestPing, /3 packets transmitted, 3 packets received/, res.guestPing);
  t.regex(res.hostPing, /3 packets transmitted, 3 received, 0% packet loss/, res.hostPing);
  for (const [dir, x] of [['guest to host', res.up], ['host to guest', res.down]] as const) {
    t.is(x.bytes, 4 * 1024 * 1024, dir);
    t.regex(x.guestSha256, /^[0-9a-f]{64}$/, dir);
    t.is(x.guestSha256, x.hostSha256, dir);
    t.log(`${dir}: ${x.bytes} bytes in ${x.ms} ms (${mbps(x)} Mbit/s), sha256 ${x.hostSha256}`);
  }
  t.regex(res.pingAfterReboot, /2 packets transmitted, 2 packets received/, 'after a guest reboot the NIC works on the same TAP');
  t.true(res.hostAddressKept, 'the TAP kept its host address across the reboot');
  t.is(res.tunFds, 0, 'no /dev/net/tun fd left open after the VM stopped');
  t.true(res.tapGone, 'the TAP went away with its fd');
  // /sys/.../features: one character per feature bit, bit 0 first.
  t.is(res.features[15], '1', 'the guest took mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF)');
  t.true(Number(res.stats.rxMerged) > 0, 'TSO frames from the host spread over several mergeable buffers');
  t.is(res.rxErrors, '0 0', 'no receive length errors or receive errors in the guest');
  t.log(`guest ping: ${res.guestPing.trim().split('\n').slice(-1)[0]}`);
  t.log(`host ping: ${res.hostPing.trim().split('\n').slice(-1)[0]}`);
  t.log(`device counters: ${JSON.stringify(res.stats)}; guest Tcp: ${res.tcp}`);
  t.log(`guest feature bits: ${res.features}; rx length errors / rx errors: ${res.rxErrors}`);
});
