#!/bin/sh
# Boot benchmark with THP off and on, in one emulated KVM host (docs/benchmarks.md, "Guest RAM
# anonymous unless a share needs the memfd"). The host boots with transparent_hugepage=never
# (docs/testing.md: khugepaged soft-locked it), so the second half turns THP on for madvised
# memory only after putting khugepaged to sleep: page faults then get huge pages, and nothing
# collapses pages behind the guests' backs. Run it inside the host:
#   flock /tmp/nodevmm-e2e.lock node scripts/kvm-host.js --timeout 1400 -- sh scripts/diag/ram-thp-bench.sh [--against DIR]
# (keep the default retries: a wedged host, which happens, then costs a re-run in a fresh one, not the result)
T=/sys/kernel/mm/transparent_hugepage
echo "== THP as the host boots: enabled $(cat $T/enabled) shmem_enabled $(cat $T/shmem_enabled)"
node scripts/bench-boot.js linux --runs 3 "$@"
echo 86400000 > $T/khugepaged/scan_sleep_millisecs
echo 86400000 > $T/khugepaged/alloc_sleep_millisecs
echo madvise > $T/enabled
echo "== THP switched on: enabled $(cat $T/enabled) shmem_enabled $(cat $T/shmem_enabled), khugepaged asleep"
node scripts/bench-boot.js linux --runs 3 "$@"
grep -E "thp_fault_alloc|thp_fault_fallback " /proc/vmstat
