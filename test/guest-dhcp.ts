/**
 * Test helper for guests of the test initramfs on a user-mode (passt) NIC:
 * a command that must succeed, and a DHCP lease taken with busybox udhcpc
 * (the initramfs has no udhcpc script of its own).
 */
import type { Vm } from '../lib/index';

/** busybox udhcpc calls this with the lease in the environment. */
const UDHCPC_SCRIPT = [
  '#!/bin/sh',
  'case "$1" in bound|renew)',
  '  ifconfig "$interface" "$ip" netmask "$subnet" ${mtu:+mtu $mtu} up',
  '  route add default gw "$router" dev "$interface"',
  '  echo "$ip $subnet $router $mtu" > /tmp/lease;;',
  'esac',
].join('\n');

/** Run `command` in the guest; its output, or an error naming the command, its status and output. */
export async function guestOk(vm: Vm, command: string, timeoutMs = 60_000): Promise<string> {
  const r = await vm.exec(command, { timeoutMs });
  if (r.exitCode !== 0) throw new Error(`guest command ${JSON.stringify(command)} exited ${r.exitCode}: ${r.stdout}`);
  return r.stdout;
}

/**
 * Wait up to `waitS` seconds for eth0, bring it up and take a lease by DHCP:
 * udhcpc's output and the lease as "IP NETMASK ROUTER MTU".
 */
export async function dhcpLease(vm: Vm, waitS: number): Promise<{ dhcp: string; lease: string }> {
  await guestOk(vm, `i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt ${waitS * 10} ]; do sleep 0.1; i=$((i+1)); done; ip link set eth0 up`);
  await guestOk(vm, `printf '%s\\n' ${UDHCPC_SCRIPT.split('\n').map((l) => `'${l.replace(/'/g, `'\\''`)}'`).join(' ')} > /tmp/udhcpc.sh && chmod +x /tmp/udhcpc.sh`);
  const dhcp = await guestOk(vm, 'udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/udhcpc.sh 2>&1; cat /tmp/lease', 90_000);
  const lease = (await guestOk(vm, 'cat /tmp/lease')).trim();
  return { dhcp, lease };
}
