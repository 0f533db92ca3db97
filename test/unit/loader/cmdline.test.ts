import test from 'ava';
import { NodevmmError } from '../../../lib/errors';
import { encodeCmdline, joinCmdline, validateCmdline } from '../../../lib/loader/cmdline';

test('encoding appends the NUL terminator', (t) => {
  t.deepEqual(encodeCmdline('a=1 b', 16), Uint8Array.from([0x61, 0x3d, 0x31, 0x20, 0x62, 0]));
});

test('the capacity counts the NUL: capacity - 1 characters fit, capacity do not', (t) => {
  t.notThrows(() => validateCmdline('x'.repeat(2047), 2048));
  const err = t.throws(() => validateCmdline('x'.repeat(2048), 2048), { instanceOf: NodevmmError });
  t.is(err.code, 'ERR_CMDLINE_TOO_LONG');
  t.is(err.message, 'kernel command line is 2048 bytes plus the NUL (2049), more than the limit of 2048 bytes including the NUL');
});

test('control characters, newlines and non-ascii characters are refused with their position', (t) => {
  for (const [s, at] of [['a\nb', 1], ['tab\there', 3], ['é', 0], ['x\u0000', 1]] as const) {
    const err = t.throws(() => validateCmdline(s, 100), { instanceOf: NodevmmError });
    t.is(err.code, 'ERR_CMDLINE_CHARACTER');
    t.regex(err.message, new RegExp(`position ${at}$`));
  }
});

test('an empty command line is a lone NUL', (t) => {
  t.deepEqual(encodeCmdline('', 1), Uint8Array.from([0]));
});

test('joining skips empty parts and trims', (t) => {
  t.is(joinCmdline(['panic=-1', '', undefined, ' console=ttyS0 ']), 'panic=-1 console=ttyS0');
});
