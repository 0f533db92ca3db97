/**
 * Error classes for nodevmm. Every error carries a stable `code` (Node style,
 * `ERR_*`); messages may change between releases, codes may not.
 *
 * Messages are one sentence, lower case, no trailing period, and name the
 * file/field/value that broke the rule, so the CLI can print them as-is.
 */

export interface NodevmmErrorOptions {
  cause?: unknown;
}

export class NodevmmError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: NodevmmErrorOptions) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.code = code;
    this.name = new.target.name;
  }
}

/** One problem found while validating a configuration. */
export interface ConfigIssue {
  /** JSON-ish path of the offending field, e.g. `memory.size` or `serial[1].mode`. */
  path: string;
  message: string;
}

/** A configuration was rejected; `issues` lists every problem, not just the first. */
export class ConfigError extends NodevmmError {
  readonly issues: readonly ConfigIssue[];
  constructor(issues: readonly ConfigIssue[]) {
    const first = issues[0];
    const msg =
      issues.length === 1 && first
        ? `${first.path}: ${first.message}`
        : `invalid configuration (${issues.length} problems): ` + issues.map((i) => `${i.path}: ${i.message}`).join('; ');
    super('ERR_CONFIG', msg);
    this.issues = issues;
  }
}

export interface FormatErrorDetails {
  /** Which format: 'elf', 'bzimage', 'igvm', 'fdt', 'cpio', 'arm64-image', ... */
  format: string;
  /** Spec name of the field that failed, e.g. `setup_sects`. */
  field?: string;
  /** Byte offset in the input where the field lives. */
  offset?: number;
  expected?: string;
  actual?: string;
  /** Source file name when known (set by loaders that read files). */
  file?: string;
}

/** Bytes did not parse as the expected format. */
export class FormatError extends NodevmmError {
  readonly format: string;
  readonly field: string | undefined;
  readonly offset: number | undefined;
  readonly expected: string | undefined;
  readonly actual: string | undefined;
  file: string | undefined;
  constructor(code: string, message: string, details: FormatErrorDetails, options?: NodevmmErrorOptions) {
    super(code, message, options);
    this.format = details.format;
    this.field = details.field;
    this.offset = details.offset;
    this.expected = details.expected;
    this.actual = details.actual;
    this.file = details.file;
  }
  /** Prefix the message with the file it came from (loaders call this). */
  withFile(file: string): this {
    if (!this.file) {
      this.file = file;
      this.message = `${file}: ${this.message}`;
    }
    return this;
  }
}

/** A guest-physical access fell outside guest RAM or was otherwise invalid. */
export class GuestMemoryError extends NodevmmError {
  readonly gpa: bigint;
  readonly length: number;
  constructor(message: string, gpa: bigint | number, length: number, code = 'ERR_GUEST_MEMORY_RANGE') {
    super(code, message);
    this.gpa = BigInt(gpa);
    this.length = length;
  }
}

/** A KVM ioctl or syscall failed; shaped like Node's SystemError. */
export class KvmError extends NodevmmError {
  readonly errno: number;
  readonly syscall: string;
  readonly ioctl: string | undefined;
  constructor(message: string, details: { code: string; errno: number; syscall: string; ioctl?: string }) {
    super(details.code, message);
    this.errno = details.errno;
    this.syscall = details.syscall;
    this.ioctl = details.ioctl;
  }
}

/** An operation was attempted in a VM state that does not allow it. */
export class VmStateError extends NodevmmError {
  readonly state: string;
  readonly action: string;
  constructor(action: string, state: string) {
    super('ERR_VM_STATE', `cannot ${action} a vm that is ${state}`);
    this.state = state;
    this.action = action;
  }
}

/** A host-side device fault (never raised for guest misbehaviour). */
export class DeviceError extends NodevmmError {
  constructor(message: string, options?: NodevmmErrorOptions) {
    super('ERR_DEVICE', message, options);
  }
}

/** The hypervisor is missing, inaccessible or too old. */
export class HypervisorUnavailableError extends NodevmmError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

/**
 * A snapshot cannot be read or used: another format version, an
 * incompatible host CPU, a missing, truncated or tampered file, a field of
 * the wrong shape. `file` and `field` name what broke when known.
 */
export class SnapshotError extends NodevmmError {
  readonly file: string | undefined;
  readonly field: string | undefined;
  constructor(message: string, where: { file?: string; field?: string } = {}, options?: NodevmmErrorOptions) {
    super('ERR_SNAPSHOT', message, options);
    this.file = where.file;
    this.field = where.field;
  }
}
