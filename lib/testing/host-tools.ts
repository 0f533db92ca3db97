/**
 * The host tools the test tiers call (dtc, cpio, iasl, QEMU, the aarch64 cross
 * compiler, ...), which Debian package brings each, and the decision `npm test`
 * makes about them: install the missing ones with apt-get when it runs as root
 * on a machine with apt, otherwise leave them missing so each test that needs
 * one skips with the reason (or fails under CI=true, which must prove
 * everything). The decision is a pure function of three facts about the host
 * (which commands exist, root, apt-get) so it is unit-tested without touching
 * this machine's packages.
 */
import { spawnSync } from 'node:child_process';

export interface HostTool {
  /** The command the tests run. */
  command: string;
  /** The Debian package that installs it. */
  pkg: string;
}

/** Every command a test tier or the test runner runs, with its Debian package. */
export const TEST_TOOLS: readonly HostTool[] = [
  { command: 'dtc', pkg: 'device-tree-compiler' },
  { command: 'fdtget', pkg: 'device-tree-compiler' },
  { command: 'cpio', pkg: 'cpio' },
  { command: 'iasl', pkg: 'acpica-tools' },
  { command: 'acpiexec', pkg: 'acpica-tools' },
  { command: 'qemu-system-x86_64', pkg: 'qemu-system-x86' },
  { command: 'qemu-system-aarch64', pkg: 'qemu-system-arm' },
  { command: 'aarch64-linux-gnu-g++', pkg: 'g++-aarch64-linux-gnu' },
  { command: 'mkfs.ext4', pkg: 'e2fsprogs' },
  { command: 'debugfs', pkg: 'e2fsprogs' },
  { command: 'busybox', pkg: 'busybox-static' },
  { command: 'xz', pkg: 'xz-utils' },
  { command: 'dpkg-deb', pkg: 'dpkg' },
  { command: 'file', pkg: 'file' },
  { command: 'ip', pkg: 'iproute2' },
  { command: 'gcc', pkg: 'gcc' },
  { command: 'passt', pkg: 'passt' },
  { command: 'setpriv', pkg: 'util-linux' },
];

/** The three facts the decision needs, injectable for tests. */
export interface HostFacts {
  hasCommand(command: string): boolean;
  isRoot(): boolean;
  hasApt(): boolean;
}

export interface ProvisionPlan {
  /** Tools that are not on PATH now. */
  missing: HostTool[];
  /** Debian packages to install with apt-get (deduplicated, in table order); empty when nothing can or need be installed. */
  install: string[];
  /** Why missing tools stay missing (not root, no apt-get); undefined when none are missing or they will be installed. */
  blockedBecause?: string;
}

/** Decides what to install: nothing when all is there; the packages when root with apt; else the reason it cannot. */
export function planProvision(tools: readonly HostTool[], host: HostFacts): ProvisionPlan {
  const missing = tools.filter((t) => !host.hasCommand(t.command));
  if (missing.length === 0) return { missing, install: [] };
  if (!host.hasApt()) return { missing, install: [], blockedBecause: 'apt-get is not available on this machine' };
  if (!host.isRoot()) return { missing, install: [], blockedBecause: 'not running as root, so apt-get cannot install them' };
  return { missing, install: [...new Set(missing.map((t) => t.pkg))] };
}

/** `sh -c 'command -v X'`: true when X is on PATH. */
export function commandExists(command: string): boolean {
  if (!/^[A-Za-z0-9_.+-]+$/.test(command)) return false;
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

export const THIS_HOST: HostFacts = {
  hasCommand: commandExists,
  isRoot: () => process.getuid?.() === 0,
  hasApt: () => commandExists('apt-get'),
};

/** Runs apt-get update and install with its output visible; true when both succeeded. */
export type AptInstall = (packages: string[]) => boolean;

export const aptGetInstall: AptInstall = (packages) => {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (spawnSync('apt-get', ['update', '-q'], { stdio: 'inherit', env }).status !== 0) return false;
  return spawnSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...packages], { stdio: 'inherit', env }).status === 0;
};

export interface ProvisionResult {
  /** Packages apt-get installed in this call. */
  installed: string[];
  /** Tools still missing afterwards. */
  missing: HostTool[];
  /** Why they are missing (not root, no apt-get, apt-get failed). */
  reason?: string;
}

/**
 * Installs what is missing, once: plan, one apt-get run (with progress on the
 * terminal), then a re-check of PATH. A no-op when every tool is present.
 */
export function provisionHostTools(
  tools: readonly HostTool[] = TEST_TOOLS,
  host: HostFacts = THIS_HOST,
  install: AptInstall = aptGetInstall,
  log: (message: string) => void = () => {},
): ProvisionResult {
  const plan = planProvision(tools, host);
  if (plan.missing.length === 0) return { installed: [], missing: [] };
  if (plan.install.length === 0) return { installed: [], missing: plan.missing, reason: plan.blockedBecause };
  log(`installing ${plan.install.join(' ')} with apt-get (missing: ${plan.missing.map((t) => t.command).join(', ')})`);
  const ok = install(plan.install);
  const missing = tools.filter((t) => !host.hasCommand(t.command));
  return { installed: ok ? plan.install : [], missing, reason: missing.length ? (ok ? 'apt-get installed the packages but the commands are still not on PATH' : 'apt-get install failed') : undefined };
}

/** The install hint for commands, e.g. "apt-get install device-tree-compiler cpio". */
export function installHint(commands: readonly string[], tools: readonly HostTool[] = TEST_TOOLS): string {
  const pkgs = commands.map((c) => tools.find((t) => t.command === c)?.pkg ?? c);
  return `apt-get install ${[...new Set(pkgs)].join(' ')}`;
}

/** One line naming the commands among `commands` that are missing and how to get them; undefined when all exist. */
export function missingToolsReason(commands: readonly string[], hasCommand: (c: string) => boolean = commandExists): string | undefined {
  const missing = commands.filter((c) => !hasCommand(c));
  if (missing.length === 0) return undefined;
  return `needs ${missing.join(', ')} (${installHint(missing)}; npm test installs it when run as root)`;
}
