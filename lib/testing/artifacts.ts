/**
 * Guest artifacts for the end-to-end tier: Debian 12's kernel (bzImage and the
 * vmlinux ELF inside it), a handful of its modules, busybox-static, and our
 * test and shell initramfs images. Built once into a cache folder
 * ($NODEVMM_CACHE, default ~/.cache/nodevmm) from packages fetched with
 * `apt-get download`; never committed. A lock file keeps parallel test
 * processes from building twice. The bzImage payload fields are from the boot
 * protocol (Documentation/arch/x86/boot.rst, protocol 2.08+).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { FormatError, NodevmmError } from '../errors';
import { buildShellInitramfs, buildTestInitramfs } from '../initramfs/initramfs';
import { ByteReader } from '../util/bytes';

/** Modules the emulated KVM host loads, in insmod order (dependencies first). */
export const KVM_HOST_MODULES = [
  'irqbypass', 'ccp', 'kvm', 'kvm-amd',
  'virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci',
  '9pnet', '9pnet_virtio', 'netfs', 'fscache', '9p',
  // TAP devices for virtio-net tests, and vhost-vsock (/dev/vhost-vsock) for virtio-vsock.
  'tun', 'vhost_iotlb', 'vhost', 'vsock', 'vmw_vsock_virtio_transport_common', 'vhost_vsock',
] as const;

/**
 * Modules the guest initramfs loads, in insmod order (dependencies first): the ACPI power
 * button and its input events, the virtio drivers (blk, rng, console, net, vsock, fs), and ext4
 * with what it needs, so a test can mount an ext4 root disk and switch to it.
 */
export const GUEST_MODULES = [
  'button', 'evdev', 'virtio_ring', 'virtio', 'virtio_mmio', 'virtio_blk', 'virtio-rng', 'virtio_console',
  'failover', 'net_failover', 'virtio_net',
  'vsock', 'vmw_vsock_virtio_transport_common', 'vmw_vsock_virtio_transport',
  'crc16', 'mbcache', 'jbd2', 'crc32c_generic', 'ext4',
  // virtio-fs shares (mount -t virtiofs TAG /mnt).
  'fuse', 'virtiofs',
] as const;

/**
 * Bumped whenever what the cache holds changes (modules, init scripts), so an
 * older cache is rebuilt instead of silently used.
 */
export const ARTIFACTS_LAYOUT = 7;

const KERNEL_META_PACKAGE = 'linux-image-amd64';
const BUSYBOX_PACKAGE = 'busybox-static';
const MANIFEST = 'versions.json';
/** Two .debs (~72 MB), the unpacked kernel package (~400 MB) and our outputs, with margin. */
const FREE_SPACE_NEEDED_MIB = 700;
const LOCK_STALE_MS = 15 * 60 * 1000;

export interface GuestArtifactVersions {
  kernelPackage: string;
  kernelPackageVersion: string;
  busyboxPackage: string;
  busyboxPackageVersion: string;
  kernelVersion: string;
  vmlinuzCompression: string;
  pvhEntry: string;
  sha256: Record<string, string>;
  builtAt: string;
  layout?: number;
}

export interface GuestArtifacts {
  dir: string;
  vmlinuz: string;
  vmlinux: string;
  /** Flat folder of `<name>.ko` files, one per KVM_HOST_MODULES entry. */
  modulesDir: string;
  busybox: string;
  testInitramfs: string;
  shellInitramfs: string;
  /** `uname -r` of the kernel, e.g. `6.1.0-56-amd64`. */
  kernelVersion: string;
  versions: GuestArtifactVersions;
}

export interface EnsureGuestArtifactsOptions {
  arch: 'x86_64';
  onProgress?: (message: string) => void;
  /** Overrides $NODEVMM_CACHE and the default. */
  cacheDir?: string;
}

/** The cache root: $NODEVMM_CACHE, else ~/.cache/nodevmm (see cacheRootFor). */
export function guestCacheRoot(): string {
  let home = '';
  try {
    home = os.homedir(); // $HOME, else the passwd entry; throws when neither exists
  } catch {}
  return cacheRootFor(process.env, home, os.tmpdir(), process.getuid?.() ?? 0);
}

/**
 * $NODEVMM_CACHE; else `<home>/.cache/nodevmm`; else, when there is no usable
 * home (HOME unset or `/` with no passwd entry, as in a bare chroot or a
 * container, where `/.cache` would land in the root of the filesystem),
 * `<tmpdir>/nodevmm-cache-<uid>`, which the progress messages name.
 */
export function cacheRootFor(env: NodeJS.ProcessEnv, home: string, tmpdir: string, uid: number): string {
  if (env.NODEVMM_CACHE) return env.NODEVMM_CACHE;
  if (home && home !== '/' && path.isAbsolute(home)) return path.join(home, '.cache', 'nodevmm');
  return path.join(tmpdir, `nodevmm-cache-${uid}`);
}

/** Paths of a finished cache, or undefined if it is missing or incomplete (no fetching). */
export function findGuestArtifacts(arch: 'x86_64' = 'x86_64', cacheDir = guestCacheRoot()): GuestArtifacts | undefined {
  const dir = path.join(cacheDir, `guest-${arch}`);
  let versions: GuestArtifactVersions;
  try {
    versions = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), 'utf8')) as GuestArtifactVersions;
  } catch {
    return undefined;
  }
  if (versions.layout !== ARTIFACTS_LAYOUT) return undefined;
  const a = layout(dir, versions);
  const files = [a.vmlinuz, a.vmlinux, a.busybox, a.testInitramfs, a.shellInitramfs, ...[...KVM_HOST_MODULES, ...GUEST_MODULES].map((m) => path.join(a.modulesDir, `${m}.ko`))];
  return files.every((f) => fs.existsSync(f)) ? a : undefined;
}

/** Returns the cached artifacts, building them first if needed; safe to call from parallel processes. */
export async function ensureGuestArtifacts(options: EnsureGuestArtifactsOptions): Promise<GuestArtifacts> {
  if (options.arch !== 'x86_64') {
    throw new NodevmmError('ERR_ARTIFACTS_ARCH', `artifacts: arch ${JSON.stringify(options.arch)} is not supported yet, only x86_64`);
  }
  const progress = options.onProgress ?? (() => {});
  const cacheDir = options.cacheDir ?? guestCacheRoot();
  const cached = findGuestArtifacts(options.arch, cacheDir);
  if (cached) return cached;
  fs.mkdirSync(cacheDir, { recursive: true });
  const release = await acquireLock(path.join(cacheDir, `guest-${options.arch}.lock`), progress);
  try {
    // Another process may have finished while we waited for the lock.
    return findGuestArtifacts(options.arch, cacheDir) ?? (await build(cacheDir, options.arch, progress));
  } finally {
    release();
  }
}

function layout(dir: string, versions: GuestArtifactVersions): GuestArtifacts {
  return {
    dir,
    vmlinuz: path.join(dir, 'vmlinuz'),
    vmlinux: path.join(dir, 'vmlinux'),
    modulesDir: path.join(dir, 'modules'),
    busybox: path.join(dir, 'busybox'),
    testInitramfs: path.join(dir, 'test-initramfs.cpio.gz'),
    shellInitramfs: path.join(dir, 'shell-initramfs.cpio.gz'),
    kernelVersion: versions.kernelVersion,
    versions,
  };
}

async function build(cacheDir: string, arch: string, progress: (m: string) => void): Promise<GuestArtifacts> {
  const started = Date.now();
  checkFreeSpace(cacheDir);
  const dir = path.join(cacheDir, `guest-${arch}`);
  const work = fs.mkdtempSync(path.join(cacheDir, `.build-${arch}-`));
  try {
    progress(`resolving ${KERNEL_META_PACKAGE} with apt-cache`);
    const kernelPackage = await resolveKernelPackage();
    const kernelPackageVersion = await candidateVersion(kernelPackage);
    const busyboxPackageVersion = await candidateVersion(BUSYBOX_PACKAGE);
    progress(`downloading ${kernelPackage}=${kernelPackageVersion} and ${BUSYBOX_PACKAGE}=${busyboxPackageVersion}`);
    // apt drops privileges to _apt for downloads; a world-writable folder avoids its warning.
    fs.chmodSync(work, 0o777);
    await run('apt-get', ['download', `${kernelPackage}=${kernelPackageVersion}`, `${BUSYBOX_PACKAGE}=${busyboxPackageVersion}`], work, 'ERR_ARTIFACTS_APT');
    const debs = fs.readdirSync(work).filter((f) => f.endsWith('.deb'));
    const kernelDeb = debs.find((f) => f.startsWith(kernelPackage + '_'));
    const busyboxDeb = debs.find((f) => f.startsWith(BUSYBOX_PACKAGE + '_'));
    if (!kernelDeb || !busyboxDeb) {
      throw new NodevmmError('ERR_ARTIFACTS_APT', `artifacts: apt-get download left ${JSON.stringify(debs)} in ${work}, expected both packages`);
    }
    progress(`unpacking ${kernelDeb}`);
    const root = path.join(work, 'root');
    await run('dpkg-deb', ['-x', kernelDeb, root], work, 'ERR_ARTIFACTS_UNPACK');
    await run('dpkg-deb', ['-x', busyboxDeb, root], work, 'ERR_ARTIFACTS_UNPACK');

    const out = path.join(work, 'out');
    fs.mkdirSync(path.join(out, 'modules'), { recursive: true });
    const bootFiles = fs.readdirSync(path.join(root, 'boot')).filter((f) => f.startsWith('vmlinuz-'));
    const vmlinuzName = bootFiles[0];
    if (bootFiles.length !== 1 || vmlinuzName === undefined) {
      throw new NodevmmError('ERR_ARTIFACTS_UNPACK', `artifacts: ${kernelDeb} holds ${bootFiles.length} vmlinuz files, expected 1`);
    }
    const kernelVersion = vmlinuzName.slice('vmlinuz-'.length);
    const vmlinuz = new Uint8Array(fs.readFileSync(path.join(root, 'boot', vmlinuzName)));
    fs.writeFileSync(path.join(out, 'vmlinuz'), vmlinuz);

    progress(`extracting vmlinux from ${vmlinuzName}`);
    const payload = bzImagePayload(vmlinuz);
    const vmlinux = await decompress(payload.compression, payload.data, work);
    const elf = checkVmlinux(vmlinux);
    fs.writeFileSync(path.join(out, 'vmlinux'), vmlinux);
    progress(`vmlinux: ${(vmlinux.length / 2 ** 20).toFixed(1)} MiB, ${elf.loadSegments} PT_LOAD, PVH entry 0x${elf.pvhEntry.toString(16)}`);

    const moduleRoot = path.join(root, 'lib', 'modules', kernelVersion, 'kernel');
    const moduleFiles = listFiles(moduleRoot);
    for (const name of [...KVM_HOST_MODULES, ...GUEST_MODULES]) {
      const found = moduleFiles.filter((f) => path.basename(f) === `${name}.ko`);
      const file = found[0];
      if (found.length !== 1 || file === undefined) {
        throw new NodevmmError('ERR_ARTIFACTS_UNPACK', `artifacts: module ${name}.ko found ${found.length} times in ${kernelDeb}, expected once`);
      }
      fs.copyFileSync(file, path.join(out, 'modules', `${name}.ko`));
    }

    const busybox = new Uint8Array(fs.readFileSync(path.join(root, 'bin', 'busybox')));
    fs.writeFileSync(path.join(out, 'busybox'), busybox, { mode: 0o755 });
    progress('writing test and shell initramfs images');
    const modules = GUEST_MODULES.map((name) => ({ name, data: new Uint8Array(fs.readFileSync(path.join(out, 'modules', `${name}.ko`))) }));
    fs.writeFileSync(path.join(out, 'test-initramfs.cpio.gz'), buildTestInitramfs({ busybox, modules }));
    fs.writeFileSync(path.join(out, 'shell-initramfs.cpio.gz'), buildShellInitramfs({ busybox, modules }));

    const sha256: Record<string, string> = {};
    for (const f of ['vmlinuz', 'vmlinux', 'busybox', 'test-initramfs.cpio.gz', 'shell-initramfs.cpio.gz']) {
      sha256[f] = createHash('sha256').update(fs.readFileSync(path.join(out, f))).digest('hex');
    }
    const versions: GuestArtifactVersions = {
      kernelPackage,
      kernelPackageVersion,
      busyboxPackage: BUSYBOX_PACKAGE,
      busyboxPackageVersion,
      kernelVersion,
      vmlinuzCompression: payload.compression,
      pvhEntry: '0x' + elf.pvhEntry.toString(16),
      sha256,
      builtAt: new Date().toISOString(),
      layout: ARTIFACTS_LAYOUT,
    };
    // The manifest is written last and the folder renamed into place, so a crash mid-build
    // never leaves something findGuestArtifacts would accept.
    fs.writeFileSync(path.join(out, MANIFEST), JSON.stringify(versions, null, 2) + '\n');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(out, dir);
    progress(`guest artifacts ready in ${dir} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return layout(dir, versions);
  } catch (err) {
    throw asNoSpace(err);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

async function resolveKernelPackage(): Promise<string> {
  const out = await run('apt-cache', ['depends', KERNEL_META_PACKAGE], undefined, 'ERR_ARTIFACTS_APT');
  const m = /Depends:\s*(linux-image-[0-9][^\s]*-amd64)\s*$/m.exec(out);
  if (!m?.[1]) {
    throw new NodevmmError('ERR_ARTIFACTS_APT', `artifacts: apt-cache depends ${KERNEL_META_PACKAGE} names no linux-image-<version>-amd64 package; is the Debian archive configured (apt-get update)?`);
  }
  return m[1];
}

async function candidateVersion(pkg: string): Promise<string> {
  const out = await run('apt-cache', ['show', '--no-all-versions', pkg], undefined, 'ERR_ARTIFACTS_APT');
  const m = /^Version:\s*(\S+)/m.exec(out);
  if (!m?.[1]) throw new NodevmmError('ERR_ARTIFACTS_APT', `artifacts: apt-cache show ${pkg} printed no Version field`);
  return m[1];
}

export type KernelCompression = 'gzip' | 'xz' | 'zstd' | 'lzma' | 'bzip2' | 'lz4' | 'lzo';

const COMPRESSION_MAGIC: readonly [KernelCompression, readonly number[]][] = [
  ['gzip', [0x1f, 0x8b]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ['bzip2', [0x42, 0x5a, 0x68]],
  ['lz4', [0x02, 0x21, 0x4c, 0x18]],
  ['lzo', [0x89, 0x4c, 0x5a, 0x4f]],
  ['lzma', [0x5d, 0x00, 0x00]],
];

/**
 * The compressed kernel inside a bzImage: `payload_offset` (0x248) is relative to the
 * protected-mode code, which starts after the (setup_sects + 1) 512-byte setup sectors.
 */
export function bzImagePayload(bzImage: Uint8Array): { compression: KernelCompression; data: Uint8Array } {
  const r = new ByteReader(bzImage, 'bzimage');
  const magic = r.u32(0x202, 'header');
  if (magic !== 0x53726448) {
    throw new FormatError('ERR_BZIMAGE_MAGIC', `bzimage: header magic is 0x${magic.toString(16)}, expected 0x53726448 ("HdrS")`, { format: 'bzimage', field: 'header', offset: 0x202, expected: '0x53726448', actual: '0x' + magic.toString(16) });
  }
  const version = r.u16(0x206, 'version');
  if (version < 0x208) {
    throw new FormatError('ERR_BZIMAGE_VERSION', `bzimage: boot protocol version 0x${version.toString(16)} has no payload fields, need 0x208 or later`, { format: 'bzimage', field: 'version', offset: 0x206, expected: '>= 0x208', actual: '0x' + version.toString(16) });
  }
  const setupSects = r.u8(0x1f1, 'setup_sects') || 4;
  const payloadOffset = r.u32(0x248, 'payload_offset');
  const payloadLength = r.u32(0x24c, 'payload_length');
  const data = r.slice((setupSects + 1) * 512 + payloadOffset, payloadLength, 'payload');
  for (const [compression, sig] of COMPRESSION_MAGIC) {
    if (sig.every((b, i) => data[i] === b)) return { compression, data };
  }
  const head = Buffer.from(data.subarray(0, 6)).toString('hex');
  throw new FormatError('ERR_BZIMAGE_PAYLOAD', `bzimage: payload starts with ${head}, which is no known compression`, { format: 'bzimage', field: 'payload', actual: head });
}

/** gzip in-process; the rest through the matching CLI, reading only the first stream (the kernel appends the size). */
async function decompress(compression: KernelCompression, data: Uint8Array, work: string): Promise<Uint8Array> {
  if (compression === 'gzip') return new Uint8Array(gunzipSync(data));
  const tools: Partial<Record<KernelCompression, [string, string[]]>> = {
    xz: ['xz', ['-dc', '--single-stream']],
    lzma: ['xz', ['-dc', '--format=lzma']],
    zstd: ['zstd', ['-dc']],
    bzip2: ['bzip2', ['-dc']],
  };
  const tool = tools[compression];
  if (!tool) throw new NodevmmError('ERR_ARTIFACTS_UNPACK', `artifacts: no decompressor wired for a ${compression} kernel payload`);
  const input = path.join(work, 'payload');
  fs.writeFileSync(input, data);
  const out = await run(tool[0], [...tool[1], input], work, 'ERR_ARTIFACTS_UNPACK', 'buffer');
  return new Uint8Array(out);
}

const PT_LOAD = 1;
const PT_NOTE = 4;
/** XEN_ELFNOTE_PHYS32_ENTRY from xen/include/public/elfnote.h: the PVH 32-bit entry point. */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** Checks that bytes are an x86-64 vmlinux with PT_LOAD segments and a PVH entry note. */
export function checkVmlinux(elf: Uint8Array): { loadSegments: number; pvhEntry: number } {
  const r = new ByteReader(elf, 'elf');
  const magic = r.u32(0, 'e_ident');
  if (magic !== 0x464c457f || r.u8(4, 'EI_CLASS') !== 2 || r.u16(18, 'e_machine') !== 0x3e) {
    throw new FormatError('ERR_ELF_MAGIC', 'elf: vmlinux is not a 64-bit x86-64 ELF file', { format: 'elf', field: 'e_ident', offset: 0 });
  }
  const phoff = r.u64n(32, 'e_phoff');
  const phentsize = r.u16(54, 'e_phentsize');
  const phnum = r.u16(56, 'e_phnum');
  let loadSegments = 0;
  let pvhEntry: number | undefined;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = r.u32(ph, 'p_type');
    if (type === PT_LOAD) loadSegments++;
    if (type !== PT_NOTE) continue;
    const start = r.u64n(ph + 8, 'p_offset');
    const end = start + r.u64n(ph + 32, 'p_filesz');
    for (let at = start; at + 12 <= end; ) {
      const namesz = r.u32(at, 'n_namesz');
      const descsz = r.u32(at + 4, 'n_descsz');
      const ntype = r.u32(at + 8, 'n_type');
      const name = r.ascii(at + 12, Math.max(0, namesz - 1), 'n_name');
      const desc = at + 12 + ((namesz + 3) & ~3);
      if (name === 'Xen' && ntype === XEN_ELFNOTE_PHYS32_ENTRY && descsz >= 4) pvhEntry = r.u32(desc, 'phys32_entry');
      at = desc + ((descsz + 3) & ~3);
    }
  }
  if (loadSegments === 0) throw new FormatError('ERR_ELF_NO_LOAD', 'elf: vmlinux has no PT_LOAD segment', { format: 'elf', field: 'p_type' });
  if (pvhEntry === undefined) {
    throw new FormatError('ERR_ELF_NO_PVH', 'elf: vmlinux has no XEN_ELFNOTE_PHYS32_ENTRY note, so it cannot boot through PVH', { format: 'elf', field: 'n_type' });
  }
  return { loadSegments, pvhEntry };
}

function listFiles(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).map((f) => path.join(dir, f));
}

function checkFreeSpace(dir: string): void {
  const s = fs.statfsSync(dir);
  const freeMiB = (s.bavail * s.bsize) / 2 ** 20;
  if (freeMiB < FREE_SPACE_NEEDED_MIB) {
    throw new NodevmmError('ERR_ARTIFACTS_NO_SPACE', `artifacts: ${dir} has ${freeMiB.toFixed(0)} MiB free, building the guest artifacts needs ${FREE_SPACE_NEEDED_MIB} MiB`);
  }
}

function asNoSpace(err: unknown): unknown {
  if ((err as NodeJS.ErrnoException)?.code === 'ENOSPC') {
    return new NodevmmError('ERR_ARTIFACTS_NO_SPACE', `artifacts: the disk filled up while building the guest artifacts in ${guestCacheRoot()}`, { cause: err });
  }
  return err;
}

/** Each external command (apt-get download, dpkg-deb, ...) gets this long: 10 minutes unless the environment says otherwise. */
function commandTimeoutMs(): number {
  const s = Number(process.env.NODEVMM_ARTIFACTS_COMMAND_TIMEOUT_S);
  return Number.isFinite(s) && s > 0 ? s * 1000 : 600_000;
}

function run(cmd: string, args: string[], cwd: string | undefined, code: string): Promise<string>;
function run(cmd: string, args: string[], cwd: string | undefined, code: string, encoding: 'buffer'): Promise<Buffer>;
function run(cmd: string, args: string[], cwd: string | undefined, code: string, encoding: 'utf8' | 'buffer' = 'utf8'): Promise<string | Buffer> {
  const timeout = commandTimeoutMs();
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, encoding, maxBuffer: 1 << 30, env: { ...process.env, LC_ALL: 'C' }, timeout, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const tail = String(stderr).trim().split('\n').slice(-5).join(' | ');
      const e = err as NodeJS.ErrnoException & { killed?: boolean };
      const why =
        e.code === 'ENOENT'
          ? `${cmd} is not installed`
          : e.killed
            ? `${cmd} ${args.join(' ')} did not finish within ${timeout / 1000} s and was stopped (NODEVMM_ARTIFACTS_COMMAND_TIMEOUT_S sets the limit)`
            : `${cmd} ${args.join(' ')} failed: ${tail || e.message}`;
      reject(/No space left/i.test(tail) ? new NodevmmError('ERR_ARTIFACTS_NO_SPACE', `artifacts: ${why}`) : new NodevmmError(code, `artifacts: ${why}`, { cause: err }));
    });
  });
}

/** An exclusive lock file holding our pid; a lock whose owner is gone (or is very old) is taken over. */
async function acquireLock(lockPath: string, progress: (m: string) => void): Promise<() => void> {
  let told = false;
  for (;;) {
    try {
      const fd = fs.openSync(lockPath, 'wx');
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      return () => fs.rmSync(lockPath, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (lockIsStale(lockPath)) {
      fs.rmSync(lockPath, { force: true });
      continue;
    }
    if (!told) {
      progress(`waiting for another process building the guest artifacts (${lockPath})`);
      told = true;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

function lockIsStale(lockPath: string): boolean {
  try {
    const pid = Number(fs.readFileSync(lockPath, 'utf8'));
    if (Date.now() - fs.statSync(lockPath).mtimeMs > LOCK_STALE_MS) return true;
    if (!Number.isInteger(pid) || pid <= 0) return false; // being written right now
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
