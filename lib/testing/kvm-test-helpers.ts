/**
 * Helpers shared by the tier-1 KVM tests and the exit benchmark: probing
 * /dev/kvm once, waiting for a vCPU stop with a deadline, and measuring the
 * process's fds, threads and RSS for leak checks.
 */
import * as fs from 'node:fs';
import { nativeBinding } from '../hv/native';
import type { KvmPartition } from '../hv/kvm-partition';
import type { VcpuStop } from '../hv/partition';

/** Why KVM tests cannot run here, or undefined when they can. */
export function kvmSkipReason(): string | undefined {
  try {
    const p = nativeBinding().probe();
    return p.ok ? undefined : p.message;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Resolve with the first vCPU stop, or reject after `timeoutMs`. */
export function waitForStop(p: KvmPartition, timeoutMs = 10_000): Promise<VcpuStop> {
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

export function processResources(): ProcessResources {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const field = (name: string) => Number(/^(\w+):\s+(\d+)/m.exec(status.split('\n').find((l) => l.startsWith(name + ':')) ?? '')?.[2] ?? NaN);
  return { fds: fs.readdirSync('/proc/self/fd').length, threads: field('Threads'), rssKiB: field('VmRSS') };
}
