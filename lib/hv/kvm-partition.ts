/**
 * The KVM x86_64 backend: the shared KVM VM (kvm-backend.ts) plus the
 * in-kernel LAPIC/IOAPIC/PIC and PIT (or, with irqchip 'userspace', only the
 * LAPICs: KVM_CAP_SPLIT_IRQCHIP), the private pages Intel VMX needs, the
 * adjusted CPUID on every vCPU, kvmclock frozen across a pause, and the x86
 * registers of each vCPU. Everything else a partition does is the neutral
 * core's (partition-core.ts).
 */
import { NodevmmError } from '../errors';
import type { GuestMemory } from '../memory/guest-memory';
import { hex } from '../util/bytes';
import type { StopSite } from './backend';
import { adjustCpuid } from './cpuid';
import { EXIT_KIND_EOI, EXIT_KIND_PIO } from './exit-mailbox';
import { KvmBackend, KvmVcpuRunner, openKvmVm, type KvmVm } from './kvm-backend';
import { native, nativeBinding, type CpuidEntry, type NativeBinding, type NativeVcpu, type NativeVm } from './native';
import { PartitionCore } from './partition-core';
import type { LocalApicBus, PendingExit, X86Irqchip, X86MsiMessage, X86Partition, X86VirtualProcessor } from './partition';
import type { X86Msr, X86Regs, X86Sregs } from './x86-state';

export type { FileIoMode } from './partition';

export interface KvmPartitionOptions {
  vcpus: number;
  /**
   * true or 'kernel' (default): in-kernel LAPIC/IOAPIC/PIC (KVM_CREATE_IRQCHIP).
   * 'userspace': in-kernel LAPICs only (KVM_CAP_SPLIT_IRQCHIP); the IOAPIC,
   * PIC and PIT are the caller's, reached through `localApicBus`.
   * false: no interrupt controller at all (HLT exits to userspace).
   */
  irqchip?: boolean | X86Irqchip;
  /** IOAPIC pins (GSIs) KVM keeps for the userspace IOAPIC's routes with irqchip 'userspace'. Default 24 (an 82093AA). */
  ioapicPins?: number;
  /** In-kernel PIT (KVM_CREATE_PIT2) with the in-kernel irqchip. Default true. */
  pit?: boolean;
  /** GPA of the 3-page TSS area Intel VMX needs below 4 GiB; must not be RAM. Required with the irqchip (the machine's layout names it: KVM_TSS_START). */
  tssAddress?: number;
  /** GPA of the identity-map page Intel VMX needs for real mode; must not be RAM. Required with the irqchip (KVM_IDENTITY_MAP_START). */
  identityMapAddress?: number;
  /** Set the adjusted supported CPUID on every vCPU. Default true. */
  cpuid?: boolean;
  /** See DEFAULT_DISPATCH_SPIN_US (partition-core.ts); 0 turns polling off. */
  dispatchSpinUs?: number;
}

/** include/uapi/linux/kvm.h */
const KVM_CAP_TSC_DEADLINE_TIMER = 72;
const KVM_CAP_SPLIT_IRQCHIP = 121;
const DEFAULT_IOAPIC_PINS = 24;

let cpuidCache: CpuidEntry[] | undefined;
/** KVM_GET_SUPPORTED_CPUID answers the same for the life of the process: ask once. */
export function supportedCpuid(binding: NativeBinding = nativeBinding()): CpuidEntry[] {
  cpuidCache ??= native(() => binding.getSupportedCpuid());
  return cpuidCache;
}

/** An x86 vCPU's registers and its pending exit. */
export class KvmX86Vcpu implements X86VirtualProcessor {
  constructor(
    readonly index: number,
    readonly runner: KvmVcpuRunner,
  ) {}
  private get native(): NativeVcpu {
    return this.runner.native;
  }
  get state(): string {
    return this.native.state;
  }
  pendingExit(): PendingExit | undefined {
    const sh = this.runner.shared;
    if (!sh.pending) return undefined;
    const kind = sh.kind === EXIT_KIND_PIO ? 'port' : sh.kind === EXIT_KIND_EOI ? 'eoi' : 'mmio';
    return { kind, write: !!sh.isWrite, size: sh.size, address: Number(sh.address) };
  }
  getRegs(): X86Regs {
    return native(() => this.native.getRegs());
  }
  setRegs(regs: Partial<X86Regs>): void {
    native(() => this.native.setRegs(regs));
  }
  getSregs(): X86Sregs {
    return native(() => this.native.getSregs());
  }
  setSregs(sregs: Partial<X86Sregs>): void {
    native(() => this.native.setSregs(sregs));
  }
  getMsrs(indices: number[]): X86Msr[] {
    return native(() => this.native.getMsrs(indices));
  }
  /** Sets every MSR or throws naming the first one KVM refused. */
  setMsrs(msrs: X86Msr[]): void {
    const n = native(() => this.native.setMsrs(msrs));
    if (n !== msrs.length) {
      const bad = msrs[n]!;
      throw new NodevmmError('ERR_KVM_MSR', `kvm refused msr ${hex(bad.index)} = ${hex(bad.value)} on vcpu ${this.index}`);
    }
  }
  getMpState(): number {
    return native(() => this.native.getMpState());
  }
  setMpState(state: number): void {
    native(() => this.native.setMpState(state));
  }
  getFpu(): Uint8Array {
    return native(() => this.native.getFpu());
  }
  setFpu(fpu: Uint8Array): void {
    native(() => this.native.setFpu(fpu));
  }
  getLapic(): Uint8Array {
    return native(() => this.native.getLapic());
  }
  setLapic(l: Uint8Array): void {
    native(() => this.native.setLapic(l));
  }
  getXcrs(): { xcr: number; value: bigint }[] {
    return native(() => this.native.getXcrs());
  }
  setXcrs(x: { xcr: number; value: bigint }[]): void {
    native(() => this.native.setXcrs(x));
  }
  getVcpuEvents(): Uint8Array {
    return native(() => this.native.getVcpuEvents());
  }
  setVcpuEvents(e: Uint8Array): void {
    native(() => this.native.setVcpuEvents(e));
  }

  /** RIP and, where the page is RAM, the 15 bytes there (a failed emulation names its instruction). */
  stopSite(memory: GuestMemory): StopSite {
    const rip = this.getRegs().rip;
    const site: StopSite = { at: `rip ${hex(rip)}`, rip };
    try {
      const t = this.native.translate(this.getSregs().cs.base + rip);
      if (t.valid && memory.isRam(Number(t.gpa), 15)) site.instructionBytes = memory.read(Number(t.gpa), 15);
    } catch {
      // the bytes are best effort too
    }
    return site;
  }
}

/** Irqchip, PIT, VMX pages and CPUID on a fresh VM; its vCPUs. */
function kvmX86Backend(opts: KvmPartitionOptions): KvmBackend<KvmX86Vcpu> {
  const mode = irqchipMode(opts.irqchip);
  const irqchip = mode !== 'none';
  const { tssAddress, identityMapAddress } = opts;
  const kvm: KvmVm = openKvmVm(opts.vcpus);
  const { vm, binding } = kvm;
  try {
    // The hypervisor chooses no guest addresses: the machine's layout does (arch/x86_64/layout.ts).
    if (irqchip && (tssAddress === undefined || identityMapAddress === undefined)) {
      throw new NodevmmError('ERR_INVALID_ARG', 'an x86 partition with the in-kernel irqchip needs tssAddress and identityMapAddress (pages outside RAM below 4 GiB that KVM keeps for Intel VMX; arch/x86_64/layout.ts names them)');
    }
    if (irqchip) {
      native(() => vm.setTssAddr(tssAddress!));
      native(() => vm.setIdentityMapAddr(identityMapAddress!));
    }
    if (mode === 'kernel') {
      native(() => vm.createIrqchip());
      if (opts.pit ?? true) native(() => vm.createPit2(0));
    } else if (mode === 'userspace') {
      const pins = opts.ioapicPins ?? DEFAULT_IOAPIC_PINS;
      if (!Number.isInteger(pins) || pins < 1 || pins > 256) throw new NodevmmError('ERR_INVALID_ARG', `ioapicPins ${pins} must be an integer from 1 to 256`);
      if (native(() => vm.checkExtension(KVM_CAP_SPLIT_IRQCHIP)) <= 0) {
        throw new NodevmmError('ERR_KVM_CAP', "this host's KVM lacks KVM_CAP_SPLIT_IRQCHIP (Linux 4.5+), which irqchip 'userspace' needs: use irqchip 'kernel'");
      }
      // Before any vCPU exists (api.rst 7.8): KVM keeps `pins` GSIs for the userspace IOAPIC's routes.
      native(() => vm.enableCap(KVM_CAP_SPLIT_IRQCHIP, [pins]));
    }
    const cpuid = opts.cpuid ?? true ? supportedCpuid(binding) : undefined;
    const tscDeadline = irqchip && native(() => vm.checkExtension(KVM_CAP_TSC_DEADLINE_TIMER)) > 0;
    const vcpus: KvmX86Vcpu[] = [];
    for (let i = 0; i < opts.vcpus; i++) {
      const nv = native(() => vm.createVcpu(i));
      if (cpuid) native(() => nv.setCpuid2(adjustCpuid(cpuid, i, opts.vcpus, { tscDeadline })));
      vcpus.push(new KvmX86Vcpu(i, new KvmVcpuRunner(nv, kvm.ringEntries)));
    }
    return new KvmBackend(kvm, {
      vcpus,
      runners: vcpus.map((v) => v.runner),
      // kvmclock (KVM_GET/SET_CLOCK) needs the in-kernel irqchip.
      clock: irqchip ? { get: () => native(() => vm.getClock()), set: (ns) => native(() => vm.setClock(ns)) } : undefined,
      irqLine: (irq, level) => native(() => vm.irqLine(irq, level)),
      stopSite: (i, memory) => vcpus[i]!.stopSite(memory),
    });
  } catch (e) {
    vm.destroy();
    throw e;
  }
}

function irqchipMode(irqchip: KvmPartitionOptions['irqchip']): X86Irqchip | 'none' {
  if (irqchip === undefined || irqchip === true || irqchip === 'kernel') return 'kernel';
  if (irqchip === false) return 'none';
  if (irqchip === 'userspace') return 'userspace';
  throw new NodevmmError('ERR_INVALID_ARG', `irqchip ${JSON.stringify(irqchip)} must be 'kernel', 'userspace', true or false`);
}

/** An x86_64 partition on KVM. */
export class KvmPartition extends PartitionCore<KvmX86Vcpu, KvmBackend<KvmX86Vcpu>> implements X86Partition {
  readonly localApicBus: LocalApicBus | undefined;

  constructor(opts: KvmPartitionOptions) {
    super(kvmX86Backend(opts), opts.dispatchSpinUs);
    if (irqchipMode(opts.irqchip) === 'userspace') this.localApicBus = new KvmLocalApicBus(this, (fn) => this.setEoiHandler(fn));
  }

  /** Raw access for advanced users (irqfd, ioeventfd, GSI routing, MSI). */
  get nativeVm(): NativeVm {
    this.assertAlive('use');
    return this.backend.vm;
  }
}

/**
 * The split irqchip's side of a userspace IOAPIC: KVM_SIGNAL_MSI for each
 * interrupt, and the pins' messages as MSI routes of GSIs 0..pins-1
 * (KVM_SET_GSI_ROUTING), which is how KVM learns the vectors whose EOIs it
 * must exit for (KVM_EXIT_IOAPIC_EOI, api.rst) and where irqfds on those
 * GSIs deliver.
 */
class KvmLocalApicBus implements LocalApicBus {
  constructor(
    private readonly partition: KvmPartition,
    private readonly setEoi: (fn: (vector: number) => void) => void,
  ) {}
  signalMsi(m: X86MsiMessage): void {
    if (this.partition.destroyed) return;
    // 0: the message was blocked (e.g. the guest's APIC is disabled), as on hardware.
    native(() => this.partition.nativeVm.signalMsi(m.address, m.data));
  }
  setPinRoutes(routes: ReadonlyArray<X86MsiMessage | undefined>): void {
    if (this.partition.destroyed) return;
    const entries: { gsi: number; type: 'msi'; addressLo: number; addressHi: number; data: number }[] = [];
    routes.forEach((m, gsi) => m && entries.push({ gsi, type: 'msi', addressLo: m.address >>> 0, addressHi: 0, data: m.data >>> 0 }));
    native(() => this.partition.nativeVm.setGsiRouting(entries));
  }
  onEoi(fn: (vector: number) => void): void {
    this.setEoi(fn);
  }
}
