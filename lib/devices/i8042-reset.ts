/**
 * The one i8042 feature a guest without a keyboard needs: command 0xFE
 * ("pulse reset line") written to the command port 0x64 requests a reset.
 * This device claims port 0x64 only (offset 0); port 0x60 stays unclaimed and
 * 0x61 belongs to the PIT. Status reads return 0 (both buffers empty) so
 * Linux's kb_wait() loop before the reset command finishes at once.
 * Reference: Linux arch/x86/kernel/reboot.c (BOOT_KBD), IBM PC/AT 8042 commands.
 *
 * Threat model: the guest can write any byte at any rate; only 0xFE acts, and
 * it only calls onReset, which the embedder must treat as an idempotent request.
 */

import type { IoDevice } from './types';

/** i8042 command: pulse output port bit 0, the CPU reset line. */
export const I8042_CMD_RESET = 0xfe;

export interface I8042ResetOptions {
  name?: string;
  onReset: () => void;
}

export class I8042Reset implements IoDevice {
  readonly name: string;
  resetRequests = 0;
  private readonly onReset: () => void;

  constructor(options: I8042ResetOptions) {
    this.name = options.name ?? 'i8042';
    this.onReset = options.onReset;
  }

  read(_offset: number, _size: number): number {
    return 0;
  }

  write(offset: number, size: number, value: number): void {
    if (offset !== 0 || size !== 1 || (value & 0xff) !== I8042_CMD_RESET) return;
    this.resetRequests++;
    try {
      this.onReset();
    } catch {
      // A host callback bug must not surface as a guest I/O failure.
    }
  }
}
