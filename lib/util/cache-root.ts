/**
 * Where nodevmm keeps what it may rebuild at any time (guest artifacts, the
 * CLI's compile cache): $NODEVMM_CACHE, else ~/.cache/nodevmm. Its own
 * module so the CLI's start-up path can ask without loading lib/testing.
 */
import os = require('node:os');
import path = require('node:path');

/** The cache root of this process (see cacheRootFor). */
export function cacheRoot(): string {
  let home = '';
  try {
    home = os.homedir(); // $HOME, else the passwd entry; throws when neither exists
  } catch {}
  return cacheRootFor(process.env, home, os.tmpdir(), process.getuid?.() ?? 0);
}

/**
 * $NODEVMM_CACHE; else `<home>/.cache/nodevmm`; else, when there is no usable
 * home (HOME unset or `/` with no passwd entry, as in a bare chroot or a
 * container, where `/.cache` would land in the root of the filesystem),
 * `<tmpdir>/nodevmm-cache-<uid>`, which the progress messages name.
 */
export function cacheRootFor(env: NodeJS.ProcessEnv, home: string, tmpdir: string, uid: number): string {
  if (env.NODEVMM_CACHE) return env.NODEVMM_CACHE;
  if (home && home !== '/' && path.isAbsolute(home)) return path.join(home, '.cache', 'nodevmm');
  return path.join(tmpdir, `nodevmm-cache-${uid}`);
}
