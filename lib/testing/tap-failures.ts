/**
 * The failed tests in ava's TAP output, short enough to print again at the
 * end of a long run: CI keeps a log's tail, and a failure's reason can be
 * thousands of lines above it (an e2e tier's console, kernel lines and all).
 */

export interface TapFailure {
  /** The test's title as TAP printed it (ava prefixes "file › " when it ran several files). */
  title: string;
  /** The first lines after the title: the test's t.log lines, then its YAML block (assertion, values, message). */
  detail: string[];
}

export interface TapFailureOptions {
  /** Lines of detail kept per failure (16). */
  lines?: number;
  /** Characters kept per line (240); a longer line ends in " [...]". */
  width?: number;
}

/**
 * Each `not ok` test in `tap` (TODO tests are not failures) with what
 * followed it up to the next test, the plan line or the end of its YAML
 * block; blank lines and the block's opening `---` are dropped.
 */
export function tapFailures(tap: string, o: TapFailureOptions = {}): TapFailure[] {
  const maxLines = o.lines ?? 16;
  const width = o.width ?? 240;
  const lines = tap.replace(/\r/g, '').split('\n');
  const failures: TapFailure[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^not ok \d+ - (.*)$/.exec(lines[i]!);
    if (!m || /# TODO\b/.test(m[1]!)) continue;
    const detail: string[] = [];
    for (let j = i + 1; j < lines.length && detail.length < maxLines; j++) {
      const l = lines[j]!;
      if (/^(not )?ok \d+ /.test(l) || /^1\.\.\d+$/.test(l) || l === '  ...') break;
      if (l === '  ---' || !l.trim()) continue;
      detail.push(l.length > width ? `${l.slice(0, width)} [...]` : l);
    }
    failures.push({ title: m[1]!, detail });
  }
  return failures;
}
