/**
 * User networking on passt for an arm64 guest, run inside the emulated arm64
 * KVM host by in-host.ts; the checks of test/e2e/virtio-net-user.test.ts.
 * That host has no interface with a default route (only a loopback), which
 * is the case nodevmm gives passt QEMU's user-net layout for
 * (PASST_NO_ROUTE_LAYOUT in lib/devices/passt.ts): the guest gets 10.0.2.15
 * by DHCP (busybox udhcpc) with router 10.0.2.2 and MTU 1500, fetches a page
 * from a Node HTTP server on the host's 127.0.0.1 through the gateway
 * address, serves one with busybox httpd that the host fetches through a
 * forward (127.0.0.1:18080 to the guest's 8080), and passt is gone once the
 * VM stopped. The passt is Debian's arm64 one (ensureArm64Helpers), in PATH
 * through arm64HelpersShell.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import type { Vm } from '../../lib/index';
import { withVm } from '../../lib/testing/index';
import { dhcpLease, guestOk as guest } from '../guest-dhcp';

const run = promisify(execFile);
const HOST_FORWARD_PORT = 18080;
const GUEST_PORT = 8080;
/** Live processes named passt whose parent is this process (passt runs under setpriv, which execs it). */
function passtPids(): number[] {
  const pids: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
      const after = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (after[0] === 'Z' || Number(after[1]) !== process.pid) continue;
      if (fs.readFileSync(`/proc/${pid}/comm`, 'latin1').trim() === 'passt') pids.push(Number(pid));
    } catch {
      // gone
    }
  }
  return pids;
}

function httpGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

export async function userNet(step: (what: string) => void, tee: (vm: Vm) => void): Promise<Record<string, unknown>> {
  // The host's loopback carries the test's own traffic (the server, the forward); the host's init
  // leaves it down. Its default route is what stays missing.
  await run('ip', ['link', 'set', 'lo', 'up']);
  const routes = fs.readFileSync('/proc/net/route', 'latin1');
  const page = `hello from the arm64 host ${process.pid}\n`;
  const server = http.createServer((_req, res) => res.end(page));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const hostPort = (server.address() as AddressInfo).port;
  let pids: number[] = [];
  try {
    const t = { log: (...v: unknown[]) => console.log(...v) };
    const forward = [{ hostPort: HOST_FORWARD_PORT, guestPort: GUEST_PORT, hostAddress: '127.0.0.1' }];
    const result = await withVm(t, { net: [{ user: { forward } }], cmdline: 'quiet', timeoutMs: 400_000, waitFor: false }, async (vm) => {
      tee(vm);
      await vm.expect(/GUEST-INIT-OK/, { timeoutMs: 120_000 });
      step('userNet: booted');
      pids = passtPids();
      const { dhcp, lease } = await dhcpLease(vm, 20);
      step(`userNet: lease ${lease}`);
      const gateway = lease.split(' ')[2]!;
      const fetched = await guest(vm, `wget -q -O - http://${gateway}:${hostPort}/`);
      await guest(vm, `mkdir -p /tmp/www && echo "hello from the guest" > /tmp/www/index.html && httpd -p ${GUEST_PORT} -h /tmp/www`);
      const forwarded = await httpGet(`http://127.0.0.1:${HOST_FORWARD_PORT}/`);
      const stats = vm.netStats()[0]!;
      return { dhcp: dhcp.trim(), lease, fetched, pageMatches: fetched === page, forwarded: forwarded.trim(), netStats: { rxPackets: stats.rxPackets, txPackets: stats.txPackets } };
    });
    // Stopped with the VM (SIGTERM, SIGKILL after 2 s): a bounded wait.
    let left = pids;
    for (let i = 0; i < 50 && left.length; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = passtPids().filter((p) => pids.includes(p));
    }
    return { ...result, hostHadDefaultRoute: routes.split('\n').slice(1).some((l) => l.split(/\s+/)[1] === '00000000'), passt: pids.length, passtLeft: left.length };
  } finally {
    server.close();
  }
}
