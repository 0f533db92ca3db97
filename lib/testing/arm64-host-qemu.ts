/**
 * The QEMU that emulates the arm64 KVM host (arm64-kvm-host.ts).
 *
 * Debian 12's QEMU 7.2 runs a nested guest's stale code: in its emulated
 * arm64 host a new VM's vCPU, resuming after an exit, ran the instructions a
 * destroyed VM had at that address (scripts/diag/arm64-teardown-stress.js:
 * 10 to 27 such rounds in 400 on 2026-12-07, with MTTCG, with one TCG thread
 * and with KVM in nVHE mode alike), and node inside that host died of heap
 * corruption in 2 of 3 e2e-arm64 proof attempts one evening (CI's too). Debian's QEMU 10.0
 * (bookworm-backports) ran the same 400 rounds, and 1200 more, with none
 * (docs/testing.md, "The arm64 host's QEMU"). So the host runs on QEMU 10 or
 * newer: the system's when it is that new, else Debian's backports build,
 * downloaded once with apt-get (a private apt configuration in the cache: the
 * system's sources and packages are left alone) and unpacked into
 * ~/.cache/nodevmm/arm64-qemu. It links the libraries Debian 12's own
 * qemu-system-arm brings.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NodevmmError } from '../errors';
import { guestCacheRoot } from './artifacts';

/** The oldest QEMU major version the arm64 host runs on (see above). */
export const ARM64_HOST_QEMU_MIN_MAJOR = 10;
/** Debian's package with qemu-system-aarch64. */
export const ARM64_HOST_QEMU_PACKAGE = 'qemu-system-arm';
const BINARY = 'qemu-system-aarch64';
const UNPACKED = path.join('root', 'usr', 'bin', BINARY);

export function arm64HostQemuDir(): string {
  return path.join(guestCacheRoot(), 'arm64-qemu');
}

/** The QEMU version `bin --version` prints ("QEMU emulator version 10.0.2 ..."), or undefined when it does not start. */
export function qemuVersion(bin: string): { major: number; minor: number; text: string } | undefined {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  const m = r.status === 0 ? /QEMU emulator version (\d+)\.(\d+)\S*/.exec(r.stdout) : null;
  return m ? { major: Number(m[1]), minor: Number(m[2]), text: m[0] } : undefined;
}

/**
 * The arm64 host's QEMU if one new enough is here: the system's (`system`, found in PATH), then
 * the one unpacked into `dir`.
 */
export function findArm64HostQemu(dir = arm64HostQemuDir(), system = BINARY): string | undefined {
  for (const bin of [system, path.join(dir, UNPACKED)]) {
    if (bin !== system && !fs.existsSync(bin)) continue;
    const v = qemuVersion(bin);
    if (v && v.major >= ARM64_HOST_QEMU_MIN_MAJOR) return bin;
  }
  return undefined;
}

/** The suite the backports come from: "<codename>-backports" of the Debian this machine runs. */
export function backportsSuite(osRelease: string): string | undefined {
  if (!/^ID=debian$/m.test(osRelease)) return undefined;
  const codename = /^VERSION_CODENAME=([a-z]+)$/m.exec(osRelease)?.[1];
  return codename ? `${codename}-backports` : undefined;
}

/**
 * findArm64HostQemu, or else Debian's backports QEMU downloaded and unpacked
 * into `dir` (apt-get with its own sources list and state under `dir`; the
 * archive's signature is checked against the system's keyring as for any apt
 * download). Throws ERR_ARM64_QEMU with one sentence saying what is missing.
 */
export function ensureArm64HostQemu(opts: { dir?: string; onProgress?: (m: string) => void } = {}): string {
  const dir = opts.dir ?? arm64HostQemuDir();
  const found = findArm64HostQemu(dir);
  if (found) return found;
  const say = opts.onProgress ?? (() => {});
  const system = qemuVersion(BINARY);
  let osRelease = '';
  try {
    osRelease = fs.readFileSync('/etc/os-release', 'utf8');
  } catch {
    // not Linux, or no os-release: no Debian suite to fetch from
  }
  const suite = backportsSuite(osRelease);
  const have = system ? `this machine's ${BINARY} is ${system.text}` : `this machine has no ${BINARY}`;
  if (!suite) {
    throw new NodevmmError('ERR_ARM64_QEMU', `the emulated arm64 host needs QEMU ${ARM64_HOST_QEMU_MIN_MAJOR} or newer (older ones run a destroyed nested VM's code: docs/testing.md) and ${have}; outside Debian, install a newer QEMU yourself`);
  }
  const apt = path.join(dir, 'apt');
  for (const d of ['lists/partial', 'archives/partial', 'debs']) fs.mkdirSync(path.join(apt, d), { recursive: true });
  const sources = path.join(apt, 'sources.list');
  fs.writeFileSync(sources, `deb http://deb.debian.org/debian ${suite} main\n`);
  const aptOpts = [
    '-o', `Dir::Etc::SourceList=${sources}`,
    '-o', 'Dir::Etc::SourceParts=/nonexistent',
    '-o', `Dir::State::Lists=${path.join(apt, 'lists')}`,
    '-o', `Dir::Cache=${apt}`,
    '-o', `Dir::Cache::Archives=${path.join(apt, 'archives')}`,
    '-o', 'Debug::NoLocking=1',
    // Root's apt downloads as _apt, which cannot write into a cache directory owned by root.
    '-o', 'APT::Sandbox::User=root',
    '-q',
  ];
  const run = (args: string[], cwd: string) => {
    try {
      return execFileSync('apt-get', [...aptOpts, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 900_000 }).toString();
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      const why = (err.stderr?.toString() || err.message).trim().split('\n').filter(Boolean).slice(-2).join(' ');
      throw new NodevmmError('ERR_ARM64_QEMU', `downloading ${ARM64_HOST_QEMU_PACKAGE} from Debian's ${suite} for the emulated arm64 host failed (${have}): apt-get ${args[0]}: ${why}`);
    }
  };
  say(`${have}, older than the ${ARM64_HOST_QEMU_MIN_MAJOR}.0 the arm64 host needs: fetching ${ARM64_HOST_QEMU_PACKAGE} from ${suite} into ${dir}`);
  run(['update'], dir);
  const debs = path.join(apt, 'debs');
  for (const f of fs.readdirSync(debs)) fs.rmSync(path.join(debs, f));
  run(['download', `${ARM64_HOST_QEMU_PACKAGE}/${suite}`], debs);
  const deb = fs.readdirSync(debs).find((f) => f.endsWith('.deb'));
  if (!deb) throw new NodevmmError('ERR_ARM64_QEMU', `apt-get download ${ARM64_HOST_QEMU_PACKAGE}/${suite} left no .deb in ${debs}`);
  say(`unpacking ${deb}`);
  fs.rmSync(path.join(dir, 'root'), { recursive: true, force: true });
  execFileSync('dpkg-deb', ['-x', path.join(debs, deb), path.join(dir, 'root')]);
  const bin = path.join(dir, UNPACKED);
  const v = qemuVersion(bin);
  if (!v) {
    const ldd = spawnSync('ldd', [bin], { encoding: 'utf8' });
    const missing = [...(ldd.stdout ?? '').matchAll(/^\s*(\S+) => not found/gm)].map((m) => m[1]);
    throw new NodevmmError('ERR_ARM64_QEMU', `${bin} (from ${deb}) does not start${missing.length ? `: it needs ${missing.join(', ')} (apt-get install ${ARM64_HOST_QEMU_PACKAGE} brings them)` : ''}`);
  }
  if (v.major < ARM64_HOST_QEMU_MIN_MAJOR) {
    throw new NodevmmError('ERR_ARM64_QEMU', `${suite} offers ${v.text} (${deb}), older than the ${ARM64_HOST_QEMU_MIN_MAJOR}.0 the emulated arm64 host needs`);
  }
  // The package lists and apt's caches (~70 MiB) are not needed again: a refetch starts with apt-get update.
  fs.rmSync(apt, { recursive: true, force: true });
  say(`${v.text} unpacked`);
  return bin;
}
