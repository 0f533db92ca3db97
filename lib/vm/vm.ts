/**
 * The VM users script: createVm(config) validates everything up front and
 * returns a Vm with start/pause/resume/reset/shutdown/kill, waitForStop(),
 * serial ports as Duplex streams with expect(), exec() through a shell on a
 * serial port, guest memory access, events, and async disposal. The same Vm
 * runs x86_64 and arm64 guests (the host's architecture): an architecture's
 * recipe (buildX86Machine, buildArm64Machine) builds a Machine, and
 * everything else here is shared.
 *
 * A guest reboot with onReset 'restart' (and a host reset()) rebuilds the
 * machine from the same config and images, as a power cycle would; serial
 * ports and their logs carry over.
 */
import { EventEmitter } from 'node:events';
import { closeSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, FormatError, NodevmmError, VmStateError } from '../errors';
import { fileError } from '../util/file-errors';
import type { GuestMemory } from '../memory/guest-memory';
import type { Partition, PartitionIo, PartitionStats, VcpuStop } from '../hv/partition';
import { agentPortInCmdline, agentTty, COM_PORTS, resolveVmConfig, type AgentPort, type ComPort, type ResolvedVmConfig, type VmConfig } from './config';
import type { ExecOptions, ExecResult } from './exec';
import { elfKernelFile, readImageFile } from './image-files';
import type { KernelFile } from '../loader/kernel';
import { assertAllowed, type StopReason, type VmState } from './lifecycle';
import { SerialPort, type ExpectOptions } from './serial-port';
import { buildX86Machine } from './x86-machine';
import type { Machine } from './machine';
import type { PlannedIgvm } from './igvm-boot';
import { openDisk, openOverlayDisk, type OverlayDisk } from './virtio-devices';
import type { TapBackend } from '../devices/tap';
import type { PasstBackend } from '../devices/passt';
import type { VirtiofsShare } from './virtiofs';
import type { VirtioNetStats } from '../devices/virtio/net';
import type { VsockServer, VsockStream } from './vsock-stream';
import type { X86VcpuInitState } from '../hv/x86-state';
import type { X86Partition } from '../hv/partition';
import type { X86AcpiTables } from '../acpi/x86-tables';
import type { SnapshotManifest } from '../snapshot/manifest';
import type { LoadedSnapshot, RestoreOverrides } from './snapshot';

// Networking, vsock, exec and snapshots load on first use, not with every VM: a VM that uses none of them
// (the CLI's tiny guest, a boot) starts without compiling and running them (CLI start-up time, docs/benchmarks.md).
const vsockStreams = () => require('./vsock-stream') as typeof import('./vsock-stream');
const execModule = () => require('./exec') as typeof import('./exec');
const snapshots = () => require('./snapshot') as typeof import('./snapshot');

export interface VmEvents {
  state: [VmState];
  stop: [StopReason];
  serial: [ComPort, Buffer];
  reset: [];
}

/** Loads something other than a Linux kernel (IGVM) into a fresh x86 partition; returns the BSP state. x86_64 only. */
export type CustomLoader = (partition: X86Partition, config: ResolvedVmConfig, acpi: X86AcpiTables) => X86VcpuInitState;

/**
 * An x86_64 kernel given as a path: an ELF stays in its file (segments read straight into guest
 * RAM at each boot, elfKernelFile); any other format is read whole.
 */
async function readKernel(arch: ResolvedVmConfig['arch'], v: string | Uint8Array | undefined): Promise<Uint8Array | KernelFile | undefined> {
  if (arch === 'x86_64' && typeof v === 'string') {
    const file = elfKernelFile(v);
    if (file) return file;
  }
  return readImage('kernel', v);
}

async function readImage(what: string, v: string | Uint8Array | undefined): Promise<Uint8Array | undefined> {
  if (v === undefined || v instanceof Uint8Array) return v;
  try {
    return await readImageFile(v);
  } catch (e) {
    throw fileError(what, v, e);
  }
}

export class Vm extends EventEmitter<VmEvents> {
  readonly config: ResolvedVmConfig;
  private machine: Machine | undefined;
  private _state: VmState = 'created';
  private stopReason: StopReason | undefined;
  private stopWaiters: Array<(r: StopReason) => void> = [];
  private readonly ports: Partial<Record<ComPort, SerialPort>> = {};
  private readonly hvc: SerialPort | undefined;
  /** Kept for guest reboots (a restart loads them again); dropped when the VM stops, since a stopped VM never boots again. */
  private images: { kernel?: Uint8Array | KernelFile | undefined; initrd?: Uint8Array | undefined };
  private readonly customLoader: CustomLoader | undefined;
  /**
   * The backends of config.net (TAPs, passt processes): opened at start, kept
   * across guest reboots (a non-persistent TAP disappears with its fd; passt
   * keeps its DHCP lease and forwards), closed at stop.
   */
  private taps: Array<TapBackend | PasstBackend> = [];
  /**
   * The virtiofsd of each config.shares entry with its vhost-user connection:
   * started at start, kept across guest reboots (a virtiofsd serves one
   * connection for its life), stopped at stop.
   */
  private shares: VirtiofsShare[] = [];
  /** Overlays of disks with one (`overlay: 'temp'` or a kept overlay's path), per disk index: opened at start, kept across guest reboots (they are the disk's content), closed at stop. */
  private overlays: Array<OverlayDisk | undefined> = [];
  /** Per port: resolves once this boot's exec agent said it is ready. */
  private agentReady = new Map<AgentPort, Promise<unknown>>();
  /** Open host-side vsock connections and listeners: closed when the VM stops. */
  private readonly vsockHandles = new Set<VsockStream | VsockServer>();
  /** Where the images came from, for error messages. */
  paths: { kernel?: string; initrd?: string; igvm?: string } = {};
  /** Boots since creation (1 after start, +1 per restart). */
  boots = 0;
  /** Build phase timings of the last boot, in ms. */
  timings: Array<[string, number]> = [];
  /** The snapshot folder this VM was restored from (restoreVm), else undefined. */
  restoredFrom: string | undefined;
  /** The snapshot start() builds the machine from instead of booting; used once. */
  private restoring: LoadedSnapshot | undefined;

  /** Use createVm() or restoreVm(). */
  constructor(config: ResolvedVmConfig, images: { kernel?: Uint8Array | KernelFile | undefined; initrd?: Uint8Array | undefined }, customLoader?: CustomLoader, restoring?: LoadedSnapshot) {
    super();
    this.config = config;
    this.restoring = restoring;
    this.restoredFrom = restoring?.contents.dir;
    this.images = images;
    this.customLoader = customLoader;
    for (const c of COM_PORTS) {
      if (!config.serial[c]) continue;
      const port = new SerialPort(c, config.serialLogBytes);
      port.on('output', (b: Buffer) => this.emit('serial', c, b));
      this.ports[c] = port;
    }
    if (config.virtioConsole) this.hvc = new SerialPort('hvc0', config.serialLogBytes);
  }

  /** The virtio console (the guest's hvc0) as a Duplex with a log, like serial(). */
  virtioConsole(): SerialPort {
    if (!this.hvc) throw new NodevmmError('ERR_INVALID_ARG', 'the virtio console is not configured on this vm (virtioConsole: true)');
    return this.hvc;
  }

  /**
   * Connect to `port` on the guest over virtio-vsock (the guest must listen
   * there); resolves with a Duplex once the guest accepted. Needs `vsock` in
   * the config and a running VM. The stream is destroyed when the VM stops.
   */
  async vsockConnect(port: number): Promise<VsockStream> {
    const cid = this.vsockCid('vsockConnect');
    if (!Number.isInteger(port) || port < 0 || port > 0xffff_fffe) throw new NodevmmError('ERR_INVALID_ARG', `vsockConnect: port ${port} must be an integer from 0 to 4294967294`);
    if (this._state !== 'running') throw new VmStateError('connect over vsock to', this._state);
    const s = await vsockStreams().VsockStream.connect(cid, port);
    // The state may have changed while we awaited the guest.
    if (this.state !== 'running' && this.state !== 'paused') {
      s.destroy();
      throw new NodevmmError('ERR_VM_STATE', `vsockConnect: the vm stopped while connecting to port ${port}`);
    }
    this.track(s);
    return s;
  }

  /**
   * Listen on host vsock `port` for connections from this guest (it connects
   * to cid 2, VMADDR_CID_HOST); connections from other VMs are refused.
   * Closed when the VM stops.
   */
  vsockListen(port: number): VsockServer {
    const cid = this.vsockCid('vsockListen');
    if (!Number.isInteger(port) || port < 0 || port > 0xffff_fffe) throw new NodevmmError('ERR_INVALID_ARG', `vsockListen: port ${port} must be an integer from 0 to 4294967294`);
    const server = new (vsockStreams().VsockServer)(port);
    server.on('connection', (c) => {
      // One host port space serves every VM: accept only our guest.
      if (c.remoteCid !== cid) c.destroy();
      else this.track(c);
    });
    this.track(server);
    return server;
  }

  private vsockCid(what: string): number {
    const cid = this.config.vsock?.cid;
    if (cid === undefined) throw new NodevmmError('ERR_INVALID_ARG', `${what}: vsock is not configured on this vm (vsock: { cid })`);
    return cid;
  }

  private track(h: VsockStream | VsockServer): void {
    this.vsockHandles.add(h);
    if (h instanceof vsockStreams().VsockStream) h.once('close', () => this.vsockHandles.delete(h));
  }

  get state(): VmState {
    return this._state;
  }

  private setState(s: VmState): void {
    if (this._state === s) return;
    this._state = s;
    this.emit('state', s);
  }

  /** Guest physical memory of the running machine (readable while paused; while running at your own risk). */
  get memory(): GuestMemory {
    if (!this.machine) throw new NodevmmError('ERR_VM_STATE', `the vm has no guest memory while ${this._state}`);
    return this.machine.partition.memory;
  }

  /**
   * The underlying partition (vCPU registers, buses) for advanced use: an
   * X86Partition or an Arm64Partition, as `config.arch` says.
   */
  get partition(): Partition & PartitionIo {
    if (!this.machine) throw new NodevmmError('ERR_VM_STATE', `the vm has no partition while ${this._state}`);
    return this.machine.partition;
  }

  /** Counters of each virtio-net NIC of the running machine, in config.net order. */
  netStats(): VirtioNetStats[] {
    if (!this.machine) throw new NodevmmError('ERR_VM_STATE', `the vm has no NICs while ${this._state}`);
    return this.machine.virtio.nics.map((n) => ({ ...n.stats }));
  }

  /** Serial port `n` (1-4 or 'com1'...; arm64 has com1 and com2, the guest's ttyAMA0 and ttyAMA1). */
  serial(n: 1 | 2 | 3 | 4 | ComPort = 1): SerialPort {
    const name = typeof n === 'number' ? (`com${n}` as ComPort) : n;
    const p = this.ports[name];
    if (!p) throw new NodevmmError('ERR_INVALID_ARG', `serial port ${name} is not configured on this vm`);
    return p;
  }

  /** Open every configured TAP, or none: a failure closes those already open. */
  private openTaps(): void {
    if (this.taps.length === this.config.net.length) return;
    try {
      for (const n of this.config.net) {
        if (n.tap !== undefined) {
          const { tapHostOps } = require('../hv/host-ops') as typeof import('../hv/host-ops');
          this.taps.push((require('../devices/tap') as typeof import('../devices/tap')).TapBackend.open(n.tap, tapHostOps()));
        }
        else {
          const p = (require('../devices/passt') as typeof import('../devices/passt')).PasstBackend.open({ forward: n.user.forward });
          // passt gone means the NIC is gone: the VM stops rather than run on without its network.
          p.onFailure = (message) => setImmediate(() => this.finish({ reason: 'host-error', message: `user networking failed: ${message}` }));
          this.taps.push(p);
        }
      }
    } catch (e) {
      this.closeTaps();
      throw e;
    }
  }

  /** Start every share's virtiofsd, or none: a failure stops those already started. */
  private async openShares(): Promise<void> {
    if (this.shares.length === this.config.shares.length) return;
    // The virtio-fs modules load when a VM has a share (CLI start-up time).
    const { VirtiofsShare } = require('./virtiofs') as typeof import('./virtiofs');
    try {
      for (const spec of this.config.shares) {
        const share = await VirtiofsShare.open(spec);
        this.shares.push(share);
        // The daemon gone means the guest's files are gone: stop rather than let its file system hang.
        share.onFailure = (message) => setImmediate(() => this.finish({ reason: 'host-error', message: `virtio-fs share ${JSON.stringify(spec.tag)} failed: ${message}` }));
        if (this._state !== 'starting') throw new NodevmmError('ERR_VM_STATE', `the vm was ${this._state} while its shares started`);
      }
    } catch (e) {
      this.closeShares();
      throw e;
    }
  }

  private closeShares(): void {
    for (const s of this.shares) void s.close();
    this.shares = [];
  }

  private closeTaps(): void {
    for (const t of this.taps) t.close();
    this.taps = [];
  }

  /** Open the overlay of every disk with one (`overlay: 'temp'` or a kept overlay's path), or none. */
  private openOverlays(): void {
    if (this.overlays.length) return;
    try {
      for (const d of this.config.disks) this.overlays.push(d.overlay !== undefined ? openOverlayDisk(d.path, d, d.overlay) : undefined);
    } catch (e) {
      for (const o of this.overlays) o?.close();
      this.overlays = [];
      throw e;
    }
  }

  private build(): void {
    this.openTaps();
    this.openOverlays();
    const images = this.images.kernel ? { kernel: this.images.kernel, initrd: this.images.initrd } : undefined;
    const hooks = {
      serial: this.ports,
      virtioConsole: this.hvc,
      netBackends: this.taps,
      shareBackends: this.shares.map((s) => s.frontend),
      overlays: this.overlays,
      onPowerOff: () => setImmediate(() => this.finish({ reason: 'poweroff', message: 'the guest powered off' })),
      onReset: () => setImmediate(() => this.guestReset()),
    };
    let m: Machine;
    if (this.restoring) {
      m = this.buildRestored(this.restoring, hooks);
    } else if (this.config.arch === 'aarch64') {
      // Loaded here so x86 hosts never compile the arm64 recipe (CLI start-up time).
      const { buildArm64Machine } = require('./arm64-machine') as typeof import('./arm64-machine');
      if (!images) throw new NodevmmError('ERR_CONFIG', 'an arm64 vm boots a kernel Image: give kernel');
      m = buildArm64Machine(this.config, images, hooks);
    } else {
      const loader = this.customLoader ? (p: X86Partition, acpi: X86AcpiTables) => this.customLoader!(p, this.config, acpi) : undefined;
      m = buildX86Machine(this.config, images, hooks, loader);
    }
    // Only this machine's stops count: a stop a replaced machine reports while it is torn down (a
    // reset handled in the middle of its event batch) must not end the machine that replaced it.
    m.partition.on('vcpu-stop', (s: VcpuStop) => {
      if (this.machine === m) this.onVcpuStop(s);
    });
    this.machine = m;
    this.agentReady.clear();
    this.timings = m.timings;
  }

  /** The machine of a snapshot: hypervisor state and RAM in buildX86Machine or buildArm64Machine, then every device model's state. */
  private buildRestored(snap: LoadedSnapshot, hooks: Parameters<typeof buildX86Machine>[2]): Machine {
    const fds: number[] = [];
    let m: Machine | undefined;
    try {
      for (const r of snap.contents.memory) fds.push(openSync(r.path, 'r'));
      const hv = snap.contents.hypervisor;
      if (hv.arch === 'aarch64') {
        const { buildArm64Machine } = require('./arm64-machine') as typeof import('./arm64-machine');
        m = buildArm64Machine(this.config, undefined, hooks, { ramFds: fds, hypervisor: hv });
      } else {
        m = buildX86Machine(this.config, undefined, hooks, undefined, { ramFds: fds, hypervisor: hv, guestCpuid: snap.contents.manifest.guestCpuid });
      }
      m.restoreDevices(snap.machineDevices);
      return m;
    } catch (e) {
      m?.dispose();
      throw e;
    } finally {
      // The mappings hold the files now.
      for (const fd of fds) closeSync(fd);
    }
  }

  /**
   * Save this paused VM into `dir` (a new or empty folder): every vCPU, the
   * interrupt controllers, PIT and clock, every device model, and the RAM as
   * sparse files. Disk requests in flight are waited for first. Refused
   * (one sentence) for a VM that is not paused, one with vsock or virtio-fs
   * shares (their state lives outside nodevmm), and one whose temporary
   * disk overlay took writes. Resolves with the manifest. The VM stays
   * paused; resume() it, or restore the snapshot with restoreVm(dir).
   */
  async snapshot(dir: string): Promise<SnapshotManifest> {
    if (this._state !== 'paused') throw new VmStateError('snapshot', this._state);
    const m = this.machine!;
    const { AGENT_READY } = execModule();
    const agentReady: AgentPort[] = (Object.keys(this.ports) as ComPort[]).filter((c) => this.ports[c]!.log().includes(AGENT_READY));
    if (this.hvc?.log().includes(AGENT_READY)) agentReady.push('hvc0');
    return snapshots().saveVmSnapshot(dir, this.config, m, this.overlays, { agentReady });
  }

  /**
   * A new VM that continues from where this paused one is, independent of
   * it: a snapshot into a temporary folder restored at once (the folder is
   * removed; the clone's RAM mapping keeps the pages). Disks: as restoreVm's
   * `overrides.disks` says; a writable disk the original still holds is
   * refused by its image lock, so give clones `overlay: 'temp'` on a VM
   * whose disk images are the clones' shared base.
   */
  async clone(overrides: RestoreOverrides = {}): Promise<Vm> {
    const dir = mkdtempSync(join(tmpdir(), 'nodevmm-clone-'));
    try {
      await this.snapshot(join(dir, 'snap'));
      return await restoreVm(join(dir, 'snap'), overrides);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** Build a fresh machine from the config and set its vCPUs running. */
  private bootMachine(): void {
    this.build();
    this.runMachine();
  }

  private runMachine(): void {
    const restored = this.restoring;
    this.restoring = undefined;
    // The agent announced itself before the snapshot: exec does not wait for it again.
    if (restored) for (const c of restored.own.agentReady) if (c === 'hvc0' ? this.hvc : this.ports[c]) this.agentReady.set(c, Promise.resolve());
    this.boots++;
    this.machine!.partition.start();
    this.setState('running');
  }

  /** Build the machine and run it. Resolves once the vCPUs are running. */
  async start(): Promise<void> {
    assertAllowed('start', this._state);
    this.setState('starting');
    try {
      await this.openShares();
      this.build();
      // Guest RAM may still be being mapped (KVM's memory slots wait for the kernel): other
      // VMs' work runs meanwhile, instead of this thread waiting in the vCPUs' start.
      await this.machine!.partition.ramReady();
      if (this._state !== 'starting') throw new NodevmmError('ERR_VM_STATE', `the vm was ${this._state} while its memory was mapped`);
      this.runMachine();
    } catch (e) {
      if (e instanceof FormatError) {
        // Name the file the bytes came from: "kernel /boot/x: ..." beats "kernel: ...".
        const path = e.format === 'igvm' ? this.paths.igvm : e.format === 'initrd' ? this.paths.initrd : this.paths.kernel;
        if (path) e.withFile(path);
      }
      this.finish({ reason: 'host-error', message: (e as Error).message, error: e as Error });
      throw e;
    }
  }

  async pause(): Promise<void> {
    assertAllowed('pause', this._state);
    await this.machine!.partition.pause();
    // Output the guest wrote before the pause is in log() once pause() resolves (the
    // UARTs' batching sinks deliver on a later turn otherwise).
    this.machine?.flush();
    if (this._state === 'running') this.setState('paused');
  }

  async resume(): Promise<void> {
    assertAllowed('resume', this._state);
    this.machine!.partition.resume();
    this.setState('running');
  }

  /**
   * One line on where a running or paused guest is, for a test or script
   * that gave up waiting on it: each vCPU's registers (x86: RIP, RFLAGS, MP
   * state, LAPIC; arm64: PC, SP, PSTATE), the serial devices and the exit counters. Pauses a running VM to read the registers (it stays
   * paused). Best effort: fields KVM will not report are left out.
   */
  async diagnose(): Promise<string> {
    const m = this.machine;
    if (!m || (this._state !== 'running' && this._state !== 'paused')) return `vm ${this._state}`;
    let note = '';
    if (this._state === 'running') {
      // A vCPU that waits for an answer from JS outside KVM_RUN never acknowledges a pause;
      // that is itself the finding, so do not wait for it forever.
      const paused = await Promise.race([this.pause().then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000).unref())]);
      if (!paused) note = 'not all vcpus paused within 10 s; ';
    }
    const p = m.partition;
    const vcpus = m.describeVcpus();
    const uarts = m.describeSerial();
    const irqs = m.describeInterrupts?.() ?? [];
    const st = p.stats();
    return `${note}${vcpus.join('; ')}; ${uarts.join(', ')}; ${irqs.map((l) => `${l}; `).join('')}exits to js ${st.exitsToJs}, native ${st.exitsNative}, posted ${st.exitsPosted}; notifications ${st.notifications}, rescues ${st.rescues}`;
  }

  /**
   * The exit path's counters of this boot so far (exits answered in JS, natively and posted,
   * JS wakeups): what `nodevmm run --trace` prints. undefined before start.
   */
  exitStats(): PartitionStats | undefined {
    return this.machine?.partition.stats();
  }

  /**
   * Which device ranges cost exits to JS so far in this boot, busiest first
   * (`name@start: count`), for finding what keeps the event loop busy;
   * accesses answered on the vCPU threads are not counted. Empty before start.
   */
  jsExitsByDevice(): Array<{ name: string; start: number; accesses: number }> {
    const p = this.machine?.partition;
    if (!p) return [];
    return [...p.pio.list(), ...p.mmio.list()]
      .filter((r) => r.jsAccesses > 0)
      .map((r) => ({ name: r.name, start: r.start, accesses: r.jsAccesses }))
      .sort((a, b) => b.accesses - a.accesses);
  }

  /** Host-initiated reset: a power cycle into the same kernel and config. */
  async reset(): Promise<void> {
    assertAllowed('reset', this._state);
    this.restart();
  }

  /**
   * Press the guest's power button (x86: the ACPI power button; arm64: the
   * power key on the PL061 GPIO, a gpio-keys KEY_POWER): a guest that
   * listens shuts down cleanly. Resolves with the stop reason.
   */
  async shutdown(opts: { timeoutMs?: number } = {}): Promise<StopReason> {
    assertAllowed('shutdown', this._state);
    if (this._state === 'paused') await this.resume();
    this.machine!.pressPowerButton();
    if (opts.timeoutMs === undefined) return this.waitForStop();
    const timeoutMs = opts.timeoutMs;
    return Promise.race([
      this.waitForStop(),
      new Promise<StopReason>((_, reject) =>
        setTimeout(() => reject(new NodevmmError('ERR_SHUTDOWN_TIMEOUT', `the guest did not shut down within ${timeoutMs} ms of the power button`)), timeoutMs).unref(),
      ),
    ]);
  }

  /** Stop at once, no guest involvement. */
  async kill(): Promise<StopReason> {
    if (this._state === 'stopped') return this.stopReason!;
    assertAllowed('kill', this._state);
    this.finish({ reason: 'killed', message: 'the vm was killed' });
    return this.stopReason!;
  }

  /** Resolves with the stop reason once the VM has stopped (at once if it already has). */
  waitForStop(): Promise<StopReason> {
    if (this.stopReason) return Promise.resolve(this.stopReason);
    return new Promise((resolve) => this.stopWaiters.push(resolve));
  }

  expect(pattern: RegExp | string, opts?: ExpectOptions & { port?: ComPort }): Promise<RegExpExecArray> {
    return this.serial(opts?.port ?? 'com1').expect(pattern, opts);
  }

  /**
   * Run a shell command in the guest: over vsock when the config names the
   * guest agent's port (vsock.agentPort) and no port is asked for, else
   * through a shell on `opts.port`: a serial port or hvc0 (the virtio
   * console). Without one, the port the kernel command line gives the test
   * initramfs's agent (`nodevmm.agent=hvc0`, `=ttyS1`, ...), else com2.
   */
  exec(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    assertAllowed('exec', this._state);
    const agentPort = this.config.vsock?.agentPort;
    if (agentPort !== undefined && opts.port === undefined) return (require('./vsock-exec') as typeof import('./vsock-exec')).execOverVsock(() => this.vsockConnect(agentPort), agentPort, command, opts.timeoutMs);
    const name = opts.port ?? agentPortInCmdline(this.config.arch, this.config.cmdline, this.config.virtioConsole) ?? 'com2';
    const port = name === 'hvc0' ? this.virtioConsole() : this.serial(name);
    // Wait (once per boot) for the agent's ready line before the first command.
    let ready = this.agentReady.get(name);
    if (!ready) {
      const timeoutMs = opts.timeoutMs ?? 30_000;
      ready = port.expect(execModule().AGENT_READY, { timeoutMs }).catch((e: Error) => {
        this.agentReady.delete(name);
        throw new NodevmmError('ERR_EXEC_NO_AGENT', `exec: no agent answered on ${name} within ${timeoutMs} ms (boot the guest with an agent shell on that port, e.g. the test initramfs with nodevmm.agent=${agentTty(this.config.arch, name)})`, { cause: e });
      });
      this.agentReady.set(name, ready);
    }
    return execModule().execOnSerial(port, command, opts, ready);
  }

  private guestReset(): void {
    if (this._state === 'stopped' || this._state === 'stopping') return;
    if (this.config.onReset === 'restart') this.restart();
    else this.finish({ reason: 'reset', message: 'the guest reset the machine' });
  }

  private restart(): void {
    if (this.restoredFrom !== undefined && !this.images.kernel) {
      // Its kernel came in the snapshot's RAM; there is no image to boot again.
      this.finish({ reason: 'reset', message: 'the guest reset the machine (a restored vm does not reboot: it has no kernel image)' });
      return;
    }
    const old = this.machine;
    this.machine = undefined;
    old?.dispose();
    this.emit('reset');
    try {
      this.bootMachine();
    } catch (e) {
      this.finish({ reason: 'host-error', message: `restart failed: ${(e as Error).message}`, error: e as Error });
    }
  }

  private onVcpuStop(s: VcpuStop): void {
    if (this._state === 'stopped' || this._state === 'stopping') return;
    const base = { message: s.message, vcpu: s.vcpu } as StopReason;
    if (s.rip !== undefined) base.rip = s.rip;
    if (s.instructionBytes) base.instructionBytes = s.instructionBytes;
    if (s.error) base.error = s.error;
    switch (s.kind) {
      case 'triple-fault':
        base.reason = 'triple-fault';
        break;
      case 'host-error':
        base.reason = 'host-error';
        break;
      case 'hlt':
        base.reason = 'halt';
        break;
      case 'system-event':
        // After the partition's event dispatch, as x86's reset hooks do: a restart destroys this
        // partition, and should not do so inside its own event callback.
        if (s.systemEvent === 'reset') return void setImmediate(() => this.guestReset());
        base.reason = s.systemEvent === 'shutdown' ? 'poweroff' : 'internal-error';
        break;
      default:
        base.reason = 'internal-error';
    }
    this.finish(base);
  }

  private finish(reason: StopReason): void {
    if (this._state === 'stopped') return;
    this.setState('stopping');
    const m = this.machine;
    this.machine = undefined;
    try {
      for (const h of this.vsockHandles) h instanceof vsockStreams().VsockStream ? h.destroy() : h.close();
      this.vsockHandles.clear();
      m?.dispose();
    } finally {
      this.closeTaps();
      // After the devices stopped their rings (dispose above): virtiofsd exits on the hang-up.
      this.closeShares();
      // Requests still on the thread pool use the overlay fds: close after them.
      const overlays = this.overlays;
      this.overlays = [];
      if (overlays.length) void (m ? m.virtio.disksIdle() : Promise.resolve()).then(() => overlays.forEach((o) => o?.close()));
      this.images = {};
      this.stopReason = reason;
      this.setState('stopped');
      for (const p of [...Object.values(this.ports), ...(this.hvc ? [this.hvc] : [])]) {
        p.emit('vm-stopped', `${reason.reason}: ${reason.message}`);
        p.push(null);
      }
      this.emit('stop', reason);
      const w = this.stopWaiters;
      this.stopWaiters = [];
      for (const f of w) f(reason);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this._state !== 'stopped') await this.kill();
  }
}

/**
 * Validate `config`, read the images, and return a VM ready to start().
 * Every configuration problem is reported at once in a ConfigError.
 */
export async function createVm(config: VmConfig, customLoader?: CustomLoader): Promise<Vm> {
  const resolved = resolveVmConfig(config);
  if (customLoader && resolved.arch !== 'x86_64') throw new NodevmmError('ERR_CONFIG', `createVm: a custom loader loads x86_64 partitions; an ${resolved.arch} vm boots a kernel Image (config.kernel)`);
  const [kernel, initrd, igvm] = await Promise.all([readKernel(resolved.arch, resolved.kernel), readImage('initrd', resolved.initrd), readImage('igvm', resolved.igvm)]);
  if (igvm) resolved.igvm = igvm;
  // Open (and close) every disk now, so a missing or unwritable image fails createVm, not start().
  // (An overlay disk's base is only read.)
  for (const d of resolved.disks) closeSync(openDisk(d.path, !!d.readonly || d.overlay !== undefined).fd);
  checkSharesExist(resolved);
  let planned: PlannedIgvm | undefined;
  // The IGVM modules (~130 KB) load when an IGVM file boots, not with every VM (CLI start-up time, docs/benchmarks.md).
  const igvmBoot = igvm ? (require('./igvm-boot') as typeof import('./igvm-boot')) : undefined;
  if (igvm && igvmBoot) {
    // A bad IGVM file (or a relocation base it does not allow) fails createVm, not start().
    try {
      planned = igvmBoot.planIgvmForConfig(igvm, resolved);
    } catch (e) {
      // Name the file: "image.igvm: igvm: header 1 (RELOCATABLE_REGION): ..." for format errors and refusals alike.
      if (typeof config.igvm === 'string') {
        if (e instanceof FormatError) e.withFile(config.igvm);
        else if (e instanceof NodevmmError) e.message = `${config.igvm}: ${e.message}`;
      }
      throw e;
    }
  }
  // An IGVM image boots through the IGVM loader, with the plan made above, unless the caller brings its own.
  const vm = new Vm(resolved, { kernel, initrd }, customLoader ?? (planned && igvmBoot ? igvmBoot.igvmLoader(planned) : undefined));
  for (const k of ['kernel', 'initrd', 'igvm'] as const) {
    const v = config[k];
    if (typeof v === 'string') vm.paths[k] = v;
  }
  track(vm);
  return vm;
}

/** A share's directory must exist at creation (its virtiofsd starts with the VM). */
function checkSharesExist(resolved: ResolvedVmConfig): void {
  for (const [i, s] of resolved.shares.entries()) {
    let isDir = false;
    try {
      isDir = statSync(s.path).isDirectory();
    } catch {
      // reported below
    }
    if (!isDir) throw new ConfigError([{ path: `shares[${i}].path`, message: `${s.path} is not a directory (share ${JSON.stringify(s.tag)})` }]);
  }
}

function track(vm: Vm): void {
  const ref = new WeakRef(vm);
  liveVms.add(ref);
  vm.once('stop', () => liveVms.delete(ref));
}

/**
 * A running VM that continues from the snapshot in `dir` (vm.snapshot):
 * the same vCPU, interrupt controller, clock and device state, its RAM the
 * snapshot's files mapped copy-on-write (restoring costs the same for any
 * RAM size, and any number of VMs restored from one snapshot share the
 * pages none of them wrote). Each restore is an independent VM. Disks are
 * the snapshot's images unless `overrides.disks` names others or a
 * temporary overlay. A snapshot of another format version, from a host
 * whose CPU lacks a feature the guest saw, or with a missing, truncated or
 * changed file is refused with a SnapshotError naming it.
 */
export async function restoreVm(dir: string, overrides: RestoreOverrides = {}): Promise<Vm> {
  const snap = await snapshots().loadVmSnapshot(dir, overrides);
  const resolved = snap.config;
  // As createVm: a missing or locked image fails here, not half-way through the build.
  for (const d of resolved.disks) closeSync(openDisk(d.path, !!d.readonly || d.overlay === 'temp').fd);
  const vm = new Vm(resolved, {}, undefined, snap);
  track(vm);
  await vm.start();
  return vm;
}

/** VMs not yet stopped; killed on process exit so no vCPU thread outlives its VM. A VM leaves the set when it stops. */
const liveVms = new Set<WeakRef<Vm>>();
process.once('exit', () => {
  for (const r of liveVms) {
    const vm = r.deref();
    if (vm && vm.state !== 'stopped') void vm.kill();
  }
});
