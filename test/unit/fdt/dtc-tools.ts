/**
 * Runs the device-tree-compiler tools (dtc, fdtget) on a blob for tests, so
 * that our output is judged by the reference implementation, not by our own
 * reader. Not a test file itself (ava only picks up *.test.js).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ToolResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Writes the blob to a temporary file and runs `tool args... <file> extra...`. */
export function runOnBlob(tool: string, blob: Uint8Array, before: string[], after: string[] = []): ToolResult {
  const dir = mkdtempSync(join(tmpdir(), 'nodevmm-fdt-'));
  try {
    const file = join(dir, 'blob.dtb');
    writeFileSync(file, blob);
    const r = spawnSync(tool, [...before, file, ...after], { encoding: 'utf8' });
    if (r.error) throw r.error;
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `dtc -I dtb -O dts`: the decompiled source and every warning dtc printed. */
export function decompile(blob: Uint8Array): ToolResult {
  return runOnBlob('dtc', blob, ['-I', 'dtb', '-O', 'dts'], []);
}

/** `fdtget [-t type] blob node [prop]`, trimmed stdout; throws with stderr on failure. */
export function fdtget(blob: Uint8Array, node: string, prop?: string, type?: string): string {
  const r = runOnBlob('fdtget', blob, type ? ['-t', type] : [], prop === undefined ? [node] : [node, prop]);
  if (r.status !== 0) throw new Error(`fdtget ${node} ${prop ?? ''} failed: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** Compiles DTS source with dtc into a blob (for comparing against hand-built trees). */
export function compileDts(source: string): Uint8Array {
  const r = spawnSync('dtc', ['-I', 'dts', '-O', 'dtb', '-q'], { input: source });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`dtc failed: ${r.stderr.toString()}`);
  return new Uint8Array(r.stdout);
}

/** `fdtget -l blob node`: the names of a node's children. */
export function fdtlist(blob: Uint8Array, node: string): string[] {
  const r = runOnBlob('fdtget', blob, ['-l'], [node]);
  if (r.status !== 0) throw new Error(`fdtget -l ${node} failed: ${r.stderr.trim()}`);
  return r.stdout.split('\n').filter((l) => l !== '');
}
