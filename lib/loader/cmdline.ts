/**
 * Kernel command-line validation and encoding: printable ASCII only, and a
 * byte limit that counts the terminating NUL (the kernel's header states its
 * limit as cmdline_size, NUL excluded, so capacity = cmdline_size + 1).
 * It does not compose the line from config (the vm builder does) and does
 * not place it in memory. Spec: Linux boot.rst "cmdline_size", "The Kernel
 * Command Line".
 */
import { NodevmmError } from '../errors';

/** boot.rst: kernels older than protocol 2.06 accept at most 255 characters. */
export const LEGACY_CMDLINE_MAX = 255;

/** Throws ERR_CMDLINE_CHARACTER or ERR_CMDLINE_TOO_LONG; `capacity` includes the NUL. */
export function validateCmdline(cmdline: string, capacity: number): void {
  for (let i = 0; i < cmdline.length; i++) {
    const c = cmdline.charCodeAt(i);
    // The kernel parses bytes, and the boot protocol only promises ASCII; a
    // newline or a UTF-8 sequence would reach the kernel as something else.
    if (c < 0x20 || c > 0x7e) {
      throw new NodevmmError('ERR_CMDLINE_CHARACTER', `kernel command line has a non-printable or non-ascii character 0x${c.toString(16).padStart(2, '0')} at position ${i}`);
    }
  }
  const needed = cmdline.length + 1;
  if (needed > capacity) {
    throw new NodevmmError('ERR_CMDLINE_TOO_LONG', `kernel command line is ${cmdline.length} bytes plus the NUL (${needed}), more than the limit of ${capacity} bytes including the NUL`);
  }
}

/** Validate, then return the NUL-terminated bytes. */
export function encodeCmdline(cmdline: string, capacity: number): Uint8Array {
  validateCmdline(cmdline, capacity);
  const out = new Uint8Array(cmdline.length + 1);
  for (let i = 0; i < cmdline.length; i++) out[i] = cmdline.charCodeAt(i);
  return out;
}

/** Join non-empty parts with single spaces ("console=ttyS0", "", "quiet" → "console=ttyS0 quiet"). */
export function joinCmdline(parts: readonly (string | undefined)[]): string {
  return parts.map((p) => (p ?? '').trim()).filter((p) => p.length > 0).join(' ');
}
