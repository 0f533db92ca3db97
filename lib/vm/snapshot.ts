/**
 * Snapshot and restore of a whole VM: what vm.snapshot(dir) saves from a
 * paused machine (the hypervisor's state, every device model's state
 * through Machine.snapshotDevices, the VM's own bits, RAM as sparse files)
 * and what restoreVm(dir) checks before it builds a machine from them (the
 * format, the files, the CPU, the RAM layout, the config with overrides).
 * The format itself is lib/snapshot's; the order of a restore is
 * buildX86Machine's or buildArm64Machine's (partition state, then devices).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NodevmmError, SnapshotError } from '../errors';
import { arm64RamRanges } from '../arch/aarch64/layout';
import { ramRangesFor } from '../arch/x86_64/layout';
import { MIDR_EL1 } from '../hv/arm64-regs';
import type { Arm64PartitionState } from '../hv/arm64-state';
import { openHypervisor } from '../hv/hypervisor';
import type { Arm64Partition, X86Partition } from '../hv/partition';
import type { X86CpuidEntry, X86PartitionState } from '../hv/x86-state';
import { cpuVendor, readSnapshotFolder, writeSnapshotFolder, type SnapshotContents, type SnapshotManifest } from '../snapshot/index';
import { AGENT_PORTS, resolveVmConfig, type AgentPort, type DiskConfig, type ResolvedVmConfig, type VmConfig } from './config';
import type { Machine } from './machine';
import type { OverlayDisk } from './virtio-devices';

/** The VM's own state beside the machine's: what exec needs to know about the guest's agent. */
export interface VmOwnState {
  /** Ports whose exec agent had announced itself: exec on a restored VM does not wait for an announcement that already happened. */
  agentReady: AgentPort[];
}

/** What devices.json holds. */
interface DevicesFile {
  machine: Record<string, unknown>;
  vm: VmOwnState;
}

/** What may differ in a restored VM from the one snapshotted. */
export interface RestoreOverrides {
  /** A name for logs and errors (default: the snapshotted VM's). */
  name?: string;
  /**
   * Per disk, in the snapshot's order: another image (it must hold what the
   * snapshotted disk held: the guest's caches remember it), or `overlay:
   * 'temp'` so this VM's writes go to a private temporary overlay and clones
   * of one snapshot never write the same file. Default: the same image.
   */
  disks?: Array<Partial<Pick<DiskConfig, 'path' | 'overlay'>> | undefined>;
  serialLogBytes?: number;
  dispatchSpinUs?: number;
  /** Hash the RAM files against the manifest too (time proportional to RAM; the state files are always checked). */
  verifyMemory?: boolean;
}

/**
 * Refuse a VM whose state cannot be saved whole, with one sentence: a
 * saved VM that lost part of its state would fail later in ways nobody
 * could trace to the snapshot.
 */
export function refuseUnsaveable(cfg: ResolvedVmConfig, machine: Machine): void {
  if (cfg.vsock) throw new NodevmmError('ERR_SNAPSHOT_UNSUPPORTED', 'a vm with vsock cannot be snapshotted: its connections and queues live in the host kernel (vhost-vsock), which cannot save them');
  if (cfg.shares.length) throw new NodevmmError('ERR_SNAPSHOT_UNSUPPORTED', `a vm with virtio-fs shares cannot be snapshotted: the open files and the FUSE session live in virtiofsd (share ${JSON.stringify(cfg.shares[0]!.tag)})`);
}

/** The config as a VmConfig that resolves back to `r` (JSON-safe: images given as bytes are left out). */
export function snapshotConfig(r: ResolvedVmConfig): VmConfig {
  const c: VmConfig = {
    name: r.name,
    arch: r.arch,
    cmdline: r.cmdline,
    cmdlineDefaults: false,
    memory: r.memory,
    vcpus: r.vcpus,
    boot: r.boot,
    onReset: r.onReset,
    serial: r.serial,
    serialLogBytes: r.serialLogBytes,
    disks: r.disks.map((d) => (d.overlay ? { path: d.path, overlay: d.overlay } : { path: d.path, readonly: !!d.readonly })),
    rng: r.rng,
    virtioConsole: r.virtioConsole,
    net: r.net.map((n) => (n.user ? { user: n.user, mac: n.mac } : { tap: n.tap!, mac: n.mac })),
  };
  for (const k of ['kernel', 'initrd', 'igvm'] as const) if (typeof r[k] === 'string') c[k] = r[k] as string;
  if (r.dispatchSpinUs !== undefined) c.dispatchSpinUs = r.dispatchSpinUs;
  return c;
}

/** This nodevmm's version (package.json), or 'unknown' where the package file is not beside the code. */
function nodevmmVersion(): string {
  for (const up of ['../../..', '../..']) {
    try {
      const v = (JSON.parse(fs.readFileSync(path.resolve(__dirname, up, 'package.json'), 'utf8')) as { name?: string; version?: string });
      if (v.name === 'nodevmm' && typeof v.version === 'string') return v.version;
    } catch {
      // try the next place
    }
  }
  return 'unknown';
}

function hostCpuModel(): string {
  try {
    return /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Save a paused machine into `dir`. Device requests still in flight (disk
 * I/O on the thread pool) are waited for first (quiesceDevices: their
 * completions change guest memory and device state); everything after
 * that is read in one synchronous step, so nothing in the process can
 * change the state between its parts.
 */
export async function saveVmSnapshot(dir: string, cfg: ResolvedVmConfig, machine: Machine, overlays: readonly (OverlayDisk | undefined)[], own: VmOwnState): Promise<SnapshotManifest> {
  refuseUnsaveable(cfg, machine);
  await machine.quiesceDevices();
  // After the drain: a write still in flight may be the first into an overlay.
  overlays.forEach((o, i) => {
    if (o && o.map.allocated > 0) throw new NodevmmError('ERR_SNAPSHOT_UNSUPPORTED', `disk ${i} (${cfg.disks[i]!.path}) has written to its temporary overlay, which a snapshot does not keep: snapshot a vm whose disks write their image, and restore clones with overlay: 'temp'`);
  });
  const devices: DevicesFile = { machine: machine.snapshotDevices(), vm: own };
  const common = { nodevmmVersion: nodevmmVersion(), config: snapshotConfig(cfg) as Record<string, unknown> };
  if (cfg.arch === 'aarch64') {
    const p = machine.partition as Arm64Partition;
    const hypervisor: Arm64PartitionState = p.saveState();
    return writeSnapshotFolder(dir, {
      description: { ...common, arch: 'aarch64', host: { hypervisor: 'kvm', cpuModel: hostCpuModel(), cpuVendor: arm64CpuVendor(hypervisor) } },
      hypervisor,
      devices: devices as unknown as Record<string, unknown>,
      memory: arm64RamRanges(cfg.memory).map((r) => ({ gpa: r.gpa, size: r.size })),
      writeMemory: (fds) => p.writeRamTo(fds),
    });
  }
  const p = machine.partition as X86Partition;
  const hypervisor: X86PartitionState = p.saveState();
  const guestCpuid: X86CpuidEntry[] = hypervisor.vcpus[0]!.cpuid;
  const memory = ramRangesFor(cfg.memory).map((r) => ({ gpa: r.gpa, size: r.size }));
  return writeSnapshotFolder(dir, {
    description: {
      ...common,
      arch: 'x86_64',
      host: { hypervisor: 'kvm', cpuModel: hostCpuModel(), cpuVendor: cpuVendor(guestCpuid) },
      guestCpuid,
    },
    hypervisor,
    devices: devices as unknown as Record<string, unknown>,
    memory,
    writeMemory: (fds) => p.writeRamTo(fds),
  });
}

/** arm64's counterpart of the CPUID vendor: MIDR_EL1 as vCPU 0 saw it (implementer, part number, revision). */
function arm64CpuVendor(s: Arm64PartitionState): string {
  const midr = s.vcpus[0]!.regs.find((r) => r.id === MIDR_EL1)?.value;
  return typeof midr === 'bigint' ? `MIDR_EL1 0x${midr.toString(16)}` : 'unknown';
}

/** A snapshot read, checked and ready to build a machine from. */
export interface LoadedSnapshot {
  config: ResolvedVmConfig;
  contents: SnapshotContents;
  machineDevices: Record<string, unknown>;
  own: VmOwnState;
}

/**
 * Read `dir` and work out the restored VM's config: the snapshotted one
 * with `overrides` applied, resolved again (so every rule of createVm
 * holds), and its RAM layout checked against the snapshot's memory files.
 */
export async function loadVmSnapshot(dir: string, overrides: RestoreOverrides = {}): Promise<LoadedSnapshot> {
  const contents = await readSnapshotFolder(dir, { verifyMemory: !!overrides.verifyMemory });
  const m = contents.manifest;
  // A guest's state is its architecture's: registers, interrupt controller and kernel cannot move to another.
  const here = openHypervisor().arch;
  if (m.arch !== here) throw new SnapshotError(`${path.join(dir, 'manifest.json')}: the snapshot is of an ${m.arch} vm and this host runs ${here} vms: restore it on an ${m.arch} host`, { file: path.join(dir, 'manifest.json'), field: 'arch' });
  const stored = m.config as VmConfig;
  const cfg: VmConfig = { ...stored };
  // The guest's memory holds its kernel: a restored VM loads no image. The config check wants one named.
  if (cfg.kernel === undefined && cfg.igvm === undefined) cfg.kernel = path.join(dir, 'manifest.json');
  if (overrides.name !== undefined) cfg.name = overrides.name;
  if (overrides.serialLogBytes !== undefined) cfg.serialLogBytes = overrides.serialLogBytes;
  if (overrides.dispatchSpinUs !== undefined) cfg.dispatchSpinUs = overrides.dispatchSpinUs;
  if (overrides.disks !== undefined) {
    const disks = stored.disks ?? [];
    if (!Array.isArray(overrides.disks) || overrides.disks.length > disks.length) {
      throw new NodevmmError('ERR_INVALID_ARG', `restore overrides: disks has ${Array.isArray(overrides.disks) ? overrides.disks.length : 'no'} entries and the snapshot ${disks.length} disks: a restored vm has the snapshot's disks`);
    }
    cfg.disks = disks.map((d, i) => {
      const o = overrides.disks![i];
      if (!o) return d;
      const out: DiskConfig = { path: o.path ?? d.path };
      if (o.overlay === 'temp') out.overlay = 'temp';
      else if (o.overlay !== undefined) throw new NodevmmError('ERR_INVALID_ARG', `restore overrides: disks[${i}].overlay ${JSON.stringify(o.overlay)} must be 'temp'`);
      else if (d.readonly) out.readonly = true;
      return out;
    });
  }
  let config: ResolvedVmConfig;
  try {
    config = resolveVmConfig(cfg);
  } catch (e) {
    throw new SnapshotError(`${path.join(dir, 'manifest.json')}: the snapshot's config does not resolve here: ${(e as Error).message}`, { file: path.join(dir, 'manifest.json'), field: 'config' }, { cause: e });
  }
  if (config.vsock || config.shares.length) throw new SnapshotError(`${dir}: the snapshot's config has vsock or shares, which snapshots do not save`, { file: path.join(dir, 'manifest.json'), field: 'config' });
  const want = config.arch === 'aarch64' ? arm64RamRanges(config.memory) : ramRangesFor(config.memory);
  const have = contents.memory;
  if (want.length !== have.length || want.some((r, i) => r.gpa !== have[i]!.gpa || r.size !== have[i]!.size)) {
    throw new SnapshotError(`${path.join(dir, 'manifest.json')}: memory regions do not match the ${config.memory} bytes of RAM the config gives`, { file: path.join(dir, 'manifest.json'), field: 'memory' });
  }
  if (contents.hypervisor.vcpus.length !== config.vcpus) {
    throw new SnapshotError(`${path.join(dir, 'hv.json')}: holds ${contents.hypervisor.vcpus.length} vcpus and the config ${config.vcpus}`, { file: path.join(dir, 'hv.json'), field: 'vcpus' });
  }
  const devFile = path.join(dir, m.components.devices);
  const d = contents.devices as Partial<DevicesFile>;
  if (!d.machine || typeof d.machine !== 'object' || Array.isArray(d.machine)) throw new SnapshotError(`${devFile}: machine must be an object`, { file: devFile, field: 'machine' });
  const ready = d.vm?.agentReady;
  if (!Array.isArray(ready) || ready.some((p) => !AGENT_PORTS.includes(p as AgentPort))) throw new SnapshotError(`${devFile}: vm.agentReady must be a list of ports from ${AGENT_PORTS.join(', ')}`, { file: devFile, field: 'vm.agentReady' });
  return { config, contents, machineDevices: d.machine, own: { agentReady: ready } };
}
