/**
 * What this process's kernel says about one of its mappings (guest RAM
 * tests): its /proc/self/maps line and smaps fields, and which pages of a
 * range are in memory or swap (/proc/self/pagemap). Linux only.
 */
import * as fs from 'node:fs';

export interface HostMapping {
  /** The maps line's permissions, e.g. "rw-p" (private) or "rw-s" (shared). */
  perms: string;
  /** The mapped file ("/memfd:ram-low (deleted)"), or "" for anonymous memory. */
  path: string;
  /** smaps fields in kB (Rss, AnonHugePages, ...) and flags (THPeligible) as numbers. */
  fields: Record<string, number>;
  /** smaps' VmFlags, e.g. "dc" (not copied into a forked child: MADV_DONTFORK), "dd" (not dumped). */
  vmFlags: string[];
}

/** The mapping that holds `address` (the kernel may have merged it with a like neighbour), or undefined. */
export function hostMappingAt(address: bigint): HostMapping | undefined {
  for (const block of fs.readFileSync('/proc/self/smaps', 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    const [head, ...rest] = block.split('\n');
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$/.exec(head!);
    if (!m || address < BigInt(`0x${m[1]}`) || address >= BigInt(`0x${m[2]}`)) continue;
    const fields: Record<string, number> = {};
    let vmFlags: string[] = [];
    for (const line of rest) {
      const f = /^(\w+):\s+(\d+)/.exec(line);
      if (f) fields[f[1]!] = Number(f[2]);
      else if (line.startsWith('VmFlags:')) vmFlags = line.slice('VmFlags:'.length).trim().split(/\s+/);
    }
    return { perms: m[3]!, path: m[4]!.trim(), fields, vmFlags };
  }
  return undefined;
}

/** How many of the `pages` 4 KiB pages from `address` are in memory or in swap (ever touched and not freed since). */
export function pagesInMemoryOrSwap(address: bigint, pages: number): number {
  const fd = fs.openSync('/proc/self/pagemap', 'r');
  try {
    const entries = new BigUint64Array(pages);
    const bytes = new Uint8Array(entries.buffer);
    const at = Number(address / 4096n) * 8;
    for (let got = 0; got < bytes.length; ) {
      const n = fs.readSync(fd, bytes, got, bytes.length - got, at + got);
      if (n <= 0) throw new Error(`/proc/self/pagemap ended at entry ${got / 8} of ${pages}`);
      got += n;
    }
    // Bit 63: present, bit 62: swapped.
    return entries.filter((e) => (e >> 62n) !== 0n).length;
  } finally {
    fs.closeSync(fd);
  }
}

/** Whether transparent huge pages can back anonymous memory here (THP `enabled` is not `never`). */
export function anonymousThpAvailable(): boolean {
  try {
    return !/\[never\]/.test(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'));
  } catch {
    return false;
  }
}
