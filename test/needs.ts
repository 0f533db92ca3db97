/**
 * Test helper: `testNeeding(['dtc', 'fdtget'])` is ava's `test` when those
 * commands are on PATH. When one is missing, each test skips with one reason
 * line in its title naming the command and its Debian package; under CI=true,
 * which must prove everything, it fails with that reason instead.
 * `testWhen(reason)` does the same for any other precondition (a fixture, the
 * guest artifacts). Not a test file itself.
 */
import test, { type ExecutionContext } from 'ava';
import { missingToolsReason } from '../lib/testing/host-tools';

type Impl = (t: ExecutionContext) => void | Promise<void>;
export type TestFn = (title: string, impl: Impl) => void;

/** `test` when `reason` is undefined; otherwise a skip with the reason (a failure under CI). */
export function testWhen(reason: string | undefined): TestFn {
  if (reason === undefined) return (title, impl) => test(title, impl);
  if (process.env.CI) return (title) => test(title, (t) => t.fail(`cannot run under CI: ${reason}`));
  return (title, impl) => test.skip(`${title} (skipped: ${reason})`, impl);
}

/** `test` when every command is on PATH; otherwise skipped with the reason (failed under CI). */
export function testNeeding(commands: readonly string[]): TestFn {
  return testWhen(missingToolsReason(commands));
}
