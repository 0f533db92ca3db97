/**
 * The snapshot manifest (manifest.json): what a snapshot folder holds and
 * what it needs to be restored. Format, versions, the host it was taken
 * on, the CPUID the guest saw, the resolved VM config, the memory regions
 * and which file holds each component, and the size and SHA-256 of every
 * file. Readers refuse another format version outright: a snapshot is
 * restored by the nodevmm that understands its layout, never guessed at.
 */
import { SnapshotError } from '../errors';
import type { X86CpuidEntry } from '../hv/x86-state';
import { cpuidEntries, Shape } from './x86-state';

export const SNAPSHOT_FORMAT = 'nodevmm-snapshot';
/** Bump on any change a reader of the previous version would misread. */
export const SNAPSHOT_FORMAT_VERSION = 1;
export const MANIFEST_FILE = 'manifest.json';

export interface SnapshotFile {
  /** A plain name inside the snapshot folder. */
  name: string;
  size: number;
  /** Lower-case hex SHA-256 of the whole file (a sparse file's holes read as zeros). */
  sha256: string;
}

export interface SnapshotMemoryRegion {
  /** The file holding the region's bytes from offset 0 (see `files` for its size and checksum). */
  file: string;
  gpa: number;
  size: number;
}

export interface SnapshotManifest {
  format: typeof SNAPSHOT_FORMAT;
  formatVersion: number;
  /** The nodevmm version that wrote it (information: formatVersion decides compatibility). */
  nodevmmVersion: string;
  /** ISO 8601. */
  createdAt: string;
  arch: 'x86_64' | 'aarch64';
  host: {
    /** 'kvm'. */
    hypervisor: string;
    /** /proc/cpuinfo's model name (information). */
    cpuModel: string;
    /** CPUID vendor string, e.g. GenuineIntel, AuthenticAMD. */
    cpuVendor: string;
  };
  /** The CPUID vCPU 0 had (x86): a host must offer every feature in it to restore. */
  guestCpuid?: X86CpuidEntry[];
  /** The resolved VM config (JSON; images given as bytes appear as null). */
  config: Record<string, unknown>;
  memory: SnapshotMemoryRegion[];
  /** Which file holds each state component. */
  components: { hypervisor: string; devices: string };
  files: SnapshotFile[];
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const SHA256 = /^[0-9a-f]{64}$/;
const MAX_FILES = 64;

/** Parse manifest.json's bytes, refusing another format or version and any field of the wrong shape, naming it. */
export function parseManifest(bytes: Uint8Array): SnapshotManifest {
  const file = MANIFEST_FILE;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (e) {
    throw new SnapshotError(`${file} is not valid JSON (${(e as Error).message}): the snapshot is damaged`, { file }, { cause: e });
  }
  const s = new Shape(file);
  const o = s.object(v, 'the top level');
  if (o.format !== SNAPSHOT_FORMAT) s.fail('format', `"${SNAPSHOT_FORMAT}" (this is not a nodevmm snapshot)`);
  if (o.formatVersion !== SNAPSHOT_FORMAT_VERSION) {
    throw new SnapshotError(`${file}: formatVersion is ${JSON.stringify(o.formatVersion)} (written by nodevmm ${JSON.stringify(o.nodevmmVersion)}), and this nodevmm reads version ${SNAPSHOT_FORMAT_VERSION} only`, { file, field: 'formatVersion' });
  }
  const str = (x: unknown, at: string): string => {
    if (typeof x !== 'string' || x.length > 4096) return s.fail(at, 'a string');
    return x;
  };
  const name = (x: unknown, at: string): string => {
    if (typeof x !== 'string' || !NAME.test(x) || x === MANIFEST_FILE) return s.fail(at, 'a plain file name inside the snapshot folder');
    return x;
  };
  const size = (x: unknown, at: string): number => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) return s.fail(at, 'a byte count');
    return x;
  };
  const arch = o.arch === 'x86_64' || o.arch === 'aarch64' ? o.arch : s.fail('arch', '"x86_64" or "aarch64"');
  const host = s.object(o.host, 'host');
  const files = s.array(o.files, 'files', MAX_FILES).map((f, i) => {
    const e = s.object(f, `files[${i}]`);
    const sha = e.sha256;
    if (typeof sha !== 'string' || !SHA256.test(sha)) return s.fail(`files[${i}].sha256`, '64 lower-case hex digits');
    return { name: name(e.name, `files[${i}].name`), size: size(e.size, `files[${i}].size`), sha256: sha };
  });
  const listed = new Set(files.map((f) => f.name));
  if (listed.size !== files.length) s.fail('files', 'a list naming each file once');
  const known = (x: unknown, at: string): string => {
    const n = name(x, at);
    if (!listed.has(n)) throw new SnapshotError(`${file}: ${at} names ${n}, which files[] does not list`, { file, field: at });
    return n;
  };
  const comps = s.object(o.components, 'components');
  const m: SnapshotManifest = {
    format: SNAPSHOT_FORMAT,
    formatVersion: SNAPSHOT_FORMAT_VERSION,
    nodevmmVersion: str(o.nodevmmVersion, 'nodevmmVersion'),
    createdAt: str(o.createdAt, 'createdAt'),
    arch,
    host: { hypervisor: str(host.hypervisor, 'host.hypervisor'), cpuModel: str(host.cpuModel, 'host.cpuModel'), cpuVendor: str(host.cpuVendor, 'host.cpuVendor') },
    config: s.object(o.config, 'config'),
    memory: s.array(o.memory, 'memory', 16).map((r, i) => {
      const e = s.object(r, `memory[${i}]`);
      const region = { file: known(e.file, `memory[${i}].file`), gpa: size(e.gpa, `memory[${i}].gpa`), size: size(e.size, `memory[${i}].size`) };
      if (region.gpa % 4096 || region.size % 4096 || region.size === 0) s.fail(`memory[${i}]`, 'a non-empty 4 KiB-aligned region');
      return region;
    }),
    components: { hypervisor: known(comps.hypervisor, 'components.hypervisor'), devices: known(comps.devices, 'components.devices') },
    files,
  };
  if (o.guestCpuid !== undefined) m.guestCpuid = cpuidEntries(s, o.guestCpuid, 'guestCpuid');
  for (const [i, r] of m.memory.entries()) {
    const f = files.find((x) => x.name === r.file)!;
    if (f.size !== r.size) throw new SnapshotError(`${file}: memory[${i}] is ${r.size} bytes but its file ${r.file} is listed with ${f.size}`, { file, field: `memory[${i}].size` });
  }
  return m;
}

/** manifest.json's bytes. */
export function serializeManifest(m: SnapshotManifest): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(m, null, 2) + '\n');
}
