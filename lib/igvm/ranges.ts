/**
 * Guest-physical ranges as the IGVM model speaks of them: the inspector
 * summarises page data with them, the loader plans required RAM with them.
 */
export interface IgvmGpaRange {
  gpa: number;
  size: number;
}

/** Sort and merge overlapping or touching ranges; drops empty ones. */
export function coalesceRanges(ranges: readonly IgvmGpaRange[]): IgvmGpaRange[] {
  const sorted = ranges.filter((r) => r.size > 0).sort((a, b) => a.gpa - b.gpa);
  const out: IgvmGpaRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.gpa <= last.gpa + last.size) last.size = Math.max(last.size, r.gpa + r.size - last.gpa);
    else out.push({ ...r });
  }
  return out;
}
