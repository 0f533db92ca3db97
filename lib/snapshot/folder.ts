/**
 * A snapshot on disk: one folder holding manifest.json, the hypervisor
 * state (hv.json), the device state (devices.json) and one file per guest
 * RAM region (ram-0, ram-1, ..., sparse). The manifest is written last, so
 * a folder whose writing was interrupted has none and is refused as
 * unfinished. Reading checks every file's size against the manifest and
 * the state files' SHA-256; the RAM files' SHA-256 only when asked
 * (`verifyMemory`), since hashing them costs time proportional to the
 * guest's RAM and restoring is meant not to.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SnapshotError } from '../errors';
import type { Arm64PartitionState } from '../hv/arm64-state';
import type { X86PartitionState } from '../hv/x86-state';
import { checkArm64PartitionState } from './arm64-state';
import { stateFromJson, stateToJson } from './codec';
import { MANIFEST_FILE, parseManifest, serializeManifest, SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_VERSION, type SnapshotFile, type SnapshotManifest } from './manifest';
import { checkX86PartitionState } from './x86-state';

export const HYPERVISOR_FILE = 'hv.json';
export const DEVICES_FILE = 'devices.json';
export const ramFileName = (i: number): string => `ram-${i}`;

/** What a snapshot records besides the state files, which writeSnapshotFolder adds. */
export type SnapshotDescription = Pick<SnapshotManifest, 'nodevmmVersion' | 'arch' | 'host' | 'config'> & { guestCpuid?: SnapshotManifest['guestCpuid'] };

export interface SnapshotParts {
  description: SnapshotDescription;
  hypervisor: X86PartitionState | Arm64PartitionState;
  devices: Record<string, unknown>;
  /** The guest's RAM regions, in the order writeMemory fills them. */
  memory: Array<{ gpa: number; size: number }>;
  /** Write region i into fds[i] (open for writing, empty), e.g. Partition.writeRamTo. */
  writeMemory(fds: readonly number[]): void;
}

async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

function writeFileSynced(file: string, bytes: Uint8Array | string): void {
  const fd = fs.openSync(file, 'wx');
  try {
    fs.writeSync(fd, typeof bytes === 'string' ? Buffer.from(bytes) : bytes);
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Write a snapshot into `dir` (created if missing; it must be empty: a
 * snapshot is never written over another). The memory and state files go
 * first, then their checksums into manifest.json. Returns the manifest.
 */
export async function writeSnapshotFolder(dir: string, parts: SnapshotParts): Promise<SnapshotManifest> {
  fs.mkdirSync(dir, { recursive: true });
  const existing = fs.readdirSync(dir);
  if (existing.length) throw new SnapshotError(`snapshot folder ${dir} is not empty (it holds ${existing.slice(0, 3).join(', ')}${existing.length > 3 ? ', ...' : ''}): give a new or empty folder`, { file: dir });
  const names = parts.memory.map((_, i) => ramFileName(i));
  const fds: number[] = [];
  try {
    for (const n of names) fds.push(fs.openSync(path.join(dir, n), 'wx'));
    parts.writeMemory(fds);
    for (const fd of fds) fs.fdatasyncSync(fd);
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
  writeFileSynced(path.join(dir, HYPERVISOR_FILE), stateToJson(parts.hypervisor));
  writeFileSynced(path.join(dir, DEVICES_FILE), stateToJson(parts.devices));
  const files: SnapshotFile[] = [];
  for (const name of [HYPERVISOR_FILE, DEVICES_FILE, ...names]) {
    const p = path.join(dir, name);
    files.push({ name, size: fs.statSync(p).size, sha256: await sha256Of(p) });
  }
  const d = parts.description;
  const manifest: SnapshotManifest = {
    format: SNAPSHOT_FORMAT,
    formatVersion: SNAPSHOT_FORMAT_VERSION,
    nodevmmVersion: d.nodevmmVersion,
    createdAt: new Date().toISOString(),
    arch: d.arch,
    host: d.host,
    ...(d.guestCpuid ? { guestCpuid: d.guestCpuid } : {}),
    config: d.config,
    memory: parts.memory.map((r, i) => ({ file: names[i]!, gpa: r.gpa, size: r.size })),
    components: { hypervisor: HYPERVISOR_FILE, devices: DEVICES_FILE },
    files,
  };
  // Last: a folder without it is an unfinished snapshot.
  writeFileSynced(path.join(dir, MANIFEST_FILE), serializeManifest(manifest));
  return manifest;
}

export interface SnapshotContents {
  dir: string;
  manifest: SnapshotManifest;
  /** Its `arch` is the manifest's. */
  hypervisor: X86PartitionState | Arm64PartitionState;
  devices: Record<string, unknown>;
  /** Each RAM region with the path of its file. */
  memory: Array<{ path: string; gpa: number; size: number }>;
}

function readListed(dir: string, f: SnapshotFile): Buffer {
  const p = path.join(dir, f.name);
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(p);
  } catch (e) {
    throw new SnapshotError(`snapshot file ${p} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { file: p }, { cause: e });
  }
  if (bytes.length !== f.size) throw new SnapshotError(`snapshot file ${p} is ${bytes.length} bytes, the manifest says ${f.size}: it was truncated or replaced`, { file: p });
  if (createHash('sha256').update(bytes).digest('hex') !== f.sha256) throw new SnapshotError(`snapshot file ${p} does not match its sha256 in manifest.json: it was changed or damaged`, { file: p });
  return bytes;
}

/**
 * Read and check the snapshot in `dir`: the manifest (format version and
 * shape), every file's size, the state files' checksums and shapes, and
 * with `verifyMemory` the RAM files' checksums too. Any problem is a
 * SnapshotError naming the file and, where there is one, the field.
 */
export async function readSnapshotFolder(dir: string, opts: { verifyMemory?: boolean } = {}): Promise<SnapshotContents> {
  const mp = path.join(dir, MANIFEST_FILE);
  let raw: Buffer;
  try {
    raw = fs.readFileSync(mp);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new SnapshotError(`${dir} has no ${MANIFEST_FILE}: it is not a nodevmm snapshot, or its writing did not finish`, { file: mp }, { cause: e });
    throw new SnapshotError(`${mp} cannot be read (${code ?? (e as Error).message})`, { file: mp }, { cause: e });
  }
  let manifest: SnapshotManifest;
  try {
    manifest = parseManifest(raw);
  } catch (e) {
    if (e instanceof SnapshotError) e.message = `${dir}/${e.message}`;
    throw e;
  }
  for (const f of manifest.files) {
    const p = path.join(dir, f.name);
    let size: number;
    try {
      size = fs.statSync(p).size;
    } catch (e) {
      throw new SnapshotError(`snapshot file ${p} is missing (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { file: p }, { cause: e });
    }
    if (size !== f.size) throw new SnapshotError(`snapshot file ${p} is ${size} bytes, the manifest says ${f.size}: it was truncated or replaced`, { file: p });
  }
  const listed = (name: string) => manifest.files.find((f) => f.name === name)!;
  const hvFile = path.join(dir, manifest.components.hypervisor);
  const hvState = stateFromJson(readListed(dir, listed(manifest.components.hypervisor)), hvFile);
  const hypervisor = manifest.arch === 'aarch64' ? checkArm64PartitionState(hvState, hvFile) : checkX86PartitionState(hvState, hvFile);
  const devFile = path.join(dir, manifest.components.devices);
  const devices = stateFromJson(readListed(dir, listed(manifest.components.devices)), devFile);
  if (devices === null || typeof devices !== 'object' || Array.isArray(devices)) throw new SnapshotError(`${devFile}: the top level must be an object`, { file: devFile });
  if (opts.verifyMemory) {
    for (const r of manifest.memory) {
      const f = listed(r.file);
      const p = path.join(dir, f.name);
      if ((await sha256Of(p)) !== f.sha256) throw new SnapshotError(`snapshot file ${p} does not match its sha256 in manifest.json: it was changed or damaged`, { file: p });
    }
  }
  return { dir, manifest, hypervisor, devices: devices as Record<string, unknown>, memory: manifest.memory.map((r) => ({ path: path.join(dir, r.file), gpa: r.gpa, size: r.size })) };
}
