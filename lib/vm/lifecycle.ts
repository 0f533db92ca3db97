/**
 * The VM state machine in one table. Methods check it before acting, so a
 * call in the wrong state fails with VmStateError naming state and action.
 */
import { VmStateError } from '../errors';

export type VmState = 'created' | 'starting' | 'running' | 'paused' | 'stopping' | 'stopped';
export type VmAction = 'start' | 'pause' | 'resume' | 'reset' | 'shutdown' | 'kill' | 'exec';

const ALLOWED: Record<VmAction, readonly VmState[]> = {
  start: ['created'],
  pause: ['running'],
  resume: ['paused'],
  reset: ['running', 'paused'],
  shutdown: ['running', 'paused'],
  kill: ['created', 'starting', 'running', 'paused', 'stopping'],
  exec: ['running'],
};

export function assertAllowed(action: VmAction, state: VmState): void {
  if (!ALLOWED[action].includes(state)) throw new VmStateError(action, state);
}

/** Why a VM stopped. */
export type StopReasonKind = 'poweroff' | 'reset' | 'triple-fault' | 'internal-error' | 'killed' | 'host-error' | 'halt';

export interface StopReason {
  reason: StopReasonKind;
  /** One sentence for people. */
  message: string;
  /** vCPU and register details for guest failures. */
  vcpu?: number;
  rip?: bigint;
  instructionBytes?: Uint8Array;
  error?: Error;
}

/** Process exit status the CLI uses for each stop reason. */
export const EXIT_CODES: Record<StopReasonKind, number> = {
  poweroff: 0,
  reset: 0,
  'triple-fault': 3,
  'internal-error': 4,
  'host-error': 1,
  halt: 0,
  killed: 130,
};
