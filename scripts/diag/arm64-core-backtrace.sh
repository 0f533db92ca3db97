#!/bin/sh
# Diagnostic: backtraces of every thread of an arm64 node core dump written
# inside the emulated arm64 host (scripts/diag/arm64-guest-reboot.js copies it
# out), with the host's arm64 sysroot and the cross-built addon (build with
# CXXFLAGS=-g sh scripts/cross-build-arm64.sh for file:line).
# Usage: sh scripts/diag/arm64-core-backtrace.sh CORE  (needs gdb-multiarch)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${NODEVMM_CACHE:-$HOME/.cache/nodevmm}/arm64
exec gdb-multiarch -batch -nx \
  -ex "set sysroot $cache/root" \
  -ex "set solib-search-path $root/build-arm64/Release:$cache/root/lib/aarch64-linux-gnu:$cache/root/usr/lib/aarch64-linux-gnu" \
  -ex "file $cache/node/package/bin/node" \
  -ex "core-file $1" \
  -ex 'info sharedlibrary' \
  -ex 'echo \n=== crashing thread ===\n' \
  -ex 'bt 40' \
  -ex 'info registers' \
  -ex 'x/6i $pc-12' \
  -ex 'echo \n=== all threads ===\n' \
  -ex 'thread apply all bt 25'
