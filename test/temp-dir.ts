/**
 * Test helper: a fresh folder under the OS temporary folder that the test's
 * teardown removes, whether the test passed or failed (ava runs teardowns
 * after failed assertions and thrown errors too).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export function tempDir(t: { teardown(f: () => void): void }, prefix = 'nodevmm-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
