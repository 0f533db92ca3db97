/**
 * watchReadable, the pausable readability watcher over the native fd watcher, on an
 * eventfd: it calls back while the fd is readable, pause/resume stop and
 * restart that, and close frees it (twice is harmless, no call after).
 */
import test from 'ava';
import { nativeBinding, watchReadable } from '../../../lib/hv/native';

const tick = () => new Promise((r) => setTimeout(r, 20));

test('watchReadable calls back while an eventfd is readable, pauses, resumes and closes', async (t) => {
  const b = nativeBinding();
  const fd = b.eventfd(0);
  t.teardown(() => b.closeFd(fd));
  let calls = 0;
  const w = watchReadable(fd, (error) => {
    t.is(error, undefined);
    calls++;
    b.eventfdRead(fd); // drain, so the level-triggered poll goes quiet
  });
  await tick();
  t.is(calls, 0, 'nothing to read yet');
  b.eventfdWrite(fd, 1);
  await tick();
  t.is(calls, 1);
  w.pause();
  b.eventfdWrite(fd, 1);
  await tick();
  t.is(calls, 1, 'paused');
  w.resume();
  await tick();
  t.is(calls, 2, 'the pending count is seen on resume');
  w.close();
  w.close();
  b.eventfdWrite(fd, 1);
  await tick();
  t.is(calls, 2, 'no callback after close');
  w.resume();
  await tick();
  t.is(calls, 2, 'resume after close does nothing');
});

test('a watcher does not keep the process alive on its own', async (t) => {
  const { execFileSync } = await import('node:child_process');
  const script = `const n = require(${JSON.stringify(require.resolve('../../../lib/hv/native'))}); const fd = n.nativeBinding().eventfd(0); n.watchReadable(fd, () => {}); console.log('armed')`;
  const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 });
  t.is(out.trim(), 'armed');
});
