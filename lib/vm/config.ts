/**
 * VM configuration: the public shape, its defaults in one place, and a
 * validator that reports every problem at once (ConfigError.issues), each
 * naming the field and the value. Nothing here reads files or touches KVM.
 */
import { isIP } from 'node:net';
import { ConfigError, type ConfigIssue } from '../errors';
import { GiB, MiB } from '../util/bytes';

export type BootProtocol = 'auto' | 'linux64' | 'pvh';
export type ComPort = 'com1' | 'com2' | 'com3' | 'com4';
export const COM_PORTS: readonly ComPort[] = ['com1', 'com2', 'com3', 'com4'];
/** Where a shell for exec() can listen: a serial port, or the virtio console (the guest's hvc0, `virtioConsole: true`). */
export type AgentPort = ComPort | 'hvc0';
export const AGENT_PORTS: readonly AgentPort[] = [...COM_PORTS, 'hvc0'];
/** The guest architecture: always the host's (KVM runs guests of its own architecture only). */
export type Arch = 'x86_64' | 'aarch64';

/**
 * What differs between the architectures' machines as far as a config is
 * concerned: the console the default command line names, which serial ports
 * exist and what the guest calls them. Everything else (memory, vCPUs,
 * virtio devices, lifecycle) is shared.
 */
export interface ArchProfile {
  /** Default kernel command line. */
  cmdline: string;
  /** The serial ports this machine has, in order: x86 16550 COM1-COM4, arm64 PL011 #0 and #1. */
  serialPorts: readonly ComPort[];
  /** The guest's tty name prefix for those ports, in the same order (ttyS0, ttyAMA0, ...). */
  ttyPrefix: string;
  /** Boot formats the machine accepts besides a Linux kernel. */
  igvm: boolean;
}

export const ARCH_PROFILES: Readonly<Record<Arch, ArchProfile>> = {
  x86_64: { cmdline: 'panic=-1 console=ttyS0', serialPorts: COM_PORTS, ttyPrefix: 'ttyS', igvm: true },
  // OpenVMM's arm64 console is the first PL011, ttyAMA0, too.
  aarch64: { cmdline: 'panic=-1 console=ttyAMA0', serialPorts: ['com1', 'com2'], ttyPrefix: 'ttyAMA', igvm: false },
};

/** The architecture of this host (and so of its guests). */
export function hostArch(): Arch {
  return process.arch === 'arm64' ? 'aarch64' : 'x86_64';
}

/** What the guest calls serial port `port` on `arch` ('com2' is ttyS1 on x86_64, ttyAMA1 on arm64). */
export function guestTty(arch: Arch, port: ComPort): string {
  const p = ARCH_PROFILES[arch];
  const i = p.serialPorts.indexOf(port);
  if (i < 0) throw new ConfigError([{ path: `serial.${port}`, message: `${arch} machines have no ${port} (they have ${p.serialPorts.join(', ')})` }]);
  return `${p.ttyPrefix}${i}`;
}

/** The guest's name for an agent port: `ttyS1` (x86_64) or `ttyAMA1` (arm64) for com2, `hvc0` for the virtio console. */
export function agentTty(arch: Arch, port: AgentPort): string {
  return port === 'hvc0' ? 'hvc0' : guestTty(arch, port);
}

/**
 * The port whose guest tty `cmdline` names for the test initramfs's exec
 * agent (`nodevmm.agent=TTY`), if it names one this machine has; the
 * virtio console only when the config has it.
 */
export function agentPortInCmdline(arch: Arch, cmdline: string, virtioConsole: boolean): AgentPort | undefined {
  const tty = /(?:^|\s)nodevmm\.agent=(\S+)/.exec(cmdline)?.[1];
  if (tty === undefined) return undefined;
  if (tty === 'hvc0') return virtioConsole ? 'hvc0' : undefined;
  return ARCH_PROFILES[arch].serialPorts.find((c) => guestTty(arch, c) === tty);
}

export interface VmConfig {
  /**
   * The guest architecture. Default: the host's. A value other than the
   * host's is refused: KVM runs guests of its own architecture only.
   */
  arch?: Arch;
  /** Kernel image: path or bytes (bzImage, ELF vmlinux). Required unless `igvm` is given. */
  kernel?: string | Uint8Array;
  initrd?: string | Uint8Array;
  /** Extra kernel command line, appended to the defaults (see `cmdlineDefaults`). */
  cmdline?: string;
  /** Start from `DEFAULTS.cmdline` (true) or use `cmdline` alone (false). Default true. */
  cmdlineDefaults?: boolean;
  /** Guest RAM: bytes, or a string like "512M", "1G", "6GiB". Default 1 GiB. */
  memory?: number | string;
  /** vCPU count. Default 1. */
  vcpus?: number;
  /** How to enter the kernel. Default 'auto': linux64 for a bzImage and a Linux vmlinux, pvh for any other ELF with the PVH note. 'pvh' needs the note. */
  boot?: BootProtocol;
  /** Boot an IGVM file instead of a kernel. */
  igvm?: string | Uint8Array;
  /**
   * Move the IGVM file's relocatable region to this guest physical address
   * (bytes, or a size string like "512M"; it must meet the region's alignment
   * and bounds). Default: the region loads where the file puts it.
   */
  igvmRelocateTo?: number | string;
  /** What a guest reboot does: stop the VM with reason 'reset' (default) or restart it. */
  onReset?: 'stop' | 'restart';
  /**
   * Which serial ports exist. x86_64: 16550 UARTs COM1-COM4 (ttyS0-3), all
   * four by default, as OpenVMM's Linux Direct chipset. arm64: PL011s com1
   * and com2 (ttyAMA0, ttyAMA1), both by default; com3/com4 do not exist.
   */
  serial?: Partial<Record<ComPort, boolean>>;
  /** Bytes of serial output kept per port for logs and expect(). Default 16 MiB. */
  serialLogBytes?: number;
  /** Adaptive exit polling window in µs (the dispatcher's polling; see docs/architecture.md). */
  dispatchSpinUs?: number;
  /**
   * x86_64: where the interrupt controllers and the PIT are emulated.
   * 'kernel': by the hypervisor (KVM's in-kernel irqchip and PIT).
   * 'userspace': the hypervisor keeps the local APICs, nodevmm's TypeScript
   * models provide the IOAPIC and the 8254 PIT (KVM_CAP_SPLIT_IRQCHIP; what
   * Windows Hypervisor Platform always needs). Default: the host
   * hypervisor's first choice (KVM: 'kernel').
   */
  irqchip?: 'kernel' | 'userspace';
  /** A name for logs and errors. */
  name?: string;
  /** Raw disk images, each a virtio-blk device (/dev/vda, /dev/vdb, ... in order). */
  disks?: DiskConfig[];
  /** A virtio-rng device (the guest's /dev/hwrng). Default false. */
  rng?: boolean;
  /** A virtio-console device (the guest's hvc0), reachable as vm.virtioConsole(). Default false. */
  virtioConsole?: boolean;
  /** Network interfaces, each a virtio-net device on a host TAP or on passt user networking (the guest's eth0, eth1, ... in order). */
  net?: NetConfig[];
  /** A virtio-vsock device backed by the host kernel's vhost-vsock; reach the guest with vm.vsockConnect(port). */
  vsock?: VsockConfig;
  /**
   * Host directories shared into the guest, each a virtio-fs device served by
   * a virtiofsd that nodevmm starts and stops with the VM. The guest mounts
   * one with `mount -t virtiofs TAG /mnt`. See docs/virtio.md.
   */
  shares?: ShareConfig[];
}

export interface ShareConfig {
  /** The host directory. */
  path: string;
  /** The name the guest mounts it by: 1 to 36 bytes of UTF-8, unique per VM. */
  tag: string;
  /** The guest cannot change anything in it (writes fail with EROFS). Default false. */
  readOnly?: boolean;
}

/** Longest virtio-fs tag (VIRTIO 1.2 §5.11.4). */
export const SHARE_TAG_MAX_BYTES = 36;

/** A NIC: on a host TAP (`tap`), or on user networking through a passt process (`user`). Exactly one of the two. */
export interface NetConfig {
  /** Host TAP interface name (at most 15 bytes); created if it does not exist and we may. */
  tap?: string;
  /**
   * User networking without root: nodevmm starts `passt` for this NIC and
   * stops it with the VM. The guest gets its address by DHCP; see docs/virtio.md.
   */
  user?: UserNetConfig;
  /** The guest's MAC, "52:54:00:12:34:56". Default: derived from the vm name, TAP (or "user") and position, locally administered. */
  mac?: string;
}

export interface UserNetConfig {
  /** Host ports forwarded into the guest. */
  forward?: PortForwardConfig[];
}

export interface PortForwardConfig {
  /** Default 'tcp'. */
  protocol?: 'tcp' | 'udp';
  /** The port connections arrive at on the host (1-65535). */
  hostPort: number;
  /** The guest port they go to (1-65535). */
  guestPort: number;
  /** Listen only on this host IPv4/IPv6 address (e.g. "127.0.0.1"). Default: every address. */
  hostAddress?: string;
}

/** A resolved NIC: a TAP, or passt user networking with its forwards. */
export type ResolvedNetConfig =
  | { tap: string; mac: string; user?: undefined }
  | { user: { forward: Array<Required<Omit<PortForwardConfig, 'hostAddress'>> & { hostAddress?: string }> }; mac: string; tap?: undefined };

export interface VsockConfig {
  /** The guest's context ID, unique on this host: 3 to 4294967294 (0-2 are reserved, 2^32-1 is VMADDR_CID_ANY). */
  cid: number;
  /** The vsock port the guest's exec agent (guest/vsock-agent.c) listens on: vm.exec() then uses vsock instead of a serial port. */
  agentPort?: number;
}

/** Smallest and largest CID a guest may have (VIRTIO 1.2 §5.10.4; VMADDR_CID_ANY is 2^32-1). */
export const VSOCK_CID_MIN = 3;
export const VSOCK_CID_MAX = 0xffff_fffe;

export interface DiskConfig {
  /** Path of a raw image file (or block device). */
  path: string;
  /** Expose the disk read-only (VIRTIO_BLK_F_RO) and open the file read-only. */
  readonly?: boolean;
  /**
   * The image is a read-only base the guest cannot change (opened read-only,
   * shared-locked): its writes go to a copy-on-write overlay, so any number
   * of VMs can boot from one image. Kept across guest reboots.
   * - 'temp' (QEMU's snapshot=on): a private temporary overlay, discarded
   *   when the VM stops.
   * - any other string: the path of a kept overlay file (created when
   *   missing, locked for this VM), which outlives the VM and can be written
   *   back into the base with `commitOverlay` / `nodevmm commit`
   *   (docs/virtio.md). A file named temp is './temp'.
   */
  overlay?: 'temp' | (string & {});
}

export const DEFAULTS = {
  memory: 1 * GiB,
  vcpus: 1,
  /** The x86_64 default command line; each architecture's is in ARCH_PROFILES. */
  cmdline: ARCH_PROFILES.x86_64.cmdline,
  boot: 'auto' as BootProtocol,
  onReset: 'stop' as const,
  serialLogBytes: 16 * MiB,
  /** Smallest guest we accept: the low-memory layout plus a kernel needs more. */
  minMemory: 32 * MiB,
  maxVcpus: 254,
};

export interface ResolvedVmConfig {
  name: string;
  arch: Arch;
  kernel?: string | Uint8Array;
  initrd?: string | Uint8Array;
  igvm?: string | Uint8Array;
  igvmRelocateTo?: number;
  cmdline: string;
  /**
   * An IGVM boot without a `cmdline` from the user: the image's own command
   * line (its COMMAND_LINE parameter area's initial data) stays, and
   * `cmdline` (the defaults) is not handed to the loader.
   */
  cmdlineFromImage: boolean;
  memory: number;
  vcpus: number;
  boot: BootProtocol;
  onReset: 'stop' | 'restart';
  serial: Record<ComPort, boolean>;
  serialLogBytes: number;
  dispatchSpinUs?: number;
  /** Unset: the hypervisor's first choice. */
  irqchip?: 'kernel' | 'userspace';
  disks: DiskConfig[];
  rng: boolean;
  virtioConsole: boolean;
  net: ResolvedNetConfig[];
  vsock: VsockConfig | undefined;
  shares: Array<Required<ShareConfig>>;
}

const SIZE_RE = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$/i;

/** Parse "512M", "1G", "1.5GiB", "4096" (bytes) into bytes; undefined when malformed. */
export function parseSize(v: number | string): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  const m = SIZE_RE.exec(v);
  if (!m) return undefined;
  const unit = { '': 1, k: 1024, m: MiB, g: GiB, t: 1024 * GiB }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const bytes = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

const KNOWN_KEYS = new Set(['arch', 'kernel', 'initrd', 'cmdline', 'cmdlineDefaults', 'memory', 'vcpus', 'boot', 'igvm', 'igvmRelocateTo', 'onReset', 'serial', 'serialLogBytes', 'dispatchSpinUs', 'irqchip', 'name', 'disks', 'rng', 'virtioConsole', 'net', 'vsock', 'shares']);
/** One interrupt per virtio-mmio slot (IOAPIC pins 16-23). */
const MAX_VIRTIO_DEVICES = 8;

/** Linux interface names: 1-15 bytes, no '/', ':' or whitespace, not "." or "..". */
const IFNAME_MAX = 15;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** A stable MAC for a VM's NIC: 52:54:00 (locally administered, unicast) and three bytes of a hash. */
export function defaultMac(vmName: string, tap: string, index: number): string {
  // node:crypto loads for a NIC's default MAC, not with every VM (CLI start-up time, docs/benchmarks.md).
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  const h = createHash('sha256').update(`${vmName}/${tap}/${index}`).digest();
  return ['52', '54', '00', ...[...h.subarray(0, 3)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

function describe(v: unknown): string {
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

type ResolvedForward = Extract<ResolvedNetConfig, { user: object }>['user']['forward'][number];

/** The forwards of a `user` NIC, or undefined after reporting what is wrong. */
function resolveForwards(user: unknown, path: string, bad: (path: string, message: string) => void): ResolvedForward[] | undefined {
  if (typeof user !== 'object' || user === null) return void bad(path, `must be an object like { forward: [{ hostPort: 8080, guestPort: 80 }] }, got ${describe(user)}`);
  const u = user as Partial<UserNetConfig>;
  for (const k of Object.keys(u)) if (k !== 'forward') return void bad(`${path}.${k}`, 'is not a known option (known: forward)');
  if (u.forward === undefined) return [];
  if (!Array.isArray(u.forward)) return void bad(`${path}.forward`, `must be an array of { hostPort, guestPort, protocol?, hostAddress? }, got ${describe(u.forward)}`);
  const out: ResolvedForward[] = [];
  const port = (v: unknown) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535;
  for (const [j, f] of u.forward.entries()) {
    const at = `${path}.forward[${j}]`;
    if (typeof f !== 'object' || f === null) return void bad(at, `must be an object like { hostPort: 8080, guestPort: 80 }, got ${describe(f)}`);
    for (const k of Object.keys(f)) if (!['protocol', 'hostPort', 'guestPort', 'hostAddress'].includes(k)) return void bad(`${at}.${k}`, 'is not a known option (known: protocol, hostPort, guestPort, hostAddress)');
    const protocol = f.protocol ?? 'tcp';
    if (protocol !== 'tcp' && protocol !== 'udp') return void bad(`${at}.protocol`, `${describe(f.protocol)} must be tcp or udp`);
    if (!port(f.hostPort)) return void bad(`${at}.hostPort`, `${describe(f.hostPort)} must be a port number from 1 to 65535`);
    if (!port(f.guestPort)) return void bad(`${at}.guestPort`, `${describe(f.guestPort)} must be a port number from 1 to 65535`);
    if (f.hostAddress !== undefined && (typeof f.hostAddress !== 'string' || isIP(f.hostAddress) === 0)) return void bad(`${at}.hostAddress`, `${describe(f.hostAddress)} is not an IPv4 or IPv6 address`);
    if (out.some((g) => g.protocol === protocol && g.hostPort === f.hostPort)) return void bad(`${at}.hostPort`, `${protocol} host port ${f.hostPort} is forwarded twice`);
    out.push(f.hostAddress !== undefined ? { protocol, hostPort: f.hostPort, guestPort: f.guestPort, hostAddress: f.hostAddress } : { protocol, hostPort: f.hostPort, guestPort: f.guestPort });
  }
  return out;
}

/**
 * Validate and fill in defaults; throws ConfigError listing every problem.
 * `host` is the architecture VMs run on here (a parameter so the rules of
 * both architectures can be checked on either).
 */
export function resolveVmConfig(config: VmConfig, host: Arch = hostArch()): ResolvedVmConfig {
  const issues: ConfigIssue[] = [];
  const bad = (path: string, message: string) => issues.push({ path, message });
  if (typeof config !== 'object' || config === null) throw new ConfigError([{ path: '(config)', message: 'must be an object' }]);
  for (const k of Object.keys(config)) if (!KNOWN_KEYS.has(k)) bad(k, `is not a known option (known: ${[...KNOWN_KEYS].join(', ')})`);
  const arch = config.arch ?? host;
  if (arch !== 'x86_64' && arch !== 'aarch64') bad('arch', `${describe(config.arch)} must be x86_64 or aarch64`);
  else if (arch !== host) bad('arch', `${describe(config.arch)} cannot run on this ${host} host: KVM runs guests of the host's own architecture only`);
  const profile = ARCH_PROFILES[arch] ?? ARCH_PROFILES[host];
  if (!profile.igvm && config.igvm !== undefined) bad('igvm', `IGVM images boot on x86_64 only; boot an ${arch} guest from a kernel Image (kernel)`);

  const image = (key: 'kernel' | 'initrd' | 'igvm') => {
    const v = config[key];
    if (v === undefined) return;
    if (typeof v === 'string') {
      if (v.length === 0) bad(key, 'must not be an empty path');
    } else if (!(v instanceof Uint8Array)) bad(key, `must be a file path or a Uint8Array, got ${describe(v)}`);
    else if (v.length === 0) bad(key, 'is empty (0 bytes)');
  };
  image('kernel');
  image('initrd');
  image('igvm');
  if (config.kernel === undefined && config.igvm === undefined) bad('kernel', 'is required (or give igvm)');
  if (config.kernel !== undefined && config.igvm !== undefined) bad('igvm', 'cannot be combined with kernel: an IGVM file carries its own kernel');
  let igvmRelocateTo: number | undefined;
  if (config.igvmRelocateTo !== undefined) {
    const v = typeof config.igvmRelocateTo === 'string' && /^0x[0-9a-f]+$/i.test(config.igvmRelocateTo.trim()) ? Number(config.igvmRelocateTo.trim()) : parseSize(config.igvmRelocateTo);
    if (config.igvm === undefined) bad('igvmRelocateTo', 'needs igvm: only an IGVM file has a relocatable region');
    else if (v === undefined || !Number.isSafeInteger(v) || v % 4096) bad('igvmRelocateTo', `${describe(config.igvmRelocateTo)} is not a page-aligned guest physical address (bytes, 0x hex, or a size like 512M)`);
    else igvmRelocateTo = v;
  }

  let memory = DEFAULTS.memory;
  if (config.memory !== undefined) {
    const m = parseSize(config.memory);
    if (m === undefined) bad('memory', `${describe(config.memory)} is not a size (use bytes or a number with K, M, G)`);
    else if (m < DEFAULTS.minMemory) bad('memory', `${describe(config.memory)} is too small: at least ${DEFAULTS.minMemory / MiB} MiB`);
    else if (m % (2 * MiB)) bad('memory', `${describe(config.memory)} must be a multiple of 2 MiB`);
    else memory = m;
  }
  let vcpus = DEFAULTS.vcpus;
  if (config.vcpus !== undefined) {
    if (!Number.isInteger(config.vcpus) || config.vcpus < 1 || config.vcpus > DEFAULTS.maxVcpus) bad('vcpus', `${describe(config.vcpus)} must be an integer from 1 to ${DEFAULTS.maxVcpus}`);
    else vcpus = config.vcpus;
  }
  const boot = config.boot ?? DEFAULTS.boot;
  if (!['auto', 'linux64', 'pvh'].includes(boot)) bad('boot', `${describe(config.boot)} must be one of auto, linux64, pvh`);
  else if (arch === 'aarch64' && boot !== 'auto') bad('boot', `${describe(config.boot)} is an x86_64 boot protocol; arm64 kernels boot one way (leave boot at auto)`);
  const onReset = config.onReset ?? DEFAULTS.onReset;
  if (onReset !== 'stop' && onReset !== 'restart') bad('onReset', `${describe(config.onReset)} must be stop or restart`);
  if (config.cmdline !== undefined && typeof config.cmdline !== 'string') bad('cmdline', `must be a string, got ${describe(config.cmdline)}`);
  const serial = Object.fromEntries(COM_PORTS.map((c) => [c, profile.serialPorts.includes(c)])) as Record<ComPort, boolean>;
  if (config.serial !== undefined) {
    if (typeof config.serial !== 'object' || config.serial === null) bad('serial', 'must be an object like { com1: true }');
    else
      for (const [k, v] of Object.entries(config.serial)) {
        if (!COM_PORTS.includes(k as ComPort)) bad(`serial.${k}`, 'is not a port (com1-com4)');
        else if (typeof v !== 'boolean') bad(`serial.${k}`, `must be true or false, got ${describe(v)}`);
        else if (v && !profile.serialPorts.includes(k as ComPort)) bad(`serial.${k}`, `${arch} machines have no ${k}: their serial ports are ${profile.serialPorts.join(', ')}`);
        else serial[k as ComPort] = v;
      }
  }
  const serialLogBytes = config.serialLogBytes ?? DEFAULTS.serialLogBytes;
  if (!Number.isSafeInteger(serialLogBytes) || serialLogBytes < 4096) bad('serialLogBytes', `${describe(config.serialLogBytes)} must be an integer of at least 4096`);
  if (config.dispatchSpinUs !== undefined && (typeof config.dispatchSpinUs !== 'number' || config.dispatchSpinUs < 0 || config.dispatchSpinUs > 10_000)) {
    bad('dispatchSpinUs', `${describe(config.dispatchSpinUs)} must be a number from 0 to 10000`);
  }
  if (config.irqchip !== undefined) {
    if (config.irqchip !== 'kernel' && config.irqchip !== 'userspace') bad('irqchip', `${describe(config.irqchip)} must be 'kernel' or 'userspace'`);
    else if (arch === 'aarch64') bad('irqchip', `${describe(config.irqchip)} is an x86_64 option; arm64 machines use the hypervisor's GICv3`);
  }
  const disks: DiskConfig[] = [];
  if (config.disks !== undefined) {
    if (!Array.isArray(config.disks)) bad('disks', `must be an array of { path, readonly? }, got ${describe(config.disks)}`);
    else
      config.disks.forEach((d: unknown, i) => {
        const o = d as Partial<DiskConfig> | null;
        if (typeof o !== 'object' || o === null) return bad(`disks[${i}]`, `must be an object like { path: "disk.img" }, got ${describe(d)}`);
        if (typeof o.path !== 'string' || o.path.length === 0) return bad(`disks[${i}].path`, `must be a non-empty file path, got ${describe(o.path)}`);
        if (o.readonly !== undefined && typeof o.readonly !== 'boolean') return bad(`disks[${i}].readonly`, `must be true or false, got ${describe(o.readonly)}`);
        for (const k of Object.keys(o)) if (!['path', 'readonly', 'overlay'].includes(k)) return bad(`disks[${i}].${k}`, 'is not a known option (known: path, readonly, overlay)');
        if (o.overlay !== undefined) {
          if (typeof o.overlay !== 'string' || o.overlay.length === 0) return bad(`disks[${i}].overlay`, `${describe(o.overlay)} is not 'temp' (a temporary overlay discarded at stop) or the path of a kept overlay file`);
          if (o.overlay === o.path) return bad(`disks[${i}].overlay`, `${JSON.stringify(o.overlay)} is the disk's own path: the overlay must be another file`);
          if (o.readonly) return bad(`disks[${i}].overlay`, 'cannot be combined with readonly: an overlay exists to take writes (use one or the other)');
          disks.push({ path: o.path, readonly: false, overlay: o.overlay });
          return;
        }
        disks.push({ path: o.path, readonly: o.readonly ?? false });
      });
  }
  const net: Array<Omit<ResolvedNetConfig, 'mac'> & { mac?: string }> = [];
  if (config.net !== undefined) {
    if (!Array.isArray(config.net)) bad('net', `must be an array of { tap, mac? } or { user, mac? }, got ${describe(config.net)}`);
    else
      config.net.forEach((n: unknown, i) => {
        const o = n as Partial<NetConfig> | null;
        if (typeof o !== 'object' || o === null) return bad(`net[${i}]`, `must be an object like { tap: "tap0" } or { user: {} }, got ${describe(n)}`);
        for (const k of Object.keys(o)) if (k !== 'tap' && k !== 'mac' && k !== 'user') return bad(`net[${i}].${k}`, 'is not a known option (known: tap, user, mac)');
        if (o.tap !== undefined && o.user !== undefined) return bad(`net[${i}]`, 'has both tap and user: a NIC is on a TAP or on user networking');
        if (o.tap === undefined && o.user === undefined) return bad(`net[${i}]`, 'needs tap (a host TAP) or user (passt user networking)');
        if (o.mac !== undefined) {
          if (typeof o.mac !== 'string' || !MAC_RE.test(o.mac)) return bad(`net[${i}].mac`, `${describe(o.mac)} is not a MAC address like "52:54:00:12:34:56"`);
          if (parseInt(o.mac.slice(0, 2), 16) & 1) return bad(`net[${i}].mac`, `${describe(o.mac)} is a multicast address (the first byte must be even)`);
        }
        const mac = o.mac !== undefined ? { mac: o.mac.toLowerCase() } : {};
        if (o.user !== undefined) {
          const forward = resolveForwards(o.user, `net[${i}].user`, bad);
          if (!forward) return;
          for (const f of forward) {
            const clash = net.some((x) => x.user?.forward.some((g) => g.protocol === f.protocol && g.hostPort === f.hostPort));
            if (clash) return bad(`net[${i}].user.forward`, `${f.protocol} host port ${f.hostPort} is forwarded twice`);
          }
          net.push({ user: { forward }, ...mac });
          return;
        }
        if (typeof o.tap !== 'string' || o.tap.length === 0) return bad(`net[${i}].tap`, `must be a TAP interface name, got ${describe(o.tap)}`);
        if (Buffer.byteLength(o.tap) > IFNAME_MAX) return bad(`net[${i}].tap`, `${describe(o.tap)} is longer than the ${IFNAME_MAX} bytes an interface name may have`);
        if (/[\s/:]/.test(o.tap) || o.tap === '.' || o.tap === '..') return bad(`net[${i}].tap`, `${describe(o.tap)} is not a valid interface name (no spaces, '/' or ':')`);
        if (net.some((x) => x.tap === o.tap)) return bad(`net[${i}].tap`, `${describe(o.tap)} is used twice: one TAP serves one NIC`);
        net.push({ tap: o.tap, ...mac });
      });
  }
  for (const key of ['rng', 'virtioConsole'] as const) {
    if (config[key] !== undefined && typeof config[key] !== 'boolean') bad(key, `must be true or false, got ${describe(config[key])}`);
  }
  let vsock: VsockConfig | undefined;
  if (config.vsock !== undefined) {
    const v = config.vsock as Partial<VsockConfig> | null;
    if (typeof v !== 'object' || v === null) bad('vsock', `must be an object like { cid: 3 }, got ${describe(config.vsock)}`);
    else if (!Number.isInteger(v.cid) || v.cid! < VSOCK_CID_MIN || v.cid! > VSOCK_CID_MAX) {
      bad('vsock.cid', `${describe(v.cid)} must be an integer from ${VSOCK_CID_MIN} to ${VSOCK_CID_MAX} (0-2 are reserved for the hypervisor, loopback and the host; ${VSOCK_CID_MAX + 1} means any)`);
    } else if (v.agentPort !== undefined && (!Number.isInteger(v.agentPort) || v.agentPort < 0 || v.agentPort > VSOCK_CID_MAX)) {
      bad('vsock.agentPort', `${describe(v.agentPort)} must be an integer from 0 to ${VSOCK_CID_MAX}`);
    } else vsock = v.agentPort !== undefined ? { cid: v.cid!, agentPort: v.agentPort } : { cid: v.cid! };
  }
  const shares: Array<Required<ShareConfig>> = [];
  if (config.shares !== undefined) {
    if (!Array.isArray(config.shares)) bad('shares', `must be an array of { path, tag, readOnly? }, got ${describe(config.shares)}`);
    else
      config.shares.forEach((d: unknown, i) => {
        const o = d as Partial<ShareConfig> | null;
        if (typeof o !== 'object' || o === null) return bad(`shares[${i}]`, `must be an object like { path: "/srv/data", tag: "data" }, got ${describe(d)}`);
        for (const k of Object.keys(o)) if (!['path', 'tag', 'readOnly'].includes(k)) return bad(`shares[${i}].${k}`, 'is not a known option (known: path, tag, readOnly)');
        if (typeof o.path !== 'string' || o.path.length === 0) return bad(`shares[${i}].path`, `must be a non-empty directory path, got ${describe(o.path)}`);
        if (typeof o.tag !== 'string' || o.tag.length === 0 || Buffer.byteLength(o.tag) > SHARE_TAG_MAX_BYTES || o.tag.includes('\0')) {
          return bad(`shares[${i}].tag`, `${describe(o.tag)} must be 1 to ${SHARE_TAG_MAX_BYTES} bytes of UTF-8 without NUL`);
        }
        if (shares.some((x) => x.tag === o.tag)) return bad(`shares[${i}].tag`, `${describe(o.tag)} is used twice: the guest mounts a share by its tag`);
        if (o.readOnly !== undefined && typeof o.readOnly !== 'boolean') return bad(`shares[${i}].readOnly`, `must be true or false, got ${describe(o.readOnly)}`);
        shares.push({ path: o.path, tag: o.tag, readOnly: o.readOnly ?? false });
      });
  }
  const virtioCount = disks.length + net.length + shares.length + (config.rng ? 1 : 0) + (config.virtioConsole ? 1 : 0) + (config.vsock !== undefined ? 1 : 0);
  if (virtioCount > MAX_VIRTIO_DEVICES) bad('disks', `${virtioCount} virtio devices (disks, net, shares, vsock, rng, console) are more than the ${MAX_VIRTIO_DEVICES} that have an interrupt`);
  if (issues.length) throw new ConfigError(issues);

  const parts = [];
  if (config.cmdlineDefaults !== false) parts.push(profile.cmdline);
  if (config.cmdline) parts.push(config.cmdline.trim());
  const name = config.name ?? 'vm';
  const resolved: ResolvedVmConfig = {
    name,
    arch,
    cmdline: parts.join(' '),
    cmdlineFromImage: config.igvm !== undefined && !config.cmdline && config.cmdlineDefaults !== false,
    memory,
    vcpus,
    boot,
    onReset,
    serial,
    serialLogBytes,
    disks,
    rng: config.rng === true,
    virtioConsole: config.virtioConsole === true,
    net: net.map((n, i): ResolvedNetConfig => (n.user ? { user: n.user, mac: n.mac ?? defaultMac(name, 'user', i) } : { tap: n.tap!, mac: n.mac ?? defaultMac(name, n.tap!, i) })),
    vsock,
    shares,
  };
  if (config.kernel !== undefined) resolved.kernel = config.kernel;
  if (config.initrd !== undefined) resolved.initrd = config.initrd;
  if (config.igvm !== undefined) resolved.igvm = config.igvm;
  if (igvmRelocateTo !== undefined) resolved.igvmRelocateTo = igvmRelocateTo;
  if (config.dispatchSpinUs !== undefined) resolved.dispatchSpinUs = config.dispatchSpinUs;
  if (config.irqchip !== undefined) resolved.irqchip = config.irqchip;
  return resolved;
}
