/**
 * spawnHelper's setpriv: a setpriv without --pdeathsig (busybox's, as in the
 * emulated arm64 host) is refused in one sentence before anything starts,
 * instead of the helper "exiting" with setpriv's usage text.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnHelper } from '../../../lib/util/helper-process';
import { tempDir } from '../../temp-dir';

test.serial('a setpriv without --pdeathsig (busybox) is refused naming it, and nothing is started', (t) => {
  const dir = tempDir(t, 'nodevmm-setpriv-');
  const fake = path.join(dir, 'setpriv');
  const started = path.join(dir, 'started');
  // What busybox's setpriv prints for --help (usage on stderr, status 1); anything else it is asked to run marks `started`.
  fs.writeFileSync(fake, `#!/bin/sh\nif [ "$1" = --help ]; then echo 'Usage: setpriv [OPTIONS] PROG ARGS' >&2; echo '--nnp,--no-new-privs' >&2; exit 1; fi\ntouch ${started}\n`, { mode: 0o755 });
  const savedPath = process.env.PATH;
  process.env.PATH = `${dir}:${savedPath}`;
  t.teardown(() => {
    process.env.PATH = savedPath;
  });
  t.throws(() => spawnHelper({ name: 'sleeper', command: 'sleep', args: ['5'], installHint: 'coreutils' }), {
    code: 'ERR_HELPER_MISSING',
    message: `${fake} has no --pdeathsig (busybox's setpriv?): nodevmm starts sleeper through util-linux's setpriv so that it dies with this process (apt-get install util-linux, and put its setpriv first in PATH)`,
  });
  t.false(fs.existsSync(started));
});
