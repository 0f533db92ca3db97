#!/usr/bin/env node
// The arm64 proof. On this (x86) machine: fetch the arm64 artifacts, cross-build
// the addon if build-arm64/ is missing, boot the emulated arm64 KVM host and run
// this same script inside it with --guest. Inside (--guest): boot Debian's arm64
// kernel with a busybox initramfs on nodevmm's arm64 backend for each vCPU count
// and check GUEST-INIT-OK and a PSCI SYSTEM_OFF power-off; then boot once more
// with a virtio-blk disk, virtio-rng and a virtio console and check what the
// guest read, what it wrote to the image, and that every virtio SPI is edge.
// Usage: node scripts/arm64-kvm-host.js [--vcpus 1,2] [--timeout SECONDS] [--quiet] [--json FILE]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const argv = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const vcpuCounts = flag('--vcpus', '1,2').split(',').map(Number);

async function guest() {
  // Inside the emulated arm64 host: boot through the real CLI, `nodevmm run`, as a user would.
  const os = require('node:os');
  const { spawnSync } = require('node:child_process');
  const { buildTestInitramfs, GUEST_MARKERS } = require('../dist/lib/initramfs/initramfs');
  const { arm64GuestModules, findArm64Artifacts } = require('../dist/lib/testing/arm64-kvm-host');
  const a = findArm64Artifacts(flag('--cache'));
  if (!a) throw new Error('arm64 artifacts not visible inside the host');
  const initrdPath = path.join(os.tmpdir(), 'arm64-test-initramfs.cpio.gz');
  fs.writeFileSync(initrdPath, buildTestInitramfs({ busybox: new Uint8Array(fs.readFileSync(a.busybox)), modules: arm64GuestModules(a) }));
  let failed = false;
  for (const vcpus of vcpuCounts) {
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [path.join(root, 'bin', 'nodevmm.js'), 'run', '--kernel', a.image, '--initrd', initrdPath, '-p', String(vcpus), '-m', '512M', '--cmdline', 'quiet', '--com1', 'stdio'], { input: '', timeout: 600_000 });
    const out = r.stdout.toString('latin1');
    if (!argv.includes('--quiet')) process.stdout.write(out);
    const initOk = out.includes(GUEST_MARKERS.initOk);
    const nproc = /GUEST-NPROC=(\d+)/.exec(out)?.[1];
    // nodevmm run exits 0 only when the guest powered off (PSCI SYSTEM_OFF).
    const reason = r.status === 0 ? 'poweroff' : `exit status ${r.status}: ${r.stderr.toString().trim()}`;
    // The init prints this for a module insmod refused (a missing dependency, a version mismatch).
    const insmodFailed = [...out.matchAll(/GUEST-INSMOD-FAILED=(\S+)/g)].map((m) => m[1]);
    const result = { vcpus, reason, initOk, nproc: nproc ? Number(nproc) : null, insmodFailed, runMs: Date.now() - t0 };
    console.log(`ARM64-PROOF ${JSON.stringify(result)}`);
    if (!initOk || reason !== 'poweroff' || Number(nproc) !== vcpus || insmodFailed.length) failed = true;
  }
  if (!virtioRun(a, initrdPath)) failed = true;
  process.exit(failed ? 1 : 0);
}

const VDA_PATTERN = 'host-pattern-0123456789';
const VDA_WRITE = 'written-by-the-guest';
const VDA_WRITE_SECTOR = 2048;
const VDA_BYTES = 8 * 1024 * 1024;

/**
 * One 1-vCPU boot with --disk (a host-written pattern in sector 0), --rng and
 * --virtio-console. COM1 is off, so hvc0 has the terminal, as on x86: the
 * guest writes its findings to /dev/hvc0, which proves the console as well.
 * Afterwards the image must hold what the guest wrote. Returns true on success.
 */
function virtioRun(a, initrdPath) {
  const os = require('node:os');
  const { spawnSync } = require('node:child_process');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arm64-virtio-'));
  const disk = path.join(dir, 'vda.img');
  const image = Buffer.alloc(VDA_BYTES);
  image.write(VDA_PATTERN, 0, 'latin1');
  fs.writeFileSync(disk, image);
  // virtio_mmio probes asynchronously after insmod: wait up to 20 s for each device node.
  const waitFor = (dev) => `i=0; while [ ! -e ${dev} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done`;
  const cmd = [
    waitFor('/dev/hvc0'),
    waitFor('/dev/vda'),
    waitFor('/dev/hwrng'),
    '{ echo "GUEST-VDA-SIZE=$(cat /sys/block/vda/size)"',
    `echo "GUEST-VDA-HEAD=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c ${VDA_PATTERN.length})"`,
    'echo "GUEST-HWRNG-CURRENT=$(cat /sys/class/misc/hw_random/rng_current)"',
    'echo "GUEST-HWRNG=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d \" \\n\")"',
    // The last three columns: hwirq (the INTID), trigger, name.
    `echo "GUEST-VIRTIO-IRQS=$(grep virtio /proc/interrupts | awk '{ printf "%s:%s:%s ", $(NF-2), $(NF-1), $NF }')"; } > /dev/hvc0`,
    `printf '${VDA_WRITE}' | dd of=/dev/vda bs=512 seek=${VDA_WRITE_SECTOR} conv=notrunc,fsync 2>/dev/null`,
    'sync',
    'echo GUEST-VIRTIO-DONE > /dev/hvc0',
  ].join('; ');
  const cmdline = `quiet nodevmm.cmd=${Buffer.from(cmd).toString('base64')}`;
  const t0 = Date.now();
  const r = spawnSync(
    process.execPath,
    [path.join(root, 'bin', 'nodevmm.js'), 'run', '--kernel', a.image, '--initrd', initrdPath, '-p', '1', '-m', '512M', '--cmdline', cmdline, '--com1', 'none', '--disk', disk, '--rng', '--virtio-console'],
    { input: '', timeout: 600_000 },
  );
  const out = r.stdout.toString('latin1');
  if (!argv.includes('--quiet')) process.stdout.write(out);
  const marker = (name) => new RegExp(`GUEST-${name}=([^\r\n]*)`).exec(out)?.[1]?.trim() ?? null;
  const after = fs.readFileSync(disk);
  fs.rmSync(dir, { recursive: true, force: true });
  const result = {
    reason: r.status === 0 ? 'poweroff' : `exit status ${r.status}: ${r.stderr.toString().trim()}`,
    hvc0: out.includes('GUEST-VIRTIO-DONE'),
    vdaSectors: marker('VDA-SIZE'),
    vdaHead: marker('VDA-HEAD'),
    hwrngCurrent: marker('HWRNG-CURRENT'),
    hwrng: marker('HWRNG'),
    irqs: (marker('VIRTIO-IRQS') ?? '').split(' ').filter(Boolean),
    written: after.subarray(VDA_WRITE_SECTOR * 512, VDA_WRITE_SECTOR * 512 + VDA_WRITE.length).toString('latin1'),
    runMs: Date.now() - t0,
  };
  console.log(`ARM64-VIRTIO-PROOF ${JSON.stringify(result)}`);
  // Slots in config order: the disk on SPI 16 (INTID 48), rng on 49, the console on 50; the
  // virtioN names follow probe order, which is not promised, so only INTID and trigger count.
  const intids = result.irqs.map((i) => i.split(':').slice(0, 2).join(':')).sort();
  return (
    result.reason === 'poweroff' &&
    result.hvc0 &&
    result.vdaSectors === String(VDA_BYTES / 512) &&
    result.vdaHead === VDA_PATTERN &&
    /^virtio_rng/.test(result.hwrngCurrent ?? '') &&
    /^[0-9a-f]{64}$/.test(result.hwrng ?? '') &&
    result.hwrng !== '0'.repeat(64) &&
    intids.join(' ') === '48:Edge 49:Edge 50:Edge' &&
    result.written === VDA_WRITE
  );
}

async function host() {
  const { ensureArm64Artifacts, runInArm64KvmHost } = require('../dist/lib/testing/arm64-kvm-host');
  const timings = {};
  let t = Date.now();
  const a = ensureArm64Artifacts({ onProgress: (m) => console.error(`[arm64-artifacts] ${m}`) });
  timings.artifactsMs = Date.now() - t;
  if (!fs.existsSync(path.join(root, 'build-arm64', 'Release', 'nodevmm.node'))) {
    t = Date.now();
    execFileSync('sh', [path.join(root, 'scripts', 'cross-build-arm64.sh')], { stdio: 'inherit' });
    timings.crossBuildMs = Date.now() - t;
  }
  const cmd = `node scripts/arm64-kvm-host.js --guest --cache /host${a.dir} --vcpus ${vcpuCounts.join(',')}${argv.includes('--quiet') ? ' --quiet' : ''}`;
  const r = await runInArm64KvmHost(cmd, {
    timeoutMs: Number(flag('--timeout', '1800')) * 1000,
    projectDir: root,
    artifacts: a,
    onConsole: (s) => process.stdout.write(s),
  });
  timings.hostBootMs = r.bootMs;
  timings.totalMs = r.durationMs;
  const proofs = [...r.consoleLog.matchAll(/ARM64-PROOF (\{.*\})/g)].map((m) => JSON.parse(m[1]));
  const summary = { exitCode: r.exitCode, timings, proofs };
  console.error(`[arm64-kvm-host] ${JSON.stringify(summary)}`);
  const json = flag('--json');
  if (json) fs.writeFileSync(json, JSON.stringify(summary, null, 2));
  process.exit(r.exitCode);
}

(argv.includes('--guest') ? guest() : host()).catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
