/**
 * Test helper: a file with given bytes in a fresh temporary folder, opened
 * read-write (under `parent`, default the OS temporary folder); the test's
 * teardown closes it and removes the folder.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export function tempImage(t: { teardown(f: () => void): void }, bytes: Uint8Array, parent: string = os.tmpdir()): { file: string; fd: number } {
  const dir = fs.mkdtempSync(path.join(parent, 'nodevmm-image-'));
  const file = path.join(dir, 'disk.img');
  fs.writeFileSync(file, bytes);
  const fd = fs.openSync(file, 'r+');
  t.teardown(() => {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { file, fd };
}
