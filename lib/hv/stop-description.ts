/**
 * One sentence (and the fields behind it) for why a vCPU left its run loop.
 * The backend decodes its exit and says where the vCPU was; the wording is
 * the same for every backend.
 */
import { hex } from '../util/bytes';
import type { StopSite, VcpuExit } from './backend';
import type { VcpuStop } from './partition';

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
