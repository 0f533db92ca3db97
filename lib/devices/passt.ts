/**
 * User-mode networking without root: a virtio-net backend on a `passt`
 * process (https://passt.top, Debian package passt). nodevmm starts passt
 * per NIC with one end of a connected UNIX stream socket (`passt --fd 3`)
 * and keeps the other; frames cross it in QEMU's stream framing, a 4-byte
 * big-endian length before each Ethernet frame (no virtio-net header).
 * passt answers ARP, DHCP, NDP and DHCPv6 itself, and turns the guest's
 * TCP/UDP/ICMP into ordinary sockets of this user on the host.
 *
 * Both directions are bounded: frames from passt wait in a queue of at most
 * RX_QUEUE_MAX_BYTES / RX_QUEUE_MAX_FRAMES for guest buffers (beyond that the
 * socket is paused and passt's side of it fills, so passt backs off), and
 * frames to passt are dropped, as a full TAP would, while more than
 * TX_QUEUE_MAX_BYTES already wait to be written.
 *
 * passt exits when its socket hangs up (--one-off), which the kernel does
 * when this process dies however it dies; see lib/util/helper-process.ts.
 */
import * as fs from 'node:fs';
import type { Socket } from 'node:net';
import { NodevmmError } from '../errors';
import { spawnHelper, type HelperProcess } from '../util/helper-process';
import type { NetBackend } from './virtio/net';

/** The length prefix of QEMU's stream netdev framing. */
export const FRAME_HEADER_BYTES = 4;
/** The largest frame either side may send: passt's largest MTU (65520) plus an Ethernet header, rounded up. */
export const MAX_FRAME_BYTES = 65_550;
/** Frames from passt waiting for guest buffers, at most (bytes, count); the socket is paused beyond. */
export const RX_QUEUE_MAX_BYTES = 1 << 20;
export const RX_QUEUE_MAX_FRAMES = 1024;
/** Bytes queued towards passt beyond which guest frames are dropped. */
export const TX_QUEUE_MAX_BYTES = 1 << 20;
/**
 * The MTU passt tells the guest by DHCP. Our virtio-net has no MRG_RXBUF, so
 * a Linux guest posts 1518-byte receive buffers unless offloads are on:
 * larger frames would not fit them.
 */
export const PASST_GUEST_MTU = 1500;

/** A stream that is not in the 4-byte-length framing (or a frame bigger than any MTU). */
export class FrameStreamError extends Error {}

/** Splits a byte stream into frames of QEMU's stream framing; keeps a partial frame across chunks. */
export class FrameDecoder {
  private partial: Uint8Array = new Uint8Array(0);

  /** Bytes of an incomplete frame (or header) held back. */
  get pendingBytes(): number {
    return this.partial.length;
  }

  /** The frames completed by `chunk`, in order (views into the chunk where a frame lies in one). */
  push(chunk: Uint8Array): Uint8Array[] {
    let data = chunk;
    if (this.partial.length) {
      data = new Uint8Array(this.partial.length + chunk.length);
      data.set(this.partial, 0);
      data.set(chunk, this.partial.length);
    }
    const frames: Uint8Array[] = [];
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    let at = 0;
    while (data.length - at >= FRAME_HEADER_BYTES) {
      const len = dv.getUint32(at, false);
      if (len === 0 || len > MAX_FRAME_BYTES) throw new FrameStreamError(`a frame of ${len} bytes (expected 1 to ${MAX_FRAME_BYTES})`);
      if (data.length - at - FRAME_HEADER_BYTES < len) break;
      frames.push(data.subarray(at + FRAME_HEADER_BYTES, at + FRAME_HEADER_BYTES + len));
      at += FRAME_HEADER_BYTES + len;
    }
    // Copy the remainder: holding a view would pin the whole chunk.
    this.partial = at === data.length ? new Uint8Array(0) : data.slice(at);
    return frames;
  }
}

/** One frame made of `buffers`, with its length prefix, in a buffer of its own. */
export function encodeFrame(buffers: readonly Uint8Array[]): Buffer {
  let len = 0;
  for (const b of buffers) len += b.length;
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + len);
  out.writeUInt32BE(len, 0);
  let at = FRAME_HEADER_BYTES;
  for (const b of buffers) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/** Copy `frame` into `buffers` in order; returns the frame's length (bytes beyond the buffers are lost). */
export function copyFrameInto(frame: Uint8Array, buffers: readonly Uint8Array[]): number {
  let at = 0;
  for (const b of buffers) {
    if (at >= frame.length) break;
    const n = Math.min(b.length, frame.length - at);
    b.set(frame.subarray(at, at + n), 0);
    at += n;
  }
  return frame.length;
}

/** A port the host forwards into the guest: connections to hostAddress:hostPort reach the guest's guestPort. */
export interface PortForward {
  protocol: 'tcp' | 'udp';
  hostPort: number;
  guestPort: number;
  /** Bind only this host address (e.g. "127.0.0.1"); default all addresses. */
  hostAddress?: string;
}

/** passt's -t/-u arguments for the forwards: "-t 127.0.0.1/8080:80". */
export function passtForwardArgs(forwards: readonly PortForward[]): string[] {
  const args: string[] = [];
  for (const f of forwards) {
    args.push(f.protocol === 'tcp' ? '-t' : '-u', `${f.hostAddress ? `${f.hostAddress}/` : ''}${f.hostPort}:${f.guestPort}`);
  }
  return args;
}

/**
 * What the guest gets when this network namespace has no IPv4 default route
 * (an offline machine, a fresh namespace, the emulated arm64 KVM host):
 * passt copies the guest's address, gateway and its own MAC from the
 * interface with the default route and exits without one ("No external
 * routable interface for IPv4"), so nodevmm names them instead: QEMU's
 * user-networking layout, and the MAC newer passt uses when it has no
 * template. The loopback interface stands in as the template passt insists
 * on (`-i lo`); none of its addresses are used.
 */
export const PASST_NO_ROUTE_LAYOUT = { address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2', mac: '9a:55:9a:55:9a:55', templateInterface: 'lo' } as const;

/** Whether `table` (the text of /proc/net/route: a header, then one route a line) has an IPv4 default route that is up. */
export function hasIpv4DefaultRoute(table: string): boolean {
  return table
    .split('\n')
    .slice(1)
    .some((line) => {
      // Iface Destination Gateway Flags RefCnt Use Metric Mask ...: all hex, in the kernel's byte order.
      const f = line.trim().split(/\s+/);
      return f.length >= 8 && f[1] === '00000000' && f[7] === '00000000' && (parseInt(f[3]!, 16) & 0x1) !== 0;
    });
}

/**
 * passt's address arguments for a host whose route table is `table`: none
 * when it has an IPv4 default route (passt copies that interface's, as
 * documented), PASST_NO_ROUTE_LAYOUT otherwise. `undefined` (the table could
 * not be read) leaves the choice to passt.
 */
export function passtAddressArgs(table: string | undefined): string[] {
  if (table === undefined || hasIpv4DefaultRoute(table)) return [];
  const l = PASST_NO_ROUTE_LAYOUT;
  return ['--interface', l.templateInterface, '--address', l.address, '--netmask', String(l.prefixLength), '--gateway', l.gateway, '--mac-addr', l.mac];
}

/**
 * The user passt runs as when started by root: passt itself drops from root
 * (in the initial user namespace) to "nobody", looked up by name, and exits
 * where no user database has one (a minimal container, the emulated arm64
 * KVM host: "getpwnam: No such file or directory"). Given numerically, no
 * lookup is needed; 65534 is nobody and nogroup on Debian, Fedora and Alpine.
 */
export const PASST_ROOT_RUNAS = '65534:65534';

/**
 * passt's --runas for a process with effective uid `euid` whose
 * /proc/self/uid_map reads `uidMap`: PASST_ROOT_RUNAS where passt would
 * switch to nobody (root, and the uid map is the initial namespace's
 * identity map), nothing otherwise (passt keeps the user; a uid 65534 that
 * a user namespace does not map could not be switched to).
 */
export function passtRunAsArgs(euid: number | undefined, uidMap: string | undefined): string[] {
  const initial = uidMap !== undefined && /^\s*0\s+0\s+4294967295\s*$/.test(uidMap);
  return euid === 0 && initial ? ['--runas', PASST_ROOT_RUNAS] : [];
}

function readProcFile(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'latin1');
  } catch {
    return undefined;
  }
}

export interface OpenPasstOptions {
  forward?: readonly PortForward[];
  /** The passt executable (name in PATH, or a path). Default "passt". */
  command?: string;
  /** Extra passt arguments, appended (e.g. ["--pcap", "/tmp/x.pcap"]). */
  extraArgs?: readonly string[];
}

export class PasstBackend implements NetBackend {
  readonly vnetHdr = false;
  readonly helper: HelperProcess;
  private readonly socket: Socket;
  private readonly decoder = new FrameDecoder();
  private readonly rx: Uint8Array[] = [];
  private rxHead = 0;
  private rxBytes = 0;
  private onReadable: (() => void) | undefined;
  /** The device has no receive buffers: keep queueing (up to the bound), do not call onReadable. */
  private readsPaused = false;
  /** The socket is paused because the queue is full. */
  private socketPaused = false;
  private scheduled = false;
  /** The socket is corked until the end of this turn: one drain of the transmit ring leaves in one writev. */
  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    if (!this.socket.destroyed) this.socket.uncork();
  };
  private closed = false;
  /** Why the backend stopped working, if it did (passt exited, the stream broke). */
  lastError: string | undefined;
  /** Called once when passt exits or the stream breaks while the backend is open. */
  onFailure: ((message: string) => void) | undefined;
  /** Frames handed to the device, frames sent to passt, and guest frames refused because the socket to passt was full. */
  readonly counters = { rxFrames: 0, txFrames: 0, txRefused: 0 };

  private constructor(helper: HelperProcess, socket: Socket) {
    this.helper = helper;
    this.socket = socket;
    helper.onUnexpectedExit = (message) => this.fail(message);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // The hang-up (or, when passt exits with our frames unread, ECONNRESET) usually comes just
    // before the exit: give the exit (with its status and stderr) a moment to be the reason.
    const afterExit = (otherwise: string) => setTimeout(() => this.fail(helper.exited ? helper.exitMessage() : otherwise), 200).unref();
    socket.on('error', (e) => afterExit(`the socket to ${helper.name} failed: ${e.message}`));
    socket.on('close', () => {
      if (!this.closed) afterExit(`${helper.name} (pid ${helper.pid ?? '?'}) closed its socket`);
    });
  }

  /**
   * Start passt for one NIC: the guest gets the host's addresses, or
   * PASST_NO_ROUTE_LAYOUT's where this network namespace has no IPv4 default
   * route; started by root, passt runs as PASST_ROOT_RUNAS. Throws a
   * one-sentence NodevmmError when passt is missing.
   */
  static open(opts: OpenPasstOptions = {}): PasstBackend {
    const args = [
      ...['--foreground', '--stderr', '--quiet', '--one-off', '--fd', '3', '--mtu', String(PASST_GUEST_MTU)],
      // This network namespace's IPv4 routes, the ones passt sees.
      ...passtAddressArgs(readProcFile('/proc/net/route')),
      ...passtRunAsArgs(process.geteuid?.(), readProcFile('/proc/self/uid_map')),
      ...passtForwardArgs(opts.forward ?? []),
      ...(opts.extraArgs ?? []),
    ];
    const helper = spawnHelper({ name: 'passt', command: opts.command ?? 'passt', args, installHint: 'apt-get install passt', extraStdio: ['pipe'] });
    return PasstBackend.attach(helper);
  }

  /** A backend on a helper already started with a 'pipe' at fd 3 that speaks the stream framing there (passt, or a test peer). */
  static attach(helper: HelperProcess): PasstBackend {
    const socket = helper.child.stdio[3] as Socket | null;
    if (!socket) {
      helper.kill();
      throw new NodevmmError('ERR_NET_USER', `${helper.name} could not be given its socket (no stdio pipe at fd 3)`);
    }
    return new PasstBackend(helper, socket);
  }

  /** Bytes of frames from passt waiting for the guest. */
  get queuedBytes(): number {
    return this.rxBytes;
  }

  /** Bytes waiting to be written to passt. */
  get unsentBytes(): number {
    return this.socket.writableLength;
  }

  private fail(message: string): void {
    if (this.closed || this.lastError) return;
    // passt sandboxes itself in a user namespace; say why the kernel may refuse that.
    if (/Couldn't create user namespace/.test(message)) message += ' (passt isolates itself in a user namespace: the kernel refuses one to a process in a chroot, and where user namespaces are disabled)';
    this.lastError = message;
    this.onFailure?.(message);
  }

  private onData(chunk: Buffer): void {
    let frames: Uint8Array[];
    try {
      frames = this.decoder.push(chunk);
    } catch (e) {
      this.fail(`${this.helper.name} sent a broken stream: ${(e as Error).message}`);
      this.socket.destroy();
      return;
    }
    for (const f of frames) {
      this.rx.push(f);
      this.rxBytes += f.length;
    }
    if (this.queuedFrames() >= RX_QUEUE_MAX_FRAMES || this.rxBytes >= RX_QUEUE_MAX_BYTES) {
      this.socketPaused = true;
      this.socket.pause();
    }
    this.deliver();
  }

  private queuedFrames(): number {
    return this.rx.length - this.rxHead;
  }

  /** Let the device take frames, now and again on the next turn while some remain. */
  private deliver(): void {
    if (this.readsPaused || this.closed || !this.onReadable || this.queuedFrames() === 0) return;
    const before = this.counters.rxFrames;
    this.onReadable();
    // Again on the next turn only if the device took frames (it stops at its batch size); one that took none has paused or waits for a kick.
    if (!this.readsPaused && this.counters.rxFrames > before && this.queuedFrames() > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.deliver();
      });
    }
  }

  readv(buffers: Uint8Array[]): number {
    if (this.queuedFrames() === 0) return -1;
    const frame = this.rx[this.rxHead]!;
    this.rx[this.rxHead++] = undefined as unknown as Uint8Array;
    if (this.rxHead > 256 && this.rxHead * 2 > this.rx.length) {
      this.rx.splice(0, this.rxHead);
      this.rxHead = 0;
    }
    this.rxBytes -= frame.length;
    this.counters.rxFrames++;
    if (this.socketPaused && this.rxBytes < RX_QUEUE_MAX_BYTES / 2 && this.queuedFrames() < RX_QUEUE_MAX_FRAMES / 2 && !this.closed) {
      this.socketPaused = false;
      this.socket.resume();
    }
    return copyFrameInto(frame, buffers);
  }

  writev(buffers: Uint8Array[]): number {
    if (this.closed || this.socket.destroyed) throw new Error(this.lastError ?? `the socket to ${this.helper.name} is closed`);
    if (this.socket.writableLength > TX_QUEUE_MAX_BYTES) {
      this.counters.txRefused++;
      return -1;
    }
    const frame = encodeFrame(buffers);
    if (frame.length - FRAME_HEADER_BYTES > MAX_FRAME_BYTES) throw new Error(`a ${frame.length - FRAME_HEADER_BYTES}-byte frame is larger than the ${MAX_FRAME_BYTES} bytes passt takes`);
    // Frames written in one turn (a drain of the guest's transmit ring) go out together: one
    // syscall and one wake-up of passt per drain instead of per frame.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    this.socket.write(frame);
    this.counters.txFrames++;
    return frame.length - FRAME_HEADER_BYTES;
  }

  watch(onReadable: () => void): void {
    if (this.closed) return;
    this.onReadable = onReadable;
  }

  pauseReads(): void {
    this.readsPaused = true;
  }

  resumeReads(): void {
    this.readsPaused = false;
    if (!this.scheduled && this.queuedFrames() > 0) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.deliver();
      });
    }
  }

  setOffloads(): void {
    // No virtio-net headers cross passt's socket: nothing to offload.
  }

  /** Close our end (passt exits on the hang-up) and stop passt; a second call does nothing. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onReadable = undefined;
    this.rx.length = 0;
    this.rxHead = 0;
    this.rxBytes = 0;
    this.socket.destroy();
    void this.helper.stop();
  }

  /** Resolves once passt is gone (after close()). */
  stopped(): Promise<void> {
    return this.helper.stop();
  }
}
