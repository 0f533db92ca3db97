/**
 * Builds the gzip-compressed newc initramfs images our tests boot: a test
 * init that prints marker lines, runs one command given on the kernel command
 * line and powers off, and an interactive busybox shell. Everything in the
 * image is a static busybox plus a POSIX sh init script, so the same builder
 * serves x86_64 and arm64. It does not fetch busybox or modules (see
 * lib/testing/artifacts.ts). Kernel side: Documentation/filesystems/ramfs-
 * rootfs-initramfs.rst (the kernel runs /init from the unpacked archive).
 */
import { gzipSync } from 'node:zlib';
import { NodevmmError } from '../errors';
import { CpioWriter } from './cpio';

/** Marker lines printed by the test init, one `KEY=value` per line. */
export const GUEST_MARKERS = {
  initOk: 'GUEST-INIT-OK',
  uptime: 'GUEST-UPTIME=',
  nproc: 'GUEST-NPROC=',
  memTotalKb: 'GUEST-MEMTOTAL-KB=',
  unameR: 'GUEST-UNAME-R=',
  cmdExit: 'GUEST-CMD-EXIT=',
} as const;

/** Printed on the agent port once its shell reads commands. */
export const AGENT_READY_MARKER = 'NODEVMM-AGENT-READY';

/** Kernel command line parameters the test init understands. */
export const CMDLINE_PARAMS = {
  /** `nodevmm.cmd=<base64 of a shell command>`: base64 keeps spaces and quotes intact. */
  cmd: 'nodevmm.cmd',
  /** `nodevmm.shell=1`: after the command, start a shell on the console instead of powering off. */
  shell: 'nodevmm.shell',
  /**
   * `nodevmm.agent=ttyS1`: run a non-interactive shell on that serial port (raw, no echo) for the
   * host's exec(); kernel messages go to the console, so they never interleave with its output.
   */
  agent: 'nodevmm.agent',
  /**
   * `root=/dev/vda` (with optional `rootfstype=`, default ext4, and `init=`, default /sbin/init):
   * as a distribution's initramfs does, mount that disk and switch_root to it instead of running
   * the test init. Printed: GUEST-ROOT-MOUNTED=<dev> or GUEST-ROOT-FAILED=<dev>.
   */
  root: 'root',
} as const;

export interface InitramfsFile {
  /** Absolute path inside the guest, e.g. `/etc/motd`. */
  path: string;
  data: Uint8Array | string;
  mode?: number;
}

/** A kernel module to `insmod` at boot, in the order given (no dependency resolution). */
export interface InitramfsModule {
  /** Module name without `.ko`, e.g. `virtio_ring`; also the file name under /lib/modules. */
  name: string;
  data: Uint8Array;
}

export interface InitramfsOptions {
  /** A statically linked busybox binary for the guest's architecture. */
  busybox: Uint8Array;
  extraFiles?: InitramfsFile[];
  modules?: InitramfsModule[];
}

export interface CustomInitramfsOptions extends InitramfsOptions {
  /** The /init script, run by busybox sh; `/bin/busybox --install -s` has not yet run. */
  init: string;
}

/** The test init: markers, optional `nodevmm.cmd`, then power off (or a shell with `nodevmm.shell=1`). */
export function buildTestInitramfs(options: InitramfsOptions): Uint8Array {
  return buildInitramfs({ ...options, init: testInitScript(false) });
}

/** The same init, but it always ends in an interactive shell on the console. */
export function buildShellInitramfs(options: InitramfsOptions): Uint8Array {
  return buildInitramfs({ ...options, init: testInitScript(true) });
}

/** Any init script over busybox: the archive holds /bin/busybox, /init, modules and extra files. */
export function buildInitramfs(options: CustomInitramfsOptions): Uint8Array {
  const cpio = new CpioWriter();
  for (const dir of ['/bin', '/sbin', '/usr/bin', '/usr/sbin', '/dev', '/proc', '/sys', '/tmp', '/etc', '/lib/modules', '/root']) {
    cpio.addDir(dir);
  }
  // The kernel opens /dev/console before running /init; without this node there is no
  // console for init's stdio until devtmpfs is mounted.
  cpio.addDevice('/dev/console', 'c', 5, 1, 0o600);
  cpio.addFile('/bin/busybox', options.busybox, 0o755);
  cpio.addSymlink('/bin/sh', 'busybox');
  const names: string[] = [];
  for (const m of options.modules ?? []) {
    if (!/^[A-Za-z0-9_-]+$/.test(m.name)) throw new NodevmmError('ERR_INITRAMFS_MODULE', `initramfs: module name ${JSON.stringify(m.name)} is not a plain module name`);
    cpio.addFile(`/lib/modules/${m.name}.ko`, m.data, 0o644);
    names.push(m.name);
  }
  cpio.addFile('/etc/nodevmm-modules', names.map((n) => n + '\n').join(''), 0o644);
  for (const f of options.extraFiles ?? []) cpio.addFile(f.path, f.data, f.mode ?? 0o644);
  cpio.addFile('/init', options.init, 0o755);
  return new Uint8Array(gzipSync(cpio.finish(), { level: 6 }));
}

/** Shell lines shared by every init: busybox applets, pseudo filesystems, modules in order. */
export const INIT_PRELUDE = `#!/bin/sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mount -t tmpfs tmpfs /dev
exec </dev/console >/dev/console 2>&1
while read -r mod; do
  [ -n "$mod" ] || continue
  insmod "/lib/modules/$mod.ko" || echo "GUEST-INSMOD-FAILED=$mod"
done </etc/nodevmm-modules
`;

/**
 * `root=`: mount the root disk read-write and hand PID 1 to its init. The disk's driver may
 * still be probing when we get here (virtio_mmio binds asynchronously), so wait up to 10 s.
 */
const SWITCH_ROOT = `root=
rootfstype=ext4
rootinit=/sbin/init
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ${CMDLINE_PARAMS.root}=/dev/*) root="\${arg#${CMDLINE_PARAMS.root}=}" ;;
    rootfstype=*) rootfstype="\${arg#rootfstype=}" ;;
    init=/*) rootinit="\${arg#init=}" ;;
  esac
done
if [ -n "$root" ]; then
  i=0
  while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  mkdir -p /newroot
  if mount -t "$rootfstype" -o rw "$root" /newroot; then
    echo "GUEST-ROOT-MOUNTED=$root"
    mount --move /dev /newroot/dev 2>/dev/null || mount -t devtmpfs devtmpfs /newroot/dev
    umount /proc /sys
    exec switch_root /newroot "$rootinit"
  fi
  echo "GUEST-ROOT-FAILED=$root"
fi
`;

function testInitScript(alwaysShell: boolean): string {
  // (the agent's stderr goes to /dev/null; exec() merges each command's stderr itself)
  return `${INIT_PRELUDE}
${SWITCH_ROOT}
# The power button (the host's shutdown()) powers off cleanly. Linux reports it as an input
# device: "Power Button" on x86 (ACPI, the button module), "gpio-keys" on arm64 (the PL061 power
# key, the gpio_keys module), read through evdev (all =m in Debian's kernels); the first event
# read from it (24 bytes on 64-bit: one struct input_event) starts an orderly power-off.
for d in /sys/class/input/event*; do
  if grep -qE "^(Power Button|gpio-keys)$" "$d/device/name" 2>/dev/null; then
    ( dd if="/dev/input/\${d##*/}" bs=24 count=1 >/dev/null 2>&1; echo GUEST-POWER-BUTTON; sync; poweroff -f ) &
  fi
done
agent=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ${CMDLINE_PARAMS.agent}=*) agent="\${arg#${CMDLINE_PARAMS.agent}=}" ;;
  esac
done
if [ -n "$agent" ] && [ -c "/dev/$agent" ]; then
  # One open of the port for the agent's whole life (every open resets the UART's FIFOs),
  # raw and without echo; stderr is not a tty, so sh is non-interactive (no prompt or line
  # editing); the host waits for the ready line before its first command.
  setsid sh -c "stty raw -echo; echo ${AGENT_READY_MARKER}; exec sh 2>/dev/null" </dev/$agent >/dev/$agent &
  echo "GUEST-AGENT=$agent"
fi
echo ${GUEST_MARKERS.initOk}
read -r up _ </proc/uptime
echo "${GUEST_MARKERS.uptime}$up"
echo "${GUEST_MARKERS.nproc}$(nproc)"
echo "${GUEST_MARKERS.memTotalKb}$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
echo "${GUEST_MARKERS.unameR}$(uname -r)"
cmd_b64=
shell=${alwaysShell ? 1 : 0}
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ${CMDLINE_PARAMS.cmd}=*) cmd_b64="\${arg#${CMDLINE_PARAMS.cmd}=}" ;;
    ${CMDLINE_PARAMS.shell}=1) shell=1 ;;
  esac
done
if [ -n "$cmd_b64" ]; then
  cmd="$(echo "$cmd_b64" | base64 -d)"
  sh -c "$cmd"
  echo "${GUEST_MARKERS.cmdExit}$?"
fi
if [ "$shell" = 1 ]; then
  # cttyhack gives the shell a controlling tty, so ^C and job control work on the console.
  setsid cttyhack sh -l
fi
sync
poweroff -f
`;
}
