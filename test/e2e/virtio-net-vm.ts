/**
 * The VM side of test/e2e/virtio-net.test.ts, run by that test inside its
 * own network namespace (ip netns exec NS node virtio-net-vm.js TAP): boots
 * Debian's kernel with a virtio-net NIC on TAP, gives the TAP 10.0.2.1/24
 * and the guest's eth0 10.0.2.15/24, pings both ways, moves 4 MiB each way
 * over TCP (busybox nc against a Node server here), reboots the guest and
 * pings again, checks that the stopped VM left no TAP fd, and prints one line
 * `NET-RESULT {json}` with everything it measured. All host-side commands
 * run asynchronously: the event loop also runs the NIC.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { promisify } from 'node:util';
import { withVm } from '../../lib/testing/harness';
import type { Vm } from '../../lib/vm/vm';

const run = promisify(execFile);
const HOST_IP = '10.0.2.1';
const GUEST_IP = '10.0.2.15';
const MAC = '52:54:00:12:34:56';
const BYTES = 4 * 1024 * 1024;

interface Transfer {
  bytes: number;
  hostSha256: string;
  guestSha256: string;
  ms: number;
}

/** A one-connection TCP server on HOST_IP:port; `serve` handles the socket, the promise settles with its result. */
function oneConnection<T>(port: number, serve: (s: net.Socket, done: (v: T) => void, fail: (e: Error) => void) => void): { listening: Promise<void>; result: Promise<T> } {
  let resolveListening!: () => void;
  const listening = new Promise<void>((r) => (resolveListening = r));
  const result = new Promise<T>((resolve, reject) => {
    const server = net.createServer((s) => {
      server.close();
      serve(s, resolve, reject);
    });
    server.on('error', reject);
    server.listen(port, HOST_IP, resolveListening);
  });
  return { listening, result };
}

async function guest(vm: Vm, command: string, timeoutMs = 60_000): Promise<string> {
  const r = await vm.exec(command, { timeoutMs });
  if (r.exitCode !== 0) throw new Error(`guest command ${JSON.stringify(command)} exited ${r.exitCode}: ${r.stdout}`);
  return r.stdout;
}

async function upload(vm: Vm): Promise<Transfer> {
  const srv = oneConnection<{ bytes: number; sha: string }>(5555, (s, done, fail) => {
    const h = createHash('sha256');
    let bytes = 0;
    let finished = false;
    // Close from this side after the whole blob (or at the guest's FIN): some nc builds keep the socket open at stdin EOF.
    const finish = () => {
      if (finished) return;
      finished = true;
      s.end();
      done({ bytes, sha: h.digest('hex') });
    };
    s.on('data', (d: Buffer) => {
      h.update(d);
      bytes += d.length;
      if (bytes >= BYTES) finish();
    });
    s.on('end', finish);
    s.on('error', fail);
  });
  await srv.listening;
  const guestSha = (await guest(vm, `dd if=/dev/urandom of=/tmp/up bs=4096 count=${BYTES / 4096} 2>/dev/null && sha256sum /tmp/up`)).split(/\s+/)[0]!;
  const started = Date.now();
  // Guest to host ran at ~0.4 Mbit/s in the emulated KVM host before ioeventfd kicks (~18 Mbit/s since): the timeouts keep room for the slow case.
  await guest(vm, `nc ${HOST_IP} 5555 < /tmp/up`, 300_000);
  const got = await srv.result;
  return { bytes: got.bytes, hostSha256: got.sha, guestSha256: guestSha, ms: Date.now() - started };
}

async function download(vm: Vm): Promise<Transfer> {
  const data = randomBytes(BYTES);
  const srv = oneConnection<void>(5556, (s, done, fail) => {
    s.on('error', fail);
    s.end(data, () => done());
    s.resume();
  });
  await srv.listening;
  const started = Date.now();
  await guest(vm, `nc ${HOST_IP} 5556 > /tmp/down`, 120_000);
  const ms = Date.now() - started;
  await srv.result;
  const out = await guest(vm, 'wc -c < /tmp/down; sha256sum /tmp/down');
  const [size, sha] = out.trim().split(/\s+/);
  return { bytes: Number(size), hostSha256: createHash('sha256').update(data).digest('hex'), guestSha256: sha ?? '', ms };
}

async function main(): Promise<void> {
  const tap = process.argv[2] ?? 'nvtap0';
  const log = (...v: unknown[]) => process.stderr.write(v.join(' ') + '\n');
  const result = await withVm({ log }, { net: [{ tap, mac: MAC }], timeoutMs: 780_000, bootTimeoutMs: 180_000 }, async (vm) => {
    // The TAP exists once the VM has opened it: give the host side its address.
    await run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', tap]);
    await run('ip', ['link', 'set', tap, 'up']);
    const guestMac = (await guest(vm, 'i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; cat /sys/class/net/eth0/address')).trim();
    const driver = (await guest(vm, 'basename $(readlink /sys/class/net/eth0/device/driver)')).trim();
    const features = (await guest(vm, 'cat /sys/class/net/eth0/device/features')).trim();
    await guest(vm, `ip link set eth0 up && ip addr add ${GUEST_IP}/24 dev eth0`);
    const guestPing = await guest(vm, `ping -c 3 -W 5 ${HOST_IP}`, 60_000);
    const hostPing = (await run('ping', ['-c', '3', '-W', '5', GUEST_IP])).stdout;
    const up = await upload(vm);
    const down = await download(vm);
    const carrier = (await guest(vm, 'cat /sys/class/net/eth0/carrier')).trim();
    const rxErrors = (await guest(vm, 'cat /sys/class/net/eth0/statistics/rx_length_errors /sys/class/net/eth0/statistics/rx_errors | tr "\\n" " "')).trim();
    const tcp = (await guest(vm, 'grep Tcp: /proc/net/snmp | tail -1')).trim();
    const stats = vm.netStats()[0];
    // A reboot rebuilds the machine but keeps the TAP (and so its host address): the new NIC works at once.
    await vm.reset();
    await vm.serial(1).expect(/GUEST-INIT-OK/, { timeoutMs: 180_000 });
    await guest(vm, `i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; ip link set eth0 up && ip addr add ${GUEST_IP}/24 dev eth0`);
    const pingAfterReboot = await guest(vm, `ping -c 2 -W 5 ${HOST_IP}`, 60_000);
    const hostAddressKept = (await run('ip', ['-o', 'addr', 'show', 'dev', tap])).stdout.includes(HOST_IP);
    return { pingAfterReboot, hostAddressKept, stats, tcp, guestMac, driver, features, carrier, guestPing, hostPing, up, down, rxErrors, expectedMac: MAC };
  });
  // The VM stopped: its TAP fd is closed (so the non-persistent TAP is gone) and nothing watches it.
  const tunFds = fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === '/dev/net/tun';
    } catch {
      return false;
    }
  }).length;
  const tapGone = !fs.existsSync(`/sys/class/net/${tap}`);
  process.stdout.write(`NET-RESULT ${JSON.stringify({ ...result, tunFds, tapGone })}\n`);
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`virtio-net-vm failed: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
