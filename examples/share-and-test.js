#!/usr/bin/env node
// Run a test suite that lives in a host directory inside a guest: the directory is shared over
// virtio-fs (nodevmm starts virtiofsd), the guest gets user networking (nodevmm starts passt; no
// root, no TAP), runs every tests/*.sh it finds in the share, and writes its report back into the
// share, where this script reads it. Needs virtiofsd (apt-get install virtiofsd, or
// qemu-system-common) and passt (apt-get install passt).
//   node examples/share-and-test.js [SUITE_DIR]   (default: a demo suite in a temp directory)
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { createVm } = require('nodevmm');
const { ensureGuestArtifacts } = require('nodevmm/testing');

/** A demo suite: one test that uses the share, one that uses the network (DHCP from passt). */
function demoSuite() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-suite-'));
  fs.mkdirSync(path.join(dir, 'tests'));
  fs.writeFileSync(path.join(dir, 'tests', '01-files.sh'), 'test "$(cat /suite/data.txt)" = "hello from the host"\n');
  fs.writeFileSync(path.join(dir, 'tests', '02-network.sh'), 'ip -4 addr show dev eth0 | grep -q "inet "\n');
  fs.writeFileSync(path.join(dir, 'data.txt'), 'hello from the host\n');
  return dir;
}

// What the guest runs: mount the share, get an address by DHCP, run each test, write a report.
const GUEST_SCRIPT = `
mkdir -p /suite && mount -t virtiofs suite /suite || { echo GUEST-SUITE=no-share; exit 1; }
ip link set eth0 up
printf '#!/bin/sh\\n[ "$1" = bound ] && ip addr add "$ip/$mask" dev "$interface" && ip route add default via "$router"\\nexit 0\\n' > /tmp/lease.sh
chmod +x /tmp/lease.sh
udhcpc -i eth0 -q -n -t 10 -s /tmp/lease.sh >/dev/null 2>&1
: > /suite/report.txt
for t in /suite/tests/*.sh; do
  if sh "$t" >/tmp/out 2>&1; then echo "ok   $(basename "$t")"; else echo "FAIL $(basename "$t"): $(cat /tmp/out)"; fi >> /suite/report.txt
done
sync
echo GUEST-SUITE=done
`;

async function main() {
  const suite = process.argv[2] ? path.resolve(process.argv[2]) : demoSuite();
  const a = await ensureGuestArtifacts({ arch: 'x86_64', onProgress: (m) => console.error(m) });
  const vm = await createVm({
    kernel: a.vmlinuz,
    initrd: a.testInitramfs,
    memory: '512M',
    shares: [{ path: suite, tag: 'suite' }],
    net: [{ user: {} }],
    cmdline: `quiet nodevmm.cmd=${Buffer.from(GUEST_SCRIPT).toString('base64')}`,
  });
  await vm.start();
  const stop = await vm.waitForStop();
  const report = fs.existsSync(path.join(suite, 'report.txt')) ? fs.readFileSync(path.join(suite, 'report.txt'), 'utf8') : '';
  console.log(`suite ${suite}:\n${report || '(no report: the guest could not run the suite)'}`);
  console.log(`vm stopped: ${stop.reason}`);
  if (!report || /^FAIL/m.test(report)) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
