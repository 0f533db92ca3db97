/**
 * Shared plumbing for the end-to-end tier (real Linux guests under a real
 * KVM): the skip reason, the cached artifacts, and `bootToStop`, which boots
 * a guest with the test initramfs, optionally runs one command in it
 * (nodevmm.cmd), and returns the console, the markers and the stop reason.
 */
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

/** Boot the cached kernel (bzImage unless `kernel` says otherwise) to its stop. */
export async function bootToStop(config: VmConfig & { command?: string; timeoutMs?: number; onRunning?: (vm: Vm) => void }): Promise<BootResult> {
  const a = e2eArtifacts!;
  const { command, timeoutMs = 180_000, onRunning, ...rest } = config;
  const cmdline = [rest.cmdline, command !== undefined ? cmdParam(command) : ''].filter(Boolean).join(' ');
  const started = Date.now();
  const vm = await createVm({ kernel: a.vmlinuz, initrd: a.testInitramfs, memory: '256M', ...rest, cmdline });
  await vm.start();
  onRunning?.(vm);
  let diagnosis: string | undefined;
  let timedOut = false;
  // On a timeout, say where the guest was before killing it (its console may say nothing).
  const timer = setTimeout(() => {
    timedOut = true;
    void vm
      .diagnose()
      .then((d) => (diagnosis = d), (e: Error) => (diagnosis = `diagnose failed: ${e.message}`))
      .finally(() => void vm.kill());
  }, timeoutMs);
  const stop = await vm.waitForStop();
  clearTimeout(timer);
  const log = vm.serial(1).log().replace(/\r/g, '') + (diagnosis ? `\nNODEVMM-TIMEOUT-DIAGNOSIS ${diagnosis}\n` : '');
  if (timedOut) throw new NodevmmError('ERR_E2E_TIMEOUT', timeoutReport('guest', log, Date.now() - started, timeoutMs, diagnosis));
  return { vm, stop, log, markers: guestMarkers(log), wallMs: Date.now() - started };
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
