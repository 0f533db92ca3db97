/**
 * One sentence (and the fields behind it) for why a vCPU left its run loop.
 * The backend decodes its exit and says where the vCPU was; the wording is
 * the same for every backend, and so is how an x86 vCPU of any backend (KVM,
 * WHP) tells where it is: its pending exit and its instruction.
 */
import type { GuestMemory } from '../memory/guest-memory';
import { hex } from '../util/bytes';
import type { StopSite, VcpuExit } from './backend';
import { EXIT_KIND_EOI, EXIT_KIND_PIO, type VcpuSharedView } from './exit-mailbox';
import type { PendingExit, VcpuStop, X86VirtualProcessor } from './partition';

/** The exit a vCPU's mailbox holds for JS, if any. */
export function pendingExitOf(sh: VcpuSharedView): PendingExit | undefined {
  if (!sh.pending) return undefined;
  const kind = sh.kind === EXIT_KIND_PIO ? 'port' : sh.kind === EXIT_KIND_EOI ? 'eoi' : 'mmio';
  return { kind, write: !!sh.isWrite, size: sh.size, address: Number(sh.address) };
}

/**
 * An x86 vCPU's RIP and, where the page is RAM, the 15 bytes there (a failed
 * emulation names its instruction); `translate` is the backend's
 * linear-to-guest-physical walk.
 */
export function x86StopSite(vcpu: Pick<X86VirtualProcessor, 'getRegs' | 'getSregs'>, translate: (linear: bigint) => { gpa: bigint; valid: boolean }, memory: GuestMemory): StopSite {
  const rip = vcpu.getRegs().rip;
  const site: StopSite = { at: `rip ${hex(rip)}`, rip };
  try {
    const t = translate(vcpu.getSregs().cs.base + rip);
    if (t.valid && memory.isRam(Number(t.gpa), 15)) site.instructionBytes = memory.read(Number(t.gpa), 15);
  } catch {
    // the bytes are best effort too
  }
  return site;
}

export interface StopWords {
  /** The hypervisor ('kvm'). */
  name: string;
  /** Its run call ('KVM_RUN'). */
  runCall: string;
  systemEvent(subtype: number): NonNullable<VcpuStop['systemEvent']>;
  /** What the run call's failure code means ("HRESULT 0x80370102"); default "errno N". */
  runFailure?(code: bigint): string;
}

/** Internal-error suberror 1: the hypervisor could not emulate an instruction (KVM_INTERNAL_ERROR_EMULATION). */
const SUBERROR_EMULATION = 1;
/** Internal-error suberror the native run loop uses when the run call itself failed. */
const SUBERROR_RUN_FAILED = 0xffff;

export function describeStop(vcpu: number, exit: VcpuExit, site: StopSite | undefined, words: StopWords): VcpuStop {
  const at = site ? ` at ${site.at}` : '';
  const stop = (s: Omit<VcpuStop, 'vcpu' | 'detail'>): VcpuStop => {
    const out: VcpuStop = { vcpu, detail: exit.detail, ...s };
    if (site?.rip !== undefined) out.rip = site.rip;
    if (site?.instructionBytes) out.instructionBytes = site.instructionBytes;
    return out;
  };
  switch (exit.type) {
    case 'hlt':
      return stop({ kind: 'hlt', message: `vcpu ${vcpu} halted${at}` });
    case 'shutdown':
      return stop({ kind: 'triple-fault', message: `vcpu ${vcpu} triple-faulted${at}` });
    case 'system-event': {
      const se = words.systemEvent(exit.subtype);
      return stop({ kind: 'system-event', systemEvent: se, message: `vcpu ${vcpu} raised system event ${se}` });
    }
    case 'fail-entry':
      return stop({ kind: 'fail-entry', message: `${words.name} could not enter vcpu ${vcpu}: hardware entry failure reason ${hex(exit.detail[0] ?? 0n)}` });
    case 'internal-error': {
      const what =
        exit.subtype === SUBERROR_EMULATION ? 'instruction emulation failed' : exit.subtype === SUBERROR_RUN_FAILED ? `${words.runCall} failed with ${words.runFailure ? words.runFailure(exit.detail[0] ?? 0n) : `errno ${exit.detail[0]}`}` : `${words.name} internal error (suberror ${exit.subtype})`;
      const bytes = site?.instructionBytes;
      const ib = bytes ? ` (instruction bytes ${Buffer.from(bytes).toString('hex').replace(/(..)/g, '$1 ').trim()})` : '';
      return stop({ kind: 'internal-error', suberror: exit.subtype, message: `vcpu ${vcpu}: ${what}${at}${ib}` });
    }
    case 'debug':
      return stop({ kind: 'debug', message: `vcpu ${vcpu} stopped for a debug exception${at}` });
    default:
      return stop({ kind: 'unknown', message: `vcpu ${vcpu} stopped with unhandled ${words.name} exit reason ${exit.rawReason}${at}` });
  }
}

/** A host bug while handling a guest access (a device threw): the stop every running vCPU gets. */
export function hostErrorStop(vcpu: number, error: Error): VcpuStop {
  return { vcpu, kind: 'host-error', message: `host error while handling a guest access: ${error.message}`, error };
}
