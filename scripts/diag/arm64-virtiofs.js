#!/usr/bin/env node
// Check (not a test of the suite): virtio-fs on arm64, in the emulated arm64
// KVM host. The host's userland has no virtiofsd, so this fetches QEMU's C
// virtiofsd for arm64 and its libraries once (apt-get download
// qemu-system-common:arm64 libseccomp2 libcap-ng0 libglib2.0-0 libnuma1
// libpcre2-8-0, and util-linux for a setpriv with --pdeathsig: the host's is
// busybox's; unpacked into ~/.cache/nodevmm/arm64-virtiofsd/root). Inside
// the host: the host's root is the initramfs (rootfs), on which the kernel
// refuses pivot_root, and virtiofsd's namespace sandbox pivot_roots into the
// shared directory; so the check first moves a recursive bind of / over /
// and chroots into it (what switch_root does), then runs `nodevmm run
// --share` on an arm64 guest that mounts the share, reads a file the host
// wrote, writes one the host then reads, and powers off.
// Usage (under the e2e lock): node scripts/diag/arm64-virtiofs.js [--timeout SECONDS]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..', '..');
const argv = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
// util-linux for its setpriv: the host's is busybox's, which has no --pdeathsig (lib/util/helper-process.ts needs it).
const PACKAGES = ['qemu-system-common', 'libseccomp2', 'libcap-ng0', 'libglib2.0-0', 'libnuma1', 'libpcre2-8-0', 'util-linux'];
const HOST_TEXT = 'written-by-the-host';
const GUEST_TEXT = 'written-by-the-guest';

/** The arm64 virtiofsd and its libraries, unpacked (downloaded once). */
function ensureVirtiofsd(cache) {
  const dir = path.join(cache, 'arm64-virtiofsd');
  const exe = path.join(dir, 'root', 'usr', 'lib', 'qemu', 'virtiofsd');
  if (fs.existsSync(exe) && fs.existsSync(path.join(dir, 'root', 'usr', 'bin', 'setpriv'))) return dir;
  fs.mkdirSync(path.join(dir, 'debs'), { recursive: true });
  execFileSync('apt-get', ['download', ...PACKAGES.map((p) => `${p}:arm64`)], { cwd: path.join(dir, 'debs'), stdio: 'inherit' });
  for (const deb of fs.readdirSync(path.join(dir, 'debs'))) execFileSync('dpkg-deb', ['-x', path.join(dir, 'debs', deb), path.join(dir, 'root')]);
  return dir;
}

async function guest() {
  const { buildTestInitramfs } = require('../../dist/lib/initramfs/initramfs');
  const { arm64GuestModules, findArm64Artifacts } = require('../../dist/lib/testing/arm64-kvm-host');
  const a = findArm64Artifacts();
  if (!a) throw new Error('arm64 artifacts not visible inside the host (NODEVMM_CACHE)');
  // ARM64_GUEST_MODULES ends with fuse and virtiofs.
  const initrd = path.join(os.tmpdir(), 'arm64-virtiofs-initramfs.cpio.gz');
  fs.writeFileSync(initrd, buildTestInitramfs({ busybox: new Uint8Array(fs.readFileSync(a.busybox)), modules: arm64GuestModules(a) }));
  const share = fs.mkdtempSync(path.join(os.tmpdir(), 'arm64-share-'));
  fs.writeFileSync(path.join(share, 'from-host'), HOST_TEXT);
  const script = [
    'mkdir -p /mnt/s && mount -t virtiofs hostshare /mnt/s || echo GUEST-MOUNT-FAILED=1',
    'echo "GUEST-READ=$(cat /mnt/s/from-host)"',
    `printf '${GUEST_TEXT}' > /mnt/s/from-guest && sync && echo GUEST-WROTE=1`,
    'umount /mnt/s; echo GUEST-DONE=1',
  ].join('\n');
  const cmdline = `quiet nodevmm.cmd=${Buffer.from(script).toString('base64')}`;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [path.join(root, 'bin', 'nodevmm.js'), 'run', '--kernel', a.image, '--initrd', initrd, '-m', '256M', '--cmdline', cmdline, '--com1', 'stdio', '--share', `${share}:hostshare`], { input: '', timeout: 600_000 });
  const out = r.stdout.toString('latin1');
  process.stdout.write(out.split('\n').filter((l) => /GUEST-|virtio|fuse|error|fail/i.test(l)).join('\n') + '\n');
  let written = null;
  try {
    written = fs.readFileSync(path.join(share, 'from-guest'), 'latin1');
  } catch {}
  const result = {
    status: r.status,
    stderr: r.stderr.toString().trim().slice(-800),
    mounted: !out.includes('GUEST-MOUNT-FAILED'),
    read: /GUEST-READ=(.*)/.exec(out)?.[1]?.trim() ?? null,
    written,
    done: out.includes('GUEST-DONE=1'),
    ms: Date.now() - t0,
  };
  console.log(`ARM64-VIRTIOFS ${JSON.stringify(result)}`);
  const ok = result.status === 0 && result.read === HOST_TEXT && written === GUEST_TEXT && result.done;
  console.log(ok ? 'ARM64-VIRTIOFS-OK' : 'ARM64-VIRTIOFS-FAILED');
}

async function host() {
  const { runInArm64KvmHost, findArm64Artifacts } = require('../../dist/lib/testing/arm64-kvm-host');
  const artifacts = findArm64Artifacts();
  if (!artifacts) throw new Error('no arm64 artifacts (node scripts/arm64-kvm-host.js fetches them)');
  const cache = path.dirname(artifacts.dir);
  const vfs = ensureVirtiofsd(cache);
  const inner = [
    `V=/host${vfs}/root`,
    'export LD_LIBRARY_PATH="$V/lib/aarch64-linux-gnu:$V/usr/lib/aarch64-linux-gnu"',
    'mkdir -p /usr/local/bin && ln -sf "$V/usr/lib/qemu/virtiofsd" /usr/local/bin/virtiofsd && ln -sf "$V/usr/bin/setpriv" /usr/local/bin/setpriv',
    'export PATH="/usr/local/bin:$PATH"',
    '"$V/usr/lib/qemu/virtiofsd" --version 2>&1 | head -1',
    // pivot_root refuses a root on rootfs: move a recursive bind of / over / and chroot into it.
    'mkdir -p /newroot && mount -o rbind / /newroot && cd /newroot && mount -o move . / || echo "ARM64-VIRTIOFS-ROOT-FAILED"',
    `exec chroot . /bin/sh -c 'cd ${root} && node scripts/diag/arm64-virtiofs.js --guest'`,
  ].join('\n');
  const r = await runInArm64KvmHost(inner, {
    timeoutMs: Number(flag('--timeout', '1500')) * 1000,
    projectDir: root,
    artifacts,
    env: { NODEVMM_CACHE: `/host${cache}` },
    onConsole: (text) => process.stdout.write(text),
  });
  console.log(`\nDIAG: host exit ${r.exitCode}, ${(r.durationMs / 1000).toFixed(0)} s`);
  process.exitCode = r.consoleLog.includes('ARM64-VIRTIOFS-OK') ? 0 : 1;
}

(argv.includes('--guest') ? guest() : host()).catch((e) => {
  console.error(e);
  process.exit(1);
});
