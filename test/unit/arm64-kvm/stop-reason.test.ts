import test from 'ava';
import { arm64StopReason } from '../../../lib/vm/arm64-linux';

test('PSCI SYSTEM_OFF and SYSTEM_RESET map to poweroff and reset', (t) => {
  t.is(arm64StopReason({ vcpu: 0, kind: 'system-event', systemEvent: 'shutdown', message: '' }), 'poweroff');
  t.is(arm64StopReason({ vcpu: 1, kind: 'system-event', systemEvent: 'reset', message: '' }), 'reset');
  t.is(arm64StopReason({ vcpu: 0, kind: 'system-event', systemEvent: 'crash', message: '' }), 'crash');
});

test('any other vCPU stop is an error', (t) => {
  t.is(arm64StopReason({ vcpu: 0, kind: 'system-event', systemEvent: 'other', message: '' }), 'error');
  t.is(arm64StopReason({ vcpu: 0, kind: 'internal-error', message: '' }), 'error');
  t.is(arm64StopReason({ vcpu: 0, kind: 'host-error', message: '' }), 'error');
});
