/**
 * lib/testing/artifacts.ts cacheRootFor: where the guest cache goes, also
 * when HOME is unset (a chroot or container without a passwd entry, where
 * the cache used to land in /.cache/nodevmm).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { cacheRootFor } from '../../../lib/testing/artifacts';

test('NODEVMM_CACHE wins, then the home folder', (t) => {
  t.is(cacheRootFor({ NODEVMM_CACHE: '/srv/c' }, '/home/u', '/tmp', 1000), '/srv/c');
  t.is(cacheRootFor({}, '/home/u', '/tmp', 1000), '/home/u/.cache/nodevmm');
});

test('without a usable home the cache goes to the temporary folder, per user, never /.cache', (t) => {
  for (const home of ['', '/', 'relative']) t.is(cacheRootFor({}, home, '/tmp', 1000), '/tmp/nodevmm-cache-1000', JSON.stringify(home));
});

test('a process with HOME unset gets a cache root outside /', (t) => {
  const artifacts = path.resolve(__dirname, '../../../lib/testing/artifacts.js');
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH };
  const r = spawnSync(process.execPath, ['-e', `process.stdout.write(require(${JSON.stringify(artifacts)}).guestCacheRoot())`], { env, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.not(r.stdout, '/.cache/nodevmm');
  t.true(path.isAbsolute(r.stdout));
});
