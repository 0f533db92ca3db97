#!/bin/sh
# Cross-compiles the native addon for aarch64 Linux with g++-aarch64-linux-gnu
# against this machine's Node headers, into build-arm64/Release/nodevmm.node
# (build/ is never touched). CI runs it so the arm64 backend never rots; the
# arm64 proof (scripts/arm64-kvm-host.js) loads its output inside the
# emulated arm64 host. Exits non-zero when the compiler is missing, the build
# fails or the result is not an aarch64 shared object; prints `file` output.
#
# Usage: sh scripts/cross-build-arm64.sh [OUTDIR]   (default: build-arm64)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/build-arm64"}
case "$out" in /*) ;; *) out="$root/$out" ;; esac
cross=${CROSS_PREFIX:-aarch64-linux-gnu-}

if ! command -v "${cross}g++" >/dev/null 2>&1; then
  echo "cross-build-arm64: ${cross}g++ not found (apt-get install g++-aarch64-linux-gnu)" >&2
  exit 2
fi

# Node's headers: the ones node-gyp was configured with for the x86 build,
# else the running node's prefix (it ships include/node). Headers are
# architecture independent for N-API addons.
nodedir=${NODEVMM_NODEDIR:-}
if [ -z "$nodedir" ]; then
  prefix=$(node -p 'require("path").resolve(process.execPath, "..", "..")')
  if [ -f "$prefix/include/node/node_api.h" ]; then nodedir=$prefix; fi
fi
if [ -z "$nodedir" ] || [ ! -f "$nodedir/include/node/node_api.h" ]; then
  echo "cross-build-arm64: no Node headers found (set NODEVMM_NODEDIR to a dir with include/node/node_api.h)" >&2
  exit 2
fi

# node-gyp always builds into ./build: stage a copy so the host build stays put.
stage=$(mktemp -d "${TMPDIR:-/tmp}/nodevmm-arm64-XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
cp "$root/binding.gyp" "$stage/"
cp -r "$root/native" "$stage/native"
ln -s "$root/node_modules" "$stage/node_modules"

gyp="$root/node_modules/node-gyp/bin/node-gyp.js"
start=$(date +%s)
(
  cd "$stage"
  CC="${cross}gcc" CXX="${cross}g++" LINK="${cross}g++" AR="${cross}ar" \
    node "$gyp" rebuild --arch=arm64 --nodedir="$nodedir" --jobs="$(nproc 2>/dev/null || echo 2)" --loglevel=warn
) || {
  echo "cross-build-arm64: node-gyp failed" >&2
  exit 1
}

mkdir -p "$out/Release"
# A new file renamed over the old one, never the old one rewritten: a node
# that has the addon loaded (in an emulated host, over 9p) keeps the code it
# mapped instead of running half of the new build.
cp "$stage/build/Release/nodevmm.node" "$out/Release/.nodevmm.node.$$"
mv -f "$out/Release/.nodevmm.node.$$" "$out/Release/nodevmm.node"
desc=$(file -b "$out/Release/nodevmm.node")
echo "$out/Release/nodevmm.node: $desc"
case "$desc" in
  *ELF\ 64-bit*shared\ object*ARM\ aarch64*) ;;
  *)
    echo "cross-build-arm64: the result is not an aarch64 shared object" >&2
    exit 1
    ;;
esac
# A symbol only kvm_arm64.cc defines: proves the arm64 backend was compiled in.
if ! "${cross}nm" -DC "$out/Release/nodevmm.node" 2>/dev/null | grep -q 'Vcpu::ArmVcpuInit' && \
   ! "${cross}nm" -C "$out/Release/nodevmm.node" 2>/dev/null | grep -q 'Vcpu::ArmVcpuInit'; then
  echo "cross-build-arm64: warning: symbol Vcpu::ArmVcpuInit not visible (stripped build?)" >&2
fi
echo "cross-build-arm64: ok in $(( $(date +%s) - start )) s"
