/**
 * One sentence for a file the user named that cannot be read, shared by the
 * VM (kernel, initrd, igvm) and the CLI: "kernel file /x does not exist".
 */
import { readFileSync } from 'node:fs';
import { NodevmmError } from '../errors';

export function fileError(what: string, path: string, err: unknown): NodevmmError {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not readable by this user' : code === 'EISDIR' ? 'is a directory' : (err as Error).message;
  return new NodevmmError('ERR_FILE', `${what} file ${path} ${why}`);
}

/** Read a whole input file, or throw fileError. */
export function readInputFile(what: string, path: string): Uint8Array {
  try {
    return new Uint8Array(readFileSync(path));
  } catch (e) {
    throw fileError(what, path, e);
  }
}
