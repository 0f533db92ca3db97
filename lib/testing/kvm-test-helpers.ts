/**
 * Helpers shared by the tier-1 KVM tests and the exit benchmark: probing
 * /dev/kvm once, waiting for a vCPU stop with a deadline, and measuring the
 * process's fds, threads and RSS for leak checks.
 */
import * as fs from 'node:fs';
import { KVM_IDENTITY_MAP_START, KVM_TSS_START } from '../arch/x86_64/layout';
import { openHypervisor } from '../hv/hypervisor';
import { vmClosesSettled } from '../hv/kvm-backend';
import type { Partition, VcpuStop } from '../hv/partition';

/** The pages an x86 KvmPartition with the in-kernel irqchip needs, where the x86 machine puts them. */
export const X86_KVM_PAGES = { tssAddress: KVM_TSS_START, identityMapAddress: KVM_IDENTITY_MAP_START } as const;

/** Why KVM tests cannot run here, or undefined when they can. */
export function kvmSkipReason(): string | undefined {
  try {
    const p = openHypervisor().probe();
    return p.ok ? undefined : p.message;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Resolve with the first vCPU stop, or reject after `timeoutMs`. */
export function waitForStop(p: Partition, timeoutMs = 10_000): Promise<VcpuStop> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      p.off('vcpu-stop', on);
      reject(new Error(`no vcpu stop within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (s: VcpuStop) => {
      clearTimeout(timer);
      resolve(s);
    };
    p.once('vcpu-stop', on);
  });
}

export interface ProcessResources {
  fds: number;
  threads: number;
  rssKiB: number;
}

/**
 * processResources() once the VM fds of earlier destroys are closed (they
 * close on closer threads), a few milliseconds later: a thread joined a
 * moment ago is still counted in /proc/self/status while it finishes exiting.
 */
export async function settledProcessResources(): Promise<ProcessResources> {
  await vmClosesSettled();
  await new Promise((resolve) => setTimeout(resolve, 5));
  return processResources();
}

export function processResources(): ProcessResources {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const field = (name: string) => Number(/^(\w+):\s+(\d+)/m.exec(status.split('\n').find((l) => l.startsWith(name + ':')) ?? '')?.[2] ?? NaN);
  return { fds: fs.readdirSync('/proc/self/fd').length, threads: field('Threads'), rssKiB: field('VmRSS') };
}

/**
 * What a leak check prints when it fails: each fd's target, and where the
 * resident memory is (mapping kinds from /proc/self/smaps, V8's heap and the
 * memory of ArrayBuffers outside it), so one failing run says what grew.
 */
export interface ProcessResourceDetail {
  fds: Record<string, string>;
  /** Resident KiB per kind of mapping: [heap], [anon] (anonymous, includes malloc arenas and V8), file-backed, and others by name. */
  rssByMapping: Record<string, number>;
  v8HeapUsedKiB: number;
  v8HeapTotalKiB: number;
  externalKiB: number;
  arrayBuffersKiB: number;
}

export function processResourceDetail(): ProcessResourceDetail {
  const fds: Record<string, string> = {};
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      fds[fd] = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      // closed between readdir and readlink (the readdir's own fd)
    }
  }
  const rssByMapping: Record<string, number> = {};
  let kind = '';
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1]!;
      kind = name === '' ? '[anon]' : name.startsWith('/') ? (name.includes('/dev/') || name.includes('memfd:') ? name : 'file-backed') : name;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) rssByMapping[kind] = (rssByMapping[kind] ?? 0) + Number(rss[1]);
  }
  const m = process.memoryUsage();
  const kib = (n: number) => Math.round(n / 1024);
  return { fds, rssByMapping, v8HeapUsedKiB: kib(m.heapUsed), v8HeapTotalKiB: kib(m.heapTotal), externalKiB: kib(m.external), arrayBuffersKiB: kib(m.arrayBuffers) };
}

/** The parts of two details that differ, for a failing leak check's message. */
export function diffResourceDetail(before: ProcessResourceDetail, after: ProcessResourceDetail): string {
  const out: string[] = [];
  for (const fd of new Set([...Object.keys(before.fds), ...Object.keys(after.fds)])) {
    if (before.fds[fd] !== after.fds[fd]) out.push(`fd ${fd}: ${before.fds[fd] ?? '(none)'} -> ${after.fds[fd] ?? '(none)'}`);
  }
  for (const k of new Set([...Object.keys(before.rssByMapping), ...Object.keys(after.rssByMapping)])) {
    const d = (after.rssByMapping[k] ?? 0) - (before.rssByMapping[k] ?? 0);
    if (Math.abs(d) >= 512) out.push(`rss ${k}: ${d > 0 ? '+' : ''}${d} KiB`);
  }
  for (const k of ['v8HeapUsedKiB', 'v8HeapTotalKiB', 'externalKiB', 'arrayBuffersKiB'] as const) out.push(`${k}: ${before[k]} -> ${after[k]}`);
  return out.join('\n');
}
