#!/usr/bin/env node
// Builds (or finds) the cached guest artifacts for the end-to-end tier and prints where they are.
// Usage: node scripts/guest-artifacts.js [--json]   (cache: $NODEVMM_CACHE or ~/.cache/nodevmm)
'use strict';
const { ensureGuestArtifacts } = require('../dist/lib/testing/artifacts');

async function main() {
  const json = process.argv.includes('--json');
  const started = Date.now();
  const a = await ensureGuestArtifacts({
    arch: 'x86_64',
    onProgress: (m) => process.stderr.write(`[guest-artifacts] ${m}\n`),
  });
  if (json) {
    process.stdout.write(JSON.stringify(a, null, 2) + '\n');
    return;
  }
  const v = a.versions;
  console.log(`kernel   ${v.kernelPackage} ${v.kernelPackageVersion} (${a.kernelVersion}, ${v.vmlinuzCompression} payload, PVH entry ${v.pvhEntry})`);
  console.log(`busybox  ${v.busyboxPackage} ${v.busyboxPackageVersion}`);
  for (const k of ['vmlinuz', 'vmlinux', 'modulesDir', 'busybox', 'testInitramfs', 'shellInitramfs']) {
    console.log(`${k.padEnd(15)} ${a[k]}`);
  }
  console.log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main().catch((err) => {
  console.error(`${err.code ? err.code + ': ' : ''}${err.message}`);
  process.exit(1);
});
