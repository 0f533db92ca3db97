/**
 * Loads the addon (build/Release when present, else the shipped
 * prebuilds/<platform>-<arch>/ through node-gyp-build) and describes its exact shape. Nothing else in lib/ touches the binding's
 * untyped surface. Native failures arrive as Errors carrying code/errno/
 * syscall/ioctl; `asKvmError` turns them into KvmError.
 */
import * as path from 'node:path';
import { constants as osConstants } from 'node:os';
import { HypervisorUnavailableError, KvmError, NodevmmError } from '../errors';
import type { SharedPageLayout } from './exit-mailbox';
import type { Route } from './route-table';
import type { X86Regs, X86Sregs, X86Msr } from './x86-state';

export interface NativeExit {
  type: 'hlt' | 'shutdown' | 'system-event' | 'fail-entry' | 'internal-error' | 'debug' | 'pio' | 'mmio' | 'unknown';
  rawReason: number;
  subtype: number;
  detail: bigint[];
  address?: bigint;
  size?: number;
  isWrite?: boolean;
}

export interface NativeEvent {
  vcpu: number;
  type: 'paused' | 'exited';
  exit?: NativeExit;
}

/** A route as setRoutes takes it (route-table.ts defines it: the neutral core builds them). */
export type NativeRoute = Route;

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export interface NativeGuestRam {
  readonly size: number;
  /** The memfd behind the mapping when made `shared` (another process may map it: vhost-user); -1 otherwise and once released. */
  readonly fd: number;
  /** Where this process maps the RAM (vhost's memory table wants it); 0n once released. */
  readonly hostAddress: bigint;
  views(maxViewSize?: number): ArrayBuffer[];
  /** One view of [offset, offset+length), made now (guest_ram.cc View). */
  view(offset: number, length: number): ArrayBuffer;
  release(): void;
  advise(what: 'dontneed' | 'hugepage', offset?: number, length?: number): void;
  /** The RAM into regular file `fd` from offset 0, sized to the RAM, zero pages left as holes; returns the bytes written. */
  writeTo(fd: number): number;
}

/** native/vcpu_thread.cc's face, the same on every backend: the shared page and the thread's lifecycle. */
export interface NativeVcpuThread {
  sharedBuffer(): ArrayBuffer;
  start(): void;
  resume(): void;
  pause(): void;
  stop(): void;
  /** Wake the thread if it sleeps waiting for JS's answer (JS moved the mailbox itself). */
  completeExit(): void;
}

/** The x86 vCPU handle both native backends give (native/kvm_vcpu.cc, native/whp_vcpu.cc). */
export interface NativeX86Vcpu extends NativeVcpuThread {
  readonly state: 'created' | 'paused' | 'running' | 'exited' | 'joined' | 'destroyed';
  getRegs(): X86Regs;
  setRegs(regs: Partial<X86Regs>): void;
  getSregs(): X86Sregs;
  setSregs(sregs: Partial<X86Sregs>): void;
  getMsrs(indices: number[]): X86Msr[];
  /** How many were set, in order: stops at the first MSR the hypervisor refuses. */
  setMsrs(msrs: X86Msr[]): number;
  /** The first 1 KiB of the local APIC page (KVM_GET_LAPIC's layout). */
  getLapic(): Uint8Array;
  translate(linear: bigint | number): { gpa: bigint; valid: boolean; writeable: boolean; usermode: boolean };
}

export interface NativeVcpu extends NativeX86Vcpu {
  getFpu(): Uint8Array;
  setFpu(fpu: Uint8Array): void;
  setLapic(lapic: Uint8Array): void;
  getXcrs(): { xcr: number; value: bigint }[];
  setXcrs(xcrs: { xcr: number; value: bigint }[]): void;
  getVcpuEvents(): Uint8Array;
  setVcpuEvents(ev: Uint8Array): void;
  getMpState(): number;
  setMpState(state: number): void;
  setCpuid2(entries: CpuidEntry[]): void;
  getCpuid2(): CpuidEntry[];
  /** The XSAVE area (KVM_GET_XSAVE2's size when the kernel has it, else 4096 bytes). */
  getXsave(): Uint8Array;
  setXsave(xsave: Uint8Array): void;
  /** struct kvm_debugregs (128 bytes). */
  getDebugRegs(): Uint8Array;
  setDebugRegs(regs: Uint8Array): void;
  /** KVM_GET_TSC_KHZ; 0 when KVM cannot say. */
  getTscKhz(): number;
  setGuestDebug(opts: { enable?: boolean; singlestep?: boolean; swBreakpoints?: boolean }): void;
}

export interface NativeVm {
  readonly fd: number;
  checkExtension(cap: number): number;
  setTssAddr(addr: number): void;
  setIdentityMapAddr(addr: number): void;
  createIrqchip(): void;
  /** KVM_ENABLE_CAP on the VM fd with up to four args. */
  enableCap(cap: number, args?: number[]): void;
  createPit2(flags?: number): void;
  /** KVM_GET_CLOCK / KVM_SET_CLOCK (x86): the guest's kvmclock in ns. */
  getClock(): bigint;
  setClock(ns: bigint): void;
  /** struct kvm_irqchip (520 bytes) of chip 0 (PIC master), 1 (PIC slave) or 2 (IOAPIC). */
  getIrqchip(chip: number): Uint8Array;
  /** Puts one back; its chip_id field says which. */
  setIrqchip(state: Uint8Array): void;
  /** struct kvm_pit_state2 (112 bytes). */
  getPit2(): Uint8Array;
  setPit2(state: Uint8Array): void;
  irqLine(irq: number, level: boolean): void;
  setGsiRouting(entries: ({ gsi: number; type: 'irqchip'; irqchip: number; pin: number } | { gsi: number; type: 'msi'; addressLo: number; addressHi: number; data: number })[]): void;
  signalMsi(address: bigint | number, data: number): number;
  irqfd(fd: number, gsi: number, opts?: { resampleFd?: number; deassign?: boolean }): void;
  ioeventfd(fd: number, address: bigint | number, length: number, opts?: { pio?: boolean; datamatch?: bigint | number; deassign?: boolean }): void;
  /**
   * KVM_SET_USER_MEMORY_REGION; size 0 deletes the slot. With `background`, a new slot of a VM
   * whose vCPUs have not started is set on the thread pool and a Promise is returned (a vCPU's
   * start, destroy and every other slot change wait for it, and a vCPU's start throws its failure).
   */
  setUserMemoryRegion(slot: number, gpa: number, ram: NativeGuestRam | null, offset: number, size: number, opts?: { readonly?: boolean; logDirty?: boolean; background?: boolean }): void | Promise<void>;
  createVcpu(index: number): NativeVcpu;
  setRoutes(routes: NativeRoute[]): void;
  controlBuffer(): ArrayBuffer;
  setNotify(fn: () => void): void;
  takeEvents(): NativeEvent[];
  ref(): void;
  unref(): void;
  destroy(): void;
}

/** native/vhost.cc: the /dev/vhost-vsock ioctls, on the fd open() returned (closed with closeFd). */
export interface NativeVhost {
  open(path?: string): number;
  setOwner(fd: number): void;
  getFeatures(fd: number): bigint;
  setFeatures(fd: number, features: bigint): void;
  setMemTable(fd: number, regions: Array<{ gpa: number | bigint; size: number | bigint; userAddr: number | bigint }>): void;
  setVringNum(fd: number, index: number, num: number): void;
  setVringBase(fd: number, index: number, num: number): void;
  getVringBase(fd: number, index: number): number;
  setVringAddr(fd: number, index: number, addr: { desc: bigint | number; avail: bigint | number; used: bigint | number }): void;
  setVringKick(fd: number, index: number, eventfd: number): void;
  setVringCall(fd: number, index: number, eventfd: number): void;
  vsockSetGuestCid(fd: number, cid: bigint | number): void;
  vsockSetRunning(fd: number, running: boolean): void;
}

/** native/fd_watcher.cc: a libuv poll watcher; open ones keep the loop alive until close(). */
export interface NativeFdWatcher {
  readonly closed: boolean;
  /** Change what to wait for; both false pauses the watcher. */
  set(events: { readable?: boolean; writable?: boolean }): void;
  /** Let the process exit while this watcher is open (like socket.unref()). */
  unref(): void;
  /** Stop watching; a second call does nothing. Close before closing the fd. */
  close(): void;
}

/** The shared pages' offsets as the addon reports them (exit-mailbox.ts checks them). */
export type NativeLayout = SharedPageLayout;

/** native/whp_vcpu.cc: a WHP vCPU (registers in KVM's shapes, the thread controls). */
/** WHP's vCPU handle: the x86 registers only (WHP keeps the rest itself). */
export type NativeWhpVcpu = NativeX86Vcpu;

/** WHV_INTERRUPT_CONTROL: type 0 fixed, 1 lowest priority, 4 NMI, 5 INIT, 6 SIPI; destinationMode 0 physical, 1 logical; triggerMode 0 edge, 1 level. */
export interface WhpInterrupt {
  type: number;
  destinationMode: number;
  triggerMode: number;
  destination: number;
  vector: number;
}

/** native/whp_vm.cc: a WHP partition, created and set up by its constructor. */
export interface NativeWhpPartition {
  mapGpaRange(gpa: number, ram: NativeGuestRam, readonly: boolean): void;
  createVcpu(index: number): NativeWhpVcpu;
  requestInterrupt(interrupt: WhpInterrupt): void;
  /** MSR accesses WHP does not implement, answered natively (reads 0, writes dropped). */
  msrCounts(): { readsIgnored: bigint; writesIgnored: bigint };
  setRoutes(routes: NativeRoute[]): void;
  controlBuffer(): ArrayBuffer;
  setNotify(fn: () => void): void;
  takeEvents(): NativeEvent[];
  ref(): void;
  unref(): void;
  destroy(): void;
}

export interface WhpPartitionNativeOptions {
  processorCount: number;
  /** WHV_X64_LOCAL_APIC_EMULATION_MODE: 0 none, 1 xAPIC, 2 x2APIC. */
  apic: 0 | 1 | 2;
  /** Exit on MSRs WHP does not implement (answered natively) instead of a #GP in the guest. */
  msrExits: boolean;
  /** Exceptions (bit = vector) that exit instead of reaching the guest. */
  exceptionBitmap?: number;
  /** CPUID answers that replace WHP's (index 0xffffffff: any subleaf); each function listed exits. */
  cpuidOverrides?: CpuidEntry[];
}

/** The Windows build of the addon (native/addon.cc under _WIN32). */
export interface NativeWhpBinding {
  backend: 'whp';
  arch: 'x86_64' | 'aarch64' | 'unknown';
  probe(): { ok: true } | { ok: false; code: string; message: string };
  hostCpuid(leaf: number, subleaf?: number): { eax: number; ebx: number; ecx: number; edx: number };
  GuestRam: new (size: number, opts?: { name?: string }) => NativeGuestRam;
  WhpPartition: new (opts: WhpPartitionNativeOptions) => NativeWhpPartition;
  layout(): NativeLayout;
}

export interface NativeBinding {
  backend: 'kvm';
  arch: 'x86_64' | 'aarch64' | 'unknown';
  probe(): { ok: true; apiVersion: number; vcpuMmapSize: number } | { ok: false; code: string; message: string };
  checkExtension(cap: number): number;
  getSupportedCpuid(): CpuidEntry[];
  getMsrIndexList(): number[];
  eventfd(initial?: number): number;
  eventfdWrite(fd: number, value?: number | bigint): void;
  eventfdRead(fd: number): number;
  closeFd(fd: number): void;
  /**
   * native/crash_report.cc: on SIGSEGV/SIGBUS/SIGILL/SIGFPE write the faulting thread, pc,
   * fault address and a native backtrace to stderr, then die as before. True the first time.
   */
  installCrashReport(): boolean;
  /** Attach to (or create) TAP `name` via /dev/net/tun: IFF_TAP | IFF_NO_PI (+ IFF_VNET_HDR), O_NONBLOCK | O_CLOEXEC. */
  openTap(name: string, opts: { vnetHdr: boolean; vnetHdrSize?: number }): { fd: number; name: string };
  /** TUNSETOFFLOAD with TUN_F_* bits. */
  tapSetOffload(fd: number, flags: number): void;
  /** readv(2): bytes read, or -1 when nothing is waiting (EAGAIN). */
  fdReadv(fd: number, buffers: Uint8Array[]): number;
  /** writev(2): bytes written, or -1 when the fd would block (EAGAIN). */
  fdWritev(fd: number, buffers: Uint8Array[]): number;
  /**
   * native/block_io.cc: op 0 preadv into guest pages (zeros past end of file),
   * 1 pwritev from them, 2 fdatasync; `segments` holds (index into rams,
   * offset, length) triples. The callback runs on the event loop.
   */
  blockIo(op: 0 | 1 | 2, fd: number, position: number, rams: NativeGuestRam[], segments: Float64Array, callback: (error: Error | null, bytes: number) => void): void;
  /** The same read or write on this thread; with `nowait` a try: -1 would block, -2 the file cannot promise not to. */
  blockIoNow(op: 0 | 1, fd: number, position: number, rams: NativeGuestRam[], segments: Float64Array, nowait: boolean): number;
  /** native/file_ops.cc: BLKGETSIZE64 on a block device fd. */
  blockDeviceSize(fd: number): bigint;
  /** F_OFD_SETLK over the whole file: type 0 unlock, 1 shared, 2 exclusive; false when a conflicting lock is held elsewhere. */
  ofdLock(fd: number, type: 0 | 1 | 2): boolean;
  /** F_OFD_GETLK: the type of a lock held elsewhere that would block `type` (0 none, 1 shared, 2 exclusive). */
  ofdLockConflict(fd: number, type: 1 | 2): 0 | 1 | 2;
  vhost: NativeVhost;
  /** callback(status, readable, writable): status 0 or a negative errno. */
  watchFd(fd: number, events: { readable?: boolean; writable?: boolean }, callback: (status: number, readable: boolean, writable: boolean) => void): NativeFdWatcher;
  /** native/vsock_socket.cc: AF_VSOCK stream sockets, non-blocking. */
  vsockConnect(cid: number, port: number): number;
  vsockListen(port: number, cid?: number, backlog?: number): number;
  vsockAccept(fd: number): { fd: number; cid: number; port: number } | null;
  /** The pending SO_ERROR as an errno name, or null. */
  socketError(fd: number): string | null;
  /** Bytes read, 0 at end of stream, -1 when nothing is there yet. */
  socketRead(fd: number, into: Uint8Array): number;
  /** Bytes written (maybe fewer than given), -1 when the socket is full. */
  socketWrite(fd: number, bytes: Uint8Array): number;
  socketShutdownWrite(fd: number): void;
  /** native/unix_socket.cc: a connected AF_UNIX stream socket (non-blocking, close-on-exec). */
  unixConnect(path: string): number;
  /** sendmsg(2) of all of `bytes`, `fds` as SCM_RIGHTS; waits up to timeoutMs for room (ETIMEDOUT). */
  unixSendmsg(fd: number, bytes: Uint8Array, fds: readonly number[], timeoutMs: number): number;
  /** One recvmsg(2) once readable (up to timeoutMs, then ETIMEDOUT): bytes 0 means the peer closed; received fds are the caller's. */
  unixRecvmsg(fd: number, into: Uint8Array, timeoutMs: number): { bytes: number; fds: number[] };
  /**
   * Guest RAM of `size` bytes, 2 MiB aligned (native/guest_ram.cc): private anonymous memory;
   * with `shared`, a memfd mapped shared instead (its `fd` another process can map); with
   * `privateFile`, that file mapped private (copy-on-write).
   */
  GuestRam: new (size: number, opts?: { name?: string; privateFile?: number; shared?: boolean }) => NativeGuestRam;
  Vm: new (type?: number) => NativeVm;
  layout(): NativeLayout;
  /** VM fds a destroy handed to closer threads (native/deferred_close.h) that are not closed yet. */
  pendingCloses(): number;
}

let cached: NativeBinding | undefined;
let loadError: Error | undefined;

/** The Windows addon (WHP), loaded once; throws on a KVM build. */
export function whpBinding(): NativeWhpBinding {
  const b = nativeBinding() as unknown as NativeWhpBinding | NativeBinding;
  if (b.backend !== 'whp') throw new HypervisorUnavailableError('ERR_NATIVE_ADDON', `the nodevmm addon here was built for ${b.backend}, not for Windows Hypervisor Platform`);
  return b;
}

/** The addon, loaded once. Throws HypervisorUnavailableError when it cannot be loaded. */
export function nativeBinding(): NativeBinding {
  if (cached) return cached;
  if (loadError) throw loadError;
  try {
    const root = path.resolve(__dirname, '..', '..', '..');
    // A local build (`npm run build:native`) is what node-gyp-build would pick first; loading it
    // directly skips node-gyp-build's folder scans (~1.3 ms of CLI start-up, docs/benchmarks.md).
    try {
      cached = require(path.join(root, 'build', 'Release', 'nodevmm.node')) as NativeBinding;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw e;
    }
    // No local build: node-gyp-build picks prebuilds/<platform>-<arch>/, which the npm package ships (scripts/prebuilds.sh).
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    cached ??= (require('node-gyp-build') as (dir: string) => NativeBinding)(root);
    // NODEVMM_CRASH_REPORT=1: a native fault prints its thread and backtrace before the process dies
    // (the e2e-arm64 tier sets it: its emulated host keeps no debugger at hand).
    if (process.env.NODEVMM_CRASH_REPORT === '1') cached.installCrashReport?.();
    return cached;
  } catch (e) {
    loadError = new HypervisorUnavailableError(
      'ERR_NATIVE_ADDON',
      `the nodevmm native addon could not be loaded (${(e as Error).message.split(/\r?\n/)[0]}); run npm install (or npm run build:native) on this machine`,
    );
    throw loadError;
  }
}

/**
 * Call `onReadable` on the event loop whenever `fd` is readable (level-triggered,
 * like poll(2)); `onReadable(errnoName)` once per poll error. The watcher never
 * keeps the process alive on its own; close() it when done (twice is harmless).
 */
export function watchReadable(fd: number, onReadable: (error?: string) => void): ReadableWatcher {
  const w = nativeBinding().watchFd(fd, { readable: true }, (status) => onReadable(status < 0 ? errnoName(-status) : undefined));
  w.unref();
  return {
    pause: () => w.set({}),
    resume: () => {
      if (!w.closed) w.set({ readable: true });
    },
    close: () => w.close(),
  };
}

/** A readability watcher that can pause (no room for what the fd has) and resume. */
export interface ReadableWatcher {
  pause(): void;
  resume(): void;
  /** Stop for good; a second call does nothing. Close before closing the fd. */
  close(): void;
}

function errnoName(errno: number): string {
  for (const [name, n] of Object.entries(osConstants.errno)) if (n === errno) return name;
  return `errno ${errno}`;
}

/** Convert an error thrown by the addon into our typed errors. */
export function asKvmError(e: unknown): Error {
  if (e instanceof NodevmmError) return e;
  if (e instanceof Error) {
    const ne = e as Error & { code?: string; errno?: number; syscall?: string; ioctl?: string };
    if (typeof ne.errno === 'number' && ne.syscall) {
      const opts: { code: string; errno: number; syscall: string; ioctl?: string } = { code: ne.code ?? 'EUNKNOWN', errno: ne.errno, syscall: ne.syscall };
      if (ne.ioctl) opts.ioctl = ne.ioctl;
      return new KvmError(ne.message, opts);
    }
    if (ne.code) return new NodevmmError(ne.code, ne.message);
  }
  return e as Error;
}

/** Run a native call, rethrowing its failure as a typed error. */
export function native<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw asKvmError(e);
  }
}
