/**
 * Which command line an IGVM boot hands its loader: the image keeps its own
 * unless the user gives one (lib/vm/config.ts cmdlineFromImage, used by
 * lib/vm/igvm-boot.ts).
 */
import test from 'ava';
import { resolveVmConfig } from '../../../lib/vm/config';

const igvm = new Uint8Array(16);

test('an IGVM boot without a user command line keeps the image one', (t) => {
  t.true(resolveVmConfig({ igvm }).cmdlineFromImage);
});

test('a user command line (with or without the defaults) replaces it, and direct boots never use the image one', (t) => {
  const withCmd = resolveVmConfig({ igvm, cmdline: 'quiet' });
  t.false(withCmd.cmdlineFromImage);
  t.is(withCmd.cmdline, 'panic=-1 console=ttyS0 quiet');
  const alone = resolveVmConfig({ igvm, cmdline: 'quiet', cmdlineDefaults: false });
  t.false(alone.cmdlineFromImage);
  t.is(alone.cmdline, 'quiet');
  t.false(resolveVmConfig({ igvm, cmdlineDefaults: false }).cmdlineFromImage, 'an explicitly empty command line is a choice too');
  t.false(resolveVmConfig({ kernel: new Uint8Array(16) }).cmdlineFromImage);
});
