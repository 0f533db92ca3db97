/**
 * Tier 2: an IGVM image built by nodevmm from Debian's kernel and the test
 * initramfs boots exactly as the direct path does (`nodevmm run --igvm`).
 */
import test from 'ava';
import * as fs from 'node:fs';
import { tempDir } from '../temp-dir';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { buildLinuxDirectIgvm } from '../../lib/loader/igvm/linux-direct';
import { parseIgvm } from '../../lib/igvm/parse';
import { e2eArtifacts, e2eSkipReason, FIRMWARE_COMPLAINTS, guestMarkers, cmdParam } from '../../lib/testing/e2e';
import { createVm } from '../../lib/vm/vm';

const skip = e2eSkipReason();
const e2e = skip ? test.skip : test.serial;
if (skip) test.skip(`igvm e2e skipped: ${skip}`, () => {});

e2e('an IGVM built from the Debian kernel and the test initramfs reaches GUEST-INIT-OK and powers off', async (t) => {
  const a = e2eArtifacts!;
  const built = buildLinuxDirectIgvm({ kernel: new Uint8Array(fs.readFileSync(a.vmlinuz)), initrd: new Uint8Array(fs.readFileSync(a.testInitramfs)), cmdline: 'console=ttyS0', memoryBytes: 256 * 2 ** 20 });
  t.true(parseIgvm(built.file).headers.length > 0);
  const vm = await createVm({ igvm: built.file, memory: '256M', cmdline: cmdParam('echo igvm-$((40+2))') });
  await vm.start();
  const stop = await vm.waitForStop();
  const log = vm.serial(1).log().replace(/\r/g, '');
  t.regex(log, /GUEST-INIT-OK/);
  t.regex(log, /^igvm-42$/m);
  t.is(guestMarkers(log)['CMD-EXIT'], '0');
  t.is(stop.reason, 'poweroff', stop.message);
  t.notRegex(log, FIRMWARE_COMPLAINTS);
});

e2e('nodevmm igvm build then nodevmm run --igvm boots the same guest from the command line', (t) => {
  const a = e2eArtifacts!;
  const bin = path.resolve(__dirname, '../../../bin/nodevmm.js');
  const out = path.join(tempDir(t, 'nodevmm-igvm-'), 'guest.igvm');
  const b = spawnSync(process.execPath, [bin, 'igvm', 'build', '--kernel', a.vmlinuz, '--initrd', a.testInitramfs, '--cmdline', 'console=ttyS0', '-o', out], { timeout: 60_000 });
  t.is(b.status, 0, b.stderr.toString());
  const r = spawnSync(process.execPath, [bin, 'run', '--igvm', out, '-m', '256M', '--com1', 'stdio'], { input: '', timeout: 180_000 });
  t.is(r.status, 0, r.stderr.toString());
  t.regex(r.stdout.toString(), /GUEST-INIT-OK/);
});
