/**
 * Finding native/crash_report.cc's report (NODEVMM_CRASH_REPORT=1) in a
 * process's output, e.g. an emulated host's console log.
 */

/**
 * The report in `log`, from its `NODEVMM-CRASH signal` line to `NODEVMM-CRASH
 * end`, or its first line alone when the end never came: when the fault came
 * from a corrupted heap the backtrace itself can fault, and the process dies
 * inside the report (seen 2026-12-07 in the emulated arm64 host: a core whose
 * crashing thread was in the report's backtrace()). Undefined without one.
 */
export function nativeCrashReport(log: string): string | undefined {
  return /\nNODEVMM-CRASH signal[^\n]*(?:[^]*?NODEVMM-CRASH end)?/.exec(log)?.[0].trim();
}
