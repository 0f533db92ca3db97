import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ARM64_HOST_QEMU_MIN_MAJOR, backportsSuite, findArm64HostQemu, qemuVersion } from '../../../lib/testing/arm64-host-qemu';

// Stand-ins for qemu-system-aarch64: shell scripts that print what `--version` prints.
function fakeQemu(dir: string, file: string, version: string | undefined): string {
  const p = path.join(dir, file);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, version ? `#!/bin/sh\necho "QEMU emulator version ${version} (Debian 1:${version}+dfsg)"\necho "Copyright (c) 2003-2025 Fabrice Bellard"\n` : '#!/bin/sh\necho "error while loading shared libraries: libfoo.so.1" >&2\nexit 127\n');
  fs.chmodSync(p, 0o755);
  return p;
}

function tmp(t: { teardown: (f: () => void) => void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'nodevmm-qemu-test-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

test('qemuVersion reads the major and minor version, and nothing from a binary that does not start', (t) => {
  const d = tmp(t);
  t.like(qemuVersion(fakeQemu(d, 'a', '7.2.22')), { major: 7, minor: 2, text: 'QEMU emulator version 7.2.22' });
  t.like(qemuVersion(fakeQemu(d, 'b', '10.0.2')), { major: 10, minor: 0 });
  t.is(qemuVersion(fakeQemu(d, 'c', undefined)), undefined);
  t.is(qemuVersion(path.join(d, 'absent')), undefined);
});

test(`the system's QEMU when it is ${ARM64_HOST_QEMU_MIN_MAJOR} or newer, else the one unpacked in the cache, else none`, (t) => {
  const d = tmp(t);
  const old = fakeQemu(d, 'system-old', '7.2.22');
  const fresh = fakeQemu(d, 'system-new', `${ARM64_HOST_QEMU_MIN_MAJOR}.1.0`);
  const cache = path.join(d, 'cache');
  t.is(findArm64HostQemu(cache, old), undefined, 'nothing unpacked yet');
  t.is(findArm64HostQemu(cache, fresh), fresh);
  const unpacked = fakeQemu(cache, 'root/usr/bin/qemu-system-aarch64', `${ARM64_HOST_QEMU_MIN_MAJOR}.0.2`);
  t.is(findArm64HostQemu(cache, old), unpacked);
  t.is(findArm64HostQemu(cache, path.join(d, 'no-such-qemu')), unpacked);
  fakeQemu(cache, 'root/usr/bin/qemu-system-aarch64', `${ARM64_HOST_QEMU_MIN_MAJOR - 1}.2.0`);
  t.is(findArm64HostQemu(cache, old), undefined, 'an unpacked QEMU that is too old does not count');
  fakeQemu(cache, 'root/usr/bin/qemu-system-aarch64', undefined);
  t.is(findArm64HostQemu(cache, old), undefined, 'nor one that does not start');
});

test('backports come from the running Debian release; other systems have none', (t) => {
  t.is(backportsSuite('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n'), 'bookworm-backports');
  t.is(backportsSuite('NAME="Ubuntu"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n'), undefined);
  t.is(backportsSuite('ID=debian\n'), undefined, 'no codename (sid)');
  t.is(backportsSuite(''), undefined);
});
