/**
 * The `nodevmm run` flag table and its parser: argv in, VmConfig plus
 * serial bindings out. Every unknown flag, missing value or bad value is a
 * ConfigError naming the flag (the CLI exits 2 on those).
 */
import { ConfigError, type ConfigIssue } from '../errors';
import type { BootProtocol, ComPort, NetConfig, PortForwardConfig, VmConfig } from '../vm/config';

export type SerialBinding =
  | { kind: 'console' }
  | { kind: 'stdio' }
  | { kind: 'none' }
  | { kind: 'null' }
  | { kind: 'file'; path: string }
  | { kind: 'tcp'; host: string; port: number };

export interface RunArgs {
  config: VmConfig;
  serial: Record<ComPort, SerialBinding>;
  verbose: boolean;
  help: boolean;
  /** Print the boot phase timings and the memory layout to stderr. */
  trace: boolean;
  /** Accept --memory above the host's RAM plus swap. */
  overcommit: boolean;
  /** The memory flag as typed (`-m` or `--memory`) and its value, for messages about it. */
  memoryArg?: { flag: string; value: string };
  /** Continue the VM saved in this snapshot folder instead of booting (--restore). */
  restore?: string;
  /** Where Ctrl-A s saves a snapshot of the running VM (--snapshot-dir). */
  snapshotDir?: string;
}

export const RUN_USAGE = `usage: nodevmm run --kernel PATH [options]
       nodevmm run --igvm FILE [options]

Boot a Linux kernel directly (Linux Direct): no firmware, the VMM loads the
kernel, builds boot_params/ACPI and starts the CPU at the kernel's entry.

options:
  --kernel PATH          bzImage or ELF vmlinux (x86_64), flat Image (arm64)
  --initrd PATH          initramfs (cpio, optionally compressed)
  --cmdline STR          appended to the default command line "panic=-1 console=ttyS0"
                         (arm64: "panic=-1 console=ttyAMA0")
                         (with --igvm and no --cmdline, the image keeps its own)
  --no-default-cmdline   use --cmdline alone
  -m, --memory SIZE      guest RAM, e.g. 512M, 1G, 6G (default 1G); at most the
                         host's RAM plus swap unless --overcommit
  --overcommit           allow --memory above the host's RAM plus swap (guest RAM is
                         only allocated when the guest touches it)
  -p, --processors N     vCPUs (default 1)
  --boot auto|linux64|pvh
                         entry protocol (default auto: the 64-bit boot protocol;
                         pvh needs an ELF with the XEN_ELFNOTE_PHYS32_ENTRY note)
  --igvm FILE            boot an IGVM image instead of --kernel
  --igvm-relocate GPA    load the image's relocatable region at GPA (0x hex, bytes or
                         a size like 512M) instead of where the file puts it
  --com1 BINDING         console|stdio|file:PATH|tcp:HOST:PORT|none (default console)
  --com2, --com3, --com4 BINDING  (default: present, output kept in memory only;
                         arm64 has --com1 and --com2: the PL011s ttyAMA0, ttyAMA1)
  --on-reset stop|restart  what a guest reboot does (default stop)
  --irqchip kernel|userspace
                         x86_64: IOAPIC and PIT in the hypervisor, or as nodevmm's
                         TypeScript models beside the hypervisor's LAPIC
                         (default: the hypervisor's choice, kernel on KVM)
  --disk PATH[,ro|,snapshot|,overlay=FILE]
                         a raw disk image as virtio-blk (/dev/vda, /dev/vdb, ... in order);
                         ,ro makes it read-only; ,snapshot keeps the image unchanged (opened
                         read-only) and sends the guest's writes to a temporary overlay
                         dropped at stop, so many VMs can share one image; ,overlay=FILE
                         does the same with a kept overlay FILE (created if missing; write
                         it back with nodevmm commit FILE); repeat for more disks
  --net tap:NAME[,mac=MAC]
                         a virtio-net NIC on host TAP NAME (eth0, eth1, ... in order),
                         created if missing (needs CAP_NET_ADMIN); repeat for more NICs
  --net user[,hostfwd=tcp:[HOSTADDR]:HOSTPORT-:GUESTPORT]...[,mac=MAC]
                         a virtio-net NIC on user networking (a passt process nodevmm
                         starts and stops; no root): the guest gets 10.0.2.x-style
                         addresses by DHCP, its gateway address reaches the host's
                         loopback; hostfwd (repeatable, also udp:) forwards a host port
  --share HOSTDIR:TAG[,ro]
                         share host directory HOSTDIR over virtio-fs (a virtiofsd
                         nodevmm starts and stops); the guest mounts it with
                         mount -t virtiofs TAG /mnt; ,ro refuses the guest's writes;
                         repeat for more shares; x86 only for now
  --rng                  a virtio-rng device (the guest's /dev/hwrng)
  --virtio-console       a virtio console (the guest's hvc0); bound to the terminal
                         when --com1 none
  --vsock CID            a virtio-vsock device with guest context ID CID (3 to
                         4294967294, unique on this host), backed by /dev/vhost-vsock
  --restore DIR          continue the VM saved in snapshot folder DIR instead of booting
                         (no --kernel/--igvm and no machine options: the snapshot has
                         them); --disk PATH[,snapshot] flags replace its disks in order,
                         ,snapshot giving this run a private temporary overlay
  --snapshot-dir DIR     where Ctrl-A s saves a snapshot of the running VM (a new or
                         empty folder; the VM pauses for the save, then runs on)
  --trace                print to stderr the start-up milestones since the process
                         started, boot phase timings, the memory layout and, at the
                         end, which devices' exits reached JS and the exit counters
  --verbose              show stack traces for errors
  -h, --help             this help

serial bindings:
  console     this terminal: raw mode on a TTY with Ctrl-A as the escape key
              (Ctrl-A x quits, Ctrl-A s snapshots into --snapshot-dir, Ctrl-A h
              helps); piped stdin/stdout otherwise
  stdio       stdin/stdout as plain byte streams, no escape key
  file:PATH   guest output appended to PATH
  tcp:H:P     connect to H:P and bridge the port to that socket
  (console and tcp: input is read only as fast as the guest takes it; output
  the terminal or peer does not take is dropped past 1 MiB, and counted on exit)
  none        no UART at this port

exit status: 0 guest powered off or reset (with --on-reset stop), 2 bad usage or
configuration (including a disk image that is missing, a directory, not a
file or block device, under 512 bytes, or in use by another VM, and a
--restore folder that is damaged, of another snapshot format version or from
a cpu this host lacks features of), 3 triple
fault, 4 internal error (e.g. emulation failure), 1 host error, 130 killed
by Ctrl-A x or SIGINT (Ctrl-C with --com1 stdio), 143 killed by SIGTERM.`;

/** Exit statuses of `nodevmm run` stopped by a signal (128 + the signal's number, as shells report it). */
export const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;

function parseBinding(flag: string, v: string, issues: ConfigIssue[]): SerialBinding {
  if (v === 'console' || v === 'stdio' || v === 'none') return { kind: v };
  if (v.startsWith('file:') && v.length > 5) return { kind: 'file', path: v.slice(5) };
  const m = /^tcp:(.+):(\d+)$/.exec(v);
  if (m && Number(m[2]) > 0 && Number(m[2]) < 65536) return { kind: 'tcp', host: m[1]!, port: Number(m[2]) };
  issues.push({ path: flag, message: `${JSON.stringify(v)} is not a serial binding (console, stdio, file:PATH, tcp:HOST:PORT, none)` });
  return { kind: 'none' };
}

const HOSTFWD_RE = /^(tcp|udp):(\[[0-9a-f:.]+\]|[0-9.]*):(\d+)-:(\d+)$/i;

/** `tap:NAME[,mac=MAC]` or `user[,hostfwd=...][,mac=MAC]` to a NetConfig, or the sentence saying what is wrong. */
export function parseNetFlag(v: string): NetConfig | string {
  const tap = /^tap:([^,]+)(?:,mac=([^,]*))?$/.exec(v);
  if (tap) return tap[2] !== undefined ? { tap: tap[1]!, mac: tap[2] } : { tap: tap[1]! };
  const [kind, ...opts] = v.split(',');
  if (kind !== 'user') return `${JSON.stringify(v)} is not tap:NAME[,mac=MAC] or user[,hostfwd=tcp::HOSTPORT-:GUESTPORT][,mac=MAC]`;
  const forward: PortForwardConfig[] = [];
  let mac: string | undefined;
  for (const o of opts) {
    if (o.startsWith('mac=')) {
      mac = o.slice(4);
      continue;
    }
    const m = o.startsWith('hostfwd=') ? HOSTFWD_RE.exec(o.slice(8)) : null;
    if (!m) return `${JSON.stringify(o)} in ${JSON.stringify(v)} is not hostfwd=tcp:[HOSTADDR]:HOSTPORT-:GUESTPORT (or udp:) or mac=MAC`;
    const f: PortForwardConfig = { protocol: m[1]!.toLowerCase() as 'tcp' | 'udp', hostPort: Number(m[3]), guestPort: Number(m[4]) };
    const addr = m[2]!.replace(/^\[|\]$/g, '');
    if (addr) f.hostAddress = addr;
    forward.push(f);
  }
  return mac !== undefined ? { user: { forward }, mac } : { user: { forward } };
}

export function parseRunArgs(argv: readonly string[]): RunArgs {
  const issues: ConfigIssue[] = [];
  const config: VmConfig = {};
  const serial: Record<ComPort, SerialBinding> = { com1: { kind: 'console' }, com2: { kind: 'null' }, com3: { kind: 'null' }, com4: { kind: 'null' } };
  const out: RunArgs = { config, serial, verbose: false, help: false, trace: false, overcommit: false };
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i]!;
    const eq = raw.startsWith('--') ? raw.indexOf('=') : -1;
    const flag = eq > 0 ? raw.slice(0, eq) : raw;
    const inline = eq > 0 ? raw.slice(eq + 1) : undefined;
    const value = (): string | undefined => {
      if (inline !== undefined) return inline;
      const v = argv[i + 1];
      if (v === undefined || (v.startsWith('-') && v.length > 1 && !/^-\d/.test(v))) {
        issues.push({ path: flag, message: 'needs a value' });
        return undefined;
      }
      i++;
      return v;
    };
    switch (flag) {
      case '--kernel': { const v = value(); if (v !== undefined) config.kernel = v; break; }
      case '--initrd': { const v = value(); if (v !== undefined) config.initrd = v; break; }
      case '--igvm': { const v = value(); if (v !== undefined) config.igvm = v; break; }
      case '--igvm-relocate': { const v = value(); if (v !== undefined) config.igvmRelocateTo = v; break; }
      case '--cmdline': { const v = value(); if (v !== undefined) config.cmdline = v; break; }
      case '--no-default-cmdline': config.cmdlineDefaults = false; break;
      case '-m':
      case '--memory': {
        const v = value();
        if (v === undefined) break;
        config.memory = /^\d+$/.test(v) ? `${v}M` : v;
        out.memoryArg = { flag, value: v };
        break;
      }
      case '--overcommit': out.overcommit = true; break;
      case '-p':
      case '--processors': {
        const v = value();
        if (v === undefined) break;
        if (!/^\d+$/.test(v)) issues.push({ path: flag, message: `${JSON.stringify(v)} is not a whole number of processors` });
        else config.vcpus = Number(v);
        break;
      }
      case '--boot': { const v = value(); if (v !== undefined) config.boot = v as BootProtocol; break; }
      case '--on-reset': { const v = value(); if (v !== undefined) config.onReset = v as 'stop' | 'restart'; break; }
      case '--irqchip': { const v = value(); if (v !== undefined) config.irqchip = v as 'kernel' | 'userspace'; break; }
      case '--com1':
      case '--com2':
      case '--com3':
      case '--com4': { const v = value(); if (v !== undefined) serial[flag.slice(2) as ComPort] = parseBinding(flag, v, issues); break; }
      case '--disk': {
        const v = value();
        if (v === undefined) break;
        const m = /^(.+?)(,ro|,snapshot|,overlay=.+)?$/.exec(v);
        if (!m || m[1]!.includes(',')) issues.push({ path: flag, message: `${JSON.stringify(v)} is not PATH, PATH,ro, PATH,snapshot or PATH,overlay=FILE` });
        else if (m[2] === ',snapshot') (config.disks ??= []).push({ path: m[1]!, overlay: 'temp' });
        // './temp' for a kept overlay file named temp: 'temp' alone means the temporary overlay in the API.
        else if (m[2]?.startsWith(',overlay=')) (config.disks ??= []).push({ path: m[1]!, overlay: m[2] === ',overlay=temp' ? './temp' : m[2].slice(',overlay='.length) });
        else (config.disks ??= []).push({ path: m[1]!, readonly: m[2] !== undefined });
        break;
      }
      case '--share': {
        const v = value();
        if (v === undefined) break;
        const m = /^(.+):([^:,]+)(,ro)?$/.exec(v);
        if (!m) issues.push({ path: flag, message: `${JSON.stringify(v)} is not HOSTDIR:TAG or HOSTDIR:TAG,ro` });
        else (config.shares ??= []).push(m[3] ? { path: m[1]!, tag: m[2]!, readOnly: true } : { path: m[1]!, tag: m[2]! });
        break;
      }
      case '--net': {
        const v = value();
        if (v === undefined) break;
        const nic = parseNetFlag(v);
        if (typeof nic === 'string') issues.push({ path: flag, message: nic });
        else (config.net ??= []).push(nic);
        break;
      }
      case '--rng': config.rng = true; break;
      case '--virtio-console': config.virtioConsole = true; break;
      case '--vsock': {
        const v = value();
        if (v === undefined) break;
        if (!/^\d+$/.test(v)) issues.push({ path: flag, message: `${JSON.stringify(v)} is not a context ID (a whole number from 3 to 4294967294)` });
        else config.vsock = { cid: Number(v) };
        break;
      }
      case '--verbose': out.verbose = true; break;
      case '--trace': out.trace = true; break;
      case '--restore': { const v = value(); if (v !== undefined) out.restore = v; break; }
      case '--snapshot-dir': { const v = value(); if (v !== undefined) out.snapshotDir = v; break; }
      case '-h':
      case '--help': out.help = true; break;
      default: issues.push({ path: raw, message: raw.startsWith('-') ? 'is not a nodevmm run option (see nodevmm run --help)' : 'unexpected argument (see nodevmm run --help)' });
    }
  }
  // Ports left at their default are the architecture's (x86: COM1-COM4, arm64: com1 and com2).
  config.serial = Object.fromEntries((Object.entries(serial) as [ComPort, SerialBinding][]).filter(([, b]) => b.kind !== 'null').map(([c, b]) => [c, b.kind !== 'none']));
  const consoles = Object.values(serial).filter((b) => b.kind === 'console' || b.kind === 'stdio').length;
  if (consoles > 1) issues.push({ path: '--com1..--com4', message: 'only one port can use the console or stdio' });
  if (out.restore !== undefined) {
    // The snapshot is the machine: only where its ports go and which disk files it uses may change.
    const machine = Object.keys(config).filter((k) => k !== 'disks' && k !== 'serial');
    for (const k of machine) issues.push({ path: '--restore', message: `cannot be combined with the machine option ${k}: a restored vm has the snapshot's` });
  }
  if (issues.length && !out.help) throw new ConfigError(issues);
  return out;
}
