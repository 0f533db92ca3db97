/**
 * The `nodevmm igvm build|inspect` subcommands, ready for lib/cli to mount:
 * argument parsing and output only, with file access injected so this folder
 * stays free of fs. Usage errors are ConfigError (exit 2 in the CLI); format
 * errors propagate with the file name attached.
 */
import { ConfigError, FormatError } from '../errors';
import { formatIgvmSummary, inspectIgvm } from '../igvm/inspect';
import { buildLinuxDirectIgvm } from '../loader/igvm/linux-direct';

export interface IgvmCliIo {
  readFile(path: string): Uint8Array;
  writeFile(path: string, data: Uint8Array): void;
  stdout(text: string): void;
}

export const IGVM_USAGE = 'usage: nodevmm igvm build --kernel K [--initrd I] [--cmdline C] [--memory MiB] -o OUT | nodevmm igvm inspect FILE [--json]';

function usage(message: string): ConfigError {
  return new ConfigError([{ path: 'igvm', message: `${message}; ${IGVM_USAGE}` }]);
}

function withFile<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof FormatError) throw e.withFile(file);
    throw e;
  }
}

/** Run `igvm <args>`; returns the process exit code for success (0). */
export function runIgvmCommand(args: readonly string[], io: IgvmCliIo): number {
  const [sub, ...rest] = args;
  const opts = new Map<string, string>();
  const positional: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === '--json') opts.set('json', '1');
    else if (a === '-o' || a.startsWith('--')) {
      const v = rest[++i];
      if (v === undefined) throw usage(`option ${a} needs a value`);
      opts.set(a === '-o' ? 'output' : a.slice(2), v);
    } else positional.push(a);
  }
  if (sub === 'inspect') {
    const file = positional[0];
    if (!file || positional.length > 1) throw usage('inspect takes exactly one file');
    const summary = withFile(file, () => inspectIgvm(io.readFile(file)));
    io.stdout(opts.has('json') ? JSON.stringify(summary, null, 2) + '\n' : formatIgvmSummary(summary));
    return 0;
  }
  if (sub === 'build') {
    const kernel = opts.get('kernel');
    const output = opts.get('output');
    if (!kernel || !output) throw usage('build needs --kernel and -o');
    for (const k of opts.keys()) if (!['kernel', 'initrd', 'cmdline', 'memory', 'output'].includes(k)) throw usage(`unknown option --${k}`);
    const memoryMiB = opts.has('memory') ? Number(opts.get('memory')) : 256;
    if (!Number.isInteger(memoryMiB) || memoryMiB < 16) throw usage(`--memory ${opts.get('memory')} must be a whole number of MiB, at least 16`);
    const initrdPath = opts.get('initrd');
    const result = withFile(kernel, () => buildLinuxDirectIgvm({
      kernel: io.readFile(kernel),
      ...(initrdPath ? { initrd: io.readFile(initrdPath) } : {}),
      cmdline: opts.get('cmdline') ?? '',
      memoryBytes: memoryMiB * 1024 * 1024,
    }));
    io.writeFile(output, result.file);
    io.stdout(`${output}: NATIVE IGVM, ${result.file.length} bytes, ${result.pageCount} pages\n`);
    return 0;
  }
  throw usage(`unknown igvm subcommand ${sub ?? '(none)'}`);
}
