/**
 * The VM side of test/e2e/virtio-net-user.test.ts, run by that test inside a
 * fresh network namespace whose only interface is a TAP named nvup0 with
 * 10.0.2.15/24 and a default route via 10.0.2.2: passt copies its addresses
 * from the interface with the default route (it is only the template; no
 * traffic goes through it). Boots Debian's kernel with one NIC on user
 * networking and a forward of host port 127.0.0.1:18080 to guest port 8080,
 * gets an address by DHCP (busybox udhcpc), fetches a page from a Node HTTP
 * server on this namespace's 127.0.0.1 through the gateway address, serves a
 * page with busybox httpd that this side fetches through the forward, and
 * after the VM stopped checks that passt is gone. Prints one line
 * `USER-RESULT {json}`.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { withVm } from '../../lib/testing/harness';
import { dhcpLease, guestOk as guest } from '../guest-dhcp';

const HOST_FORWARD_PORT = 18080;
const GUEST_PORT = 8080;
/** PIDs of this process's children (all threads). */
function children(): number[] {
  const out: number[] = [];
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      out.push(...fs.readFileSync(`/proc/self/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
    } catch {
      // thread gone
    }
  }
  return out;
}

function comm(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return undefined;
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function httpGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    }).on('error', reject);
  });
}

async function main(): Promise<void> {
  const log = (...v: unknown[]) => process.stderr.write(v.join(' ') + '\n');
  const page = `hello from the host ${process.pid}\n`;
  const server = http.createServer((_req, res) => res.end(page));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const hostPort = (server.address() as AddressInfo).port;
  let passtPids: number[] = [];
  const result = await withVm({ log }, { net: [{ user: { forward: [{ hostPort: HOST_FORWARD_PORT, guestPort: GUEST_PORT, hostAddress: '127.0.0.1' }] } }], timeoutMs: 600_000, bootTimeoutMs: 180_000 }, async (vm) => {
    passtPids = children().filter((p) => /passt/.test(comm(p) ?? ''));
    const { dhcp, lease } = await dhcpLease(vm, 10);
    const gateway = lease.split(' ')[2]!;
    const fetched = await guest(vm, `wget -q -O - http://${gateway}:${hostPort}/`, 60_000);
    await guest(vm, `mkdir -p /tmp/www && echo "hello from the guest" > /tmp/www/index.html && httpd -p ${GUEST_PORT} -h /tmp/www`);
    const forwarded = await httpGet(`http://127.0.0.1:${HOST_FORWARD_PORT}/`);
    const stats = vm.netStats()[0];
    return { dhcp, lease, gateway, fetched, expectedPage: page, forwarded, stats };
  });
  server.close();
  // passt was told to stop with the VM: it must be gone (waited for up to 5 s: SIGTERM, then SIGKILL after 2 s).
  let left = passtPids;
  for (let i = 0; i < 50 && left.length; i++) {
    await new Promise((r) => setTimeout(r, 100));
    left = left.filter((p) => comm(p) !== undefined);
  }
  process.stdout.write(`USER-RESULT ${JSON.stringify({ ...result, passtPids, passtLeft: left })}\n`);
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`virtio-net-user-vm failed: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
