/**
 * Tier 2: user networking on passt with Debian's kernel, no TAP on the data
 * path and no root needed by nodevmm itself. The VM runs in a child process
 * inside a fresh network namespace (unshare) whose only interface is a TAP
 * that serves passt as its address template, so all traffic stays on this
 * namespace's loopback (test/e2e/virtio-net-user-vm.ts). Checked: the guest
 * gets 10.0.2.15 by DHCP with the gateway 10.0.2.2 and MTU 1500, fetches a
 * page from an HTTP server on the host's 127.0.0.1 through the gateway
 * address, the host fetches a page the guest serves through a forwarded
 * port, and passt is gone once the VM stopped.
 */
import test from 'ava';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { e2eSkipReason } from '../../lib/testing/e2e';
import { findExecutable } from '../../lib/util/helper-process';

/** Whether the kernel refuses us a user namespace (in a chroot, or disabled): passt needs one for its sandbox. */
function userNamespaceRefused(): boolean {
  return spawnSync('unshare', ['--user', 'true']).status !== 0;
}

function skipReason(): string | undefined {
  const e2e = e2eSkipReason();
  if (e2e) return e2e;
  if (!findExecutable('passt')) return 'passt is not installed (apt-get install passt)';
  if (!findExecutable('unshare')) return 'unshare (util-linux) is not installed';
  if (userNamespaceRefused()) return 'the kernel refuses this process a user namespace (in a chroot, as in the emulated KVM host, or with user namespaces disabled), and passt isolates itself in one';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'iproute2 (ip) is not installed';
  }
  return undefined;
}

const skip = skipReason();
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`user networking e2e skipped: ${skip}`, () => {});

interface UserResult {
  dhcp: string;
  lease: string;
  gateway: string;
  fetched: string;
  expectedPage: string;
  forwarded: string;
  stats: Record<string, unknown>;
  passtPids: number[];
  passtLeft: number[];
}

const NAMESPACE_SETUP = [
  'ip link set lo up',
  'ip tuntap add dev nvup0 mode tap',
  'ip link set nvup0 up',
  'ip addr add 10.0.2.15/24 dev nvup0',
  'ip route add default via 10.0.2.2 dev nvup0',
].join(' && ');

e2e('a guest on passt gets an address by DHCP, reaches the host loopback through its gateway, serves a forwarded port, and passt stops with the VM', async (t) => {
  t.timeout(700_000);
  const script = path.join(__dirname, 'virtio-net-user-vm.js');
  // As root a plain network namespace; otherwise a user namespace maps us to root in it.
  const unshare = process.getuid?.() === 0 ? ['-n'] : ['-rn'];
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn('unshare', [...unshare, 'sh', '-c', `${NAMESPACE_SETUP} && exec "$0" "$1"`, process.execPath, script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 660_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  const line = /^USER-RESULT (.*)$/m.exec(r.stdout);
  if (!line) return t.fail(`the VM side exited ${r.code} without a result:\n${r.stderr.slice(-6000)}`);
  const res = JSON.parse(line[1]!) as UserResult;
  t.is(r.code, 0);
  t.is(res.lease, '10.0.2.15 255.255.255.0 10.0.2.2 1500', `udhcpc said: ${res.dhcp}`);
  t.is(res.fetched, res.expectedPage, 'the guest fetched the page served on the host loopback through the gateway address');
  t.is(res.forwarded.trim(), 'hello from the guest', 'the host reached the guest through the forward');
  t.is(res.passtPids.length, 1, 'one passt per user NIC');
  t.deepEqual(res.passtLeft, [], 'passt is gone after the VM stopped');
  t.log(`device counters: ${JSON.stringify(res.stats)}`);
});
