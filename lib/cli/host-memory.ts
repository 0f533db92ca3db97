/**
 * What guest RAM size the host can back, for `nodevmm run -m`. Guest RAM is
 * a private anonymous mapping the kernel fills on first touch, so a size the
 * host cannot hold maps fine and fails later, when the guest touches it and
 * the OOM killer picks a process. The CLI refuses such sizes up front; the
 * rule is physical RAM plus swap (what the host could ever hold at once),
 * and `--overcommit` lifts it for users who know their guest stays small.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { ConfigError } from '../errors';
import { formatSize } from '../loader/format-size';

/** Physical RAM plus swap, in bytes (swap from /proc/meminfo; 0 when it cannot be read). */
export function hostBackableBytes(meminfo = readMeminfo()): number {
  const swapKiB = /^SwapTotal:\s+(\d+)\s+kB$/m.exec(meminfo)?.[1];
  return os.totalmem() + (swapKiB ? Number(swapKiB) * 1024 : 0);
}

function readMeminfo(): string {
  try {
    return fs.readFileSync('/proc/meminfo', 'latin1');
  } catch {
    return '';
  }
}

/**
 * Throw a ConfigError naming `flag` and `value` when `bytes` of guest RAM is
 * more than `hostBytes` and the user did not ask to overcommit.
 */
export function checkGuestMemoryFits(flag: string, value: string, bytes: number, hostBytes: number, overcommit: boolean): void {
  if (overcommit || bytes <= hostBytes) return;
  throw new ConfigError([
    {
      path: flag,
      message: `${value} (${formatSize(bytes)}) is more guest RAM than this host can back (${formatSize(hostBytes)} of RAM and swap); use a smaller size, or add --overcommit if the guest will not touch it all`,
    },
  ]);
}
