// Run by scripts/wine-check.js twice: under Windows Node in Wine and under this
// machine's Linux Node, from a staged copy of the package (argv[2]). Prints one
// JSON line of results; wine-check.js compares the two runs and checks the
// Windows-only answers. No assertion here: this only reports what it saw.
'use strict';
const path = require('node:path');
const crypto = require('node:crypto');

const pkg = process.argv[2];
const out = { platform: process.platform, arch: process.arch, node: process.version };
const attempt = (name, fn) => {
  try {
    out[name] = fn();
  } catch (e) {
    out[name] = { threw: `${e.code ?? ''} ${e.message.split('\n')[0]}` };
  }
};
const nodevmm = require(pkg);
attempt('hypervisor', () => nodevmm.openHypervisor().name);
attempt('probe', () => nodevmm.openHypervisor().probe());
attempt('binding', () => {
  const b = require(path.join(pkg, 'dist/lib/hv/native.js')).nativeBinding();
  return { backend: b.backend, arch: b.arch, exports: Object.keys(b).sort() };
});
attempt('guestRam', () => {
  // Zero-copy: a write through one view is seen through a second; release detaches both.
  const b = require(path.join(pkg, 'dist/lib/hv/native.js')).nativeBinding();
  const ram = new b.GuestRam(4 << 20, { name: 'wine-check' });
  const [v1] = ram.views();
  const [v2] = ram.views();
  new Uint8Array(v1)[0x1234] = 0x5a;
  const seen = new Uint8Array(v2)[0x1234];
  ram.release();
  return { size: ram.size, seen, afterRelease: [v1.byteLength, v2.byteLength] };
});
attempt('createVm', () => {
  // A file that exists (not a kernel): start() builds the machine, whose first
  // step opens the partition, which must fail with WHP's sentence.
  return nodevmm
    .createVm({ kernel: path.join(pkg, 'package.json'), memory: '64M' })
    .then((vm) => Promise.resolve().then(() => vm.start()).then(() => (vm.kill(), 'started')))
    .then(
      (v) => v,
      (e) => `${e.code} ${e.message}`,
    );
});
attempt('acpi', () => {
  const { ACPI_PLATFORM } = require(path.join(pkg, 'dist/lib/arch/x86_64/layout.js'));
  const t = nodevmm.buildX86AcpiTables({ ...ACPI_PLATFORM, vcpus: 2, serialPorts: [{ name: 'COM1', port: 0x3f8, irq: 4 }], virtioMmio: [{ base: 0xfeb00000, size: 0x1000, irq: 5 }] });
  const h = crypto.createHash('sha256');
  for (const k of Object.keys(t).sort()) if (t[k] instanceof Uint8Array) h.update(k).update(t[k]);
  return h.digest('hex');
});
Promise.resolve(out.createVm).then((v) => {
  out.createVm = v;
  process.stdout.write(JSON.stringify(out) + '\n');
});
