/**
 * Shared plumbing for the end-to-end tier (real Linux guests under a real
 * KVM): the skip reason, the cached artifacts, and `bootToStop`, which boots
 * a guest with the test initramfs, optionally runs one command in it
 * (nodevmm.cmd), and returns the console, the markers and the stop reason.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NodevmmError } from '../errors';
import { findGuestArtifacts, type GuestArtifacts } from './artifacts';
import { detectKvm } from './detect';
import { createVm, type Vm } from '../vm/vm';
import type { VmConfig } from '../vm/config';
import type { StopReason } from '../vm/lifecycle';

export const e2eArtifacts: GuestArtifacts | undefined = findGuestArtifacts('x86_64');

/** Why real-kernel tests cannot run in this process, or undefined. */
export function e2eSkipReason(): string | undefined {
  const kvm = detectKvm();
  if (kvm.kind !== 'real') return `${kvm.reason}; npm run test:e2e runs these inside the emulated KVM host`;
  if (!e2eArtifacts) return 'guest artifacts are not built (node scripts/guest-artifacts.js)';
  return undefined;
}

export interface BootResult {
  vm: Vm;
  stop: StopReason;
  log: string;
  markers: Record<string, string>;
  wallMs: number;
}

/** Read `GUEST-KEY=value` lines into { KEY: value }. */
export function guestMarkers(log: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of log.replace(/\r/g, '').matchAll(/^GUEST-([A-Z0-9-]+)=(.*)$/gm)) out[m[1]!] = m[2]!;
  return out;
}

export function cmdParam(command: string): string {
  return `nodevmm.cmd=${Buffer.from(command).toString('base64')}`;
}

/**
 * How long a guest may print nothing before its init marker before it counts
 * as stalled, in the emulated KVM host. A healthy boot there prints a line at
 * least every few seconds until init; a few percent of boots, QEMU's guests as
 * well as ours, stop dead in early boot (docs/testing.md, "Known flakes of the
 * emulated host"). Elsewhere (real KVM) a stall is a result, not a flake: 0.
 */
export const EARLY_STALL_MS = process.env.NODEVMM_IN_KVM_HOST ? 60_000 : 0;

/** `onRunning` is called once the vm runs (e.g. to serve its guest while it boots). */
type BootToStopConfig = VmConfig & { command?: string; timeoutMs?: number; earlyStallMs?: number; onRunning?: (vm: Vm) => void };

/**
 * Boot the cached kernel (bzImage unless `kernel` says otherwise) to its stop.
 *
 * A guest that stalls in early boot (silent for `earlyStallMs` before
 * GUEST-INIT-OK) is killed and booted once more, with a FLAKY line on stderr
 * naming where it stopped; a second stall, or any other failure, is the result.
 */
export async function bootToStop(config: BootToStopConfig): Promise<BootResult> {
  try {
    return await bootOnce(config);
  } catch (err) {
    if ((err as NodevmmError).code !== 'ERR_E2E_EARLY_STALL') throw err;
    process.stderr.write(`FLAKY: ${(err as Error).message.split('\n')[0]}; booting the guest once more\n`);
    return bootOnce(config);
  }
}

async function bootOnce(config: BootToStopConfig): Promise<BootResult> {
  const a = e2eArtifacts!;
  const { command, timeoutMs = 180_000, earlyStallMs = EARLY_STALL_MS, onRunning, ...rest } = config;
  const cmdline = [rest.cmdline, command !== undefined ? cmdParam(command) : ''].filter(Boolean).join(' ');
  const started = Date.now();
  const vm = await createVm({ kernel: a.vmlinuz, initrd: a.testInitramfs, memory: '256M', ...rest, cmdline });
  await vm.start();
  onRunning?.(vm);
  const port = vm.serial(1);
  let diagnosis: string | undefined;
  let ended: 'timeout' | 'stall' | undefined;
  // On a timeout or a stall, say where the guest was before killing it (its console may say nothing).
  const end = (why: 'timeout' | 'stall') => {
    if (ended) return;
    ended = why;
    void vm
      .diagnose()
      .then((d) => (diagnosis = d), (e: Error) => (diagnosis = `diagnose failed: ${e.message}`))
      .finally(() => void vm.kill());
  };
  const timer = setTimeout(() => end('timeout'), timeoutMs);
  let lastOutput = Date.now();
  let initReached = false;
  let recent = ''; // the end of the output so far, so a marker split across chunks is still seen
  const onOutput = (chunk: Uint8Array) => {
    lastOutput = Date.now();
    if (initReached) return;
    recent = (recent + Buffer.from(chunk).toString('latin1')).slice(-64);
    initReached = recent.includes('GUEST-INIT-OK');
  };
  port.on('output', onOutput);
  const stallTimer = earlyStallMs > 0
    ? setInterval(() => {
        if (!initReached && Date.now() - lastOutput >= earlyStallMs) end('stall');
      }, Math.min(5_000, earlyStallMs / 4))
    : undefined;
  const stop = await vm.waitForStop();
  clearTimeout(timer);
  if (stallTimer) clearInterval(stallTimer);
  port.off('output', onOutput);
  const log = port.log().replace(/\r/g, '') + (diagnosis ? `\nNODEVMM-TIMEOUT-DIAGNOSIS ${diagnosis}\n` : '');
  const spent = Date.now() - started;
  if (ended === 'stall') {
    const last = log.split('\n').filter((l) => l.trim()).pop() ?? '(no console output)';
    throw new NodevmmError('ERR_E2E_EARLY_STALL', `guest stalled in early boot: no console output for ${(earlyStallMs / 1000).toFixed(0)} s after ${JSON.stringify(last.trim())} (${(spent / 1000).toFixed(1)} s spent)\n${timeoutReport('guest', log, spent, timeoutMs, diagnosis)}`);
  }
  if (ended === 'timeout') throw new NodevmmError('ERR_E2E_TIMEOUT', timeoutReport('guest', log, spent, timeoutMs, diagnosis));
  return { vm, stop, log, markers: guestMarkers(log), wallMs: spent };
}

/**
 * One message for a guest that never finished: whether it reached its
 * marker, the time spent, its last 30 console lines and (for nodevmm) where
 * its vCPUs were.
 */
export function timeoutReport(what: string, log: string, spentMs: number, limitMs: number, diagnosis?: string): string {
  const lines = log.replace(/\r/g, '').split('\n');
  while (lines.length && lines[lines.length - 1] === '') lines.pop();
  const reached = /^GUEST-INIT-OK$/m.test(log) ? 'after GUEST-INIT-OK' : 'before GUEST-INIT-OK';
  return [
    `${what} did not stop within ${(limitMs / 1000).toFixed(0)} s (${(spentMs / 1000).toFixed(1)} s spent, ${reached}); last ${Math.min(30, lines.length)} console lines:`,
    ...lines.slice(-30),
    ...(diagnosis ? [`diagnosis: ${diagnosis}`] : []),
  ].join('\n');
}

/** Lines that mean our firmware tables or devices upset the kernel. */
export const FIRMWARE_COMPLAINTS = /ACPI BIOS Error|ACPI Error|ACPI Warning|\[Firmware Bug\]|\[Firmware Warn\]/;

/**
 * An ext4 root image made by `mkfs.ext4 -d` from a busybox tree in `dir`: `/bin/busybox`,
 * `/sbin/init` (a busybox shell script: mounts /proc, installs the applets, then `initLines`),
 * `/etc/from-host` holding `made-by-mkfs`. The test initramfs switch_roots to it with
 * `root=/dev/vda rootfstype=ext4`. Returns the image's path; a failing mkfs.ext4 throws with
 * its stderr.
 */
export function ext4RootImage(dir: string, initLines: string[], size = '32M'): string {
  const tree = path.join(dir, 'tree');
  for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'tmp', 'etc']) fs.mkdirSync(path.join(tree, d), { recursive: true });
  fs.copyFileSync(e2eArtifacts!.busybox, path.join(tree, 'bin', 'busybox'));
  fs.chmodSync(path.join(tree, 'bin', 'busybox'), 0o755);
  const init = ['#!/bin/busybox sh', '/bin/busybox mount -t proc proc /proc', '/bin/busybox --install -s /bin', ...initLines, ''];
  fs.writeFileSync(path.join(tree, 'sbin', 'init'), init.join('\n'), { mode: 0o755 });
  fs.writeFileSync(path.join(tree, 'etc', 'from-host'), 'made-by-mkfs\n');
  const image = path.join(dir, 'root.ext4');
  const mkfs = spawnSync('mkfs.ext4', ['-q', '-F', '-L', 'nodevmm-root', '-d', tree, image, size], { encoding: 'utf8' });
  if (mkfs.status !== 0) throw new NodevmmError('ERR_E2E_MKFS', `mkfs.ext4 of ${image} failed (status ${mkfs.status}): ${mkfs.stderr || mkfs.error?.message}`);
  return image;
}
