#!/bin/sh
# Builds the addon's prebuilt binaries with prebuildify (N-API, stripped,
# tagged glibc) into prebuilds/<platform>-<arch>/, which `npm pack` ships and
# node-gyp-build loads when there is no build/Release (a user's `npm install`
# then needs no compiler). linux-x64 with this machine's g++, linux-arm64 with
# g++-aarch64-linux-gnu. Each build runs in a staged copy, so build/ (the
# developer's own addon, which node-gyp-build prefers) is never touched.
#
# win32-x64 (the WHP backend) is scripts/build-win32.sh's: MinGW, no node-gyp.
#
# Usage: sh scripts/prebuilds.sh [x64] [arm64]   (default: both)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
archs=${*:-x64 arm64}

# Node's headers, as in cross-build-arm64.sh: N-API headers are architecture independent.
nodedir=${NODEVMM_NODEDIR:-$(node -p 'require("path").resolve(process.execPath, "..", "..")')}
if [ ! -f "$nodedir/include/node/node_api.h" ]; then
  echo "prebuilds: no Node headers in $nodedir/include/node (set NODEVMM_NODEDIR)" >&2
  exit 2
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/nodevmm-prebuild-XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM

prebuild() { # prebuild ARCH CROSS_PREFIX
  arch=$1
  cross=$2
  if ! command -v "${cross}g++" >/dev/null 2>&1; then
    echo "prebuilds: ${cross}g++ not found for linux-$arch (apt-get install g++-aarch64-linux-gnu)" >&2
    exit 2
  fi
  dir="$stage/$arch"
  mkdir -p "$dir"
  cp "$root/binding.gyp" "$root/package.json" "$dir/"
  cp -r "$root/native" "$dir/native"
  ln -s "$root/node_modules" "$dir/node_modules"
  (
    cd "$dir"
    CC="${cross}gcc" CXX="${cross}g++" LINK="${cross}g++" AR="${cross}ar" npm_config_nodedir="$nodedir" \
      node "$root/node_modules/prebuildify/bin.js" --napi --strip --strip-bin "${cross}strip" --tag-libc \
      --arch "$arch" --cache "$stage/cache" --quiet
  )
  mkdir -p "$root/prebuilds"
  rm -rf "$root/prebuilds/linux-$arch"
  cp -r "$dir/prebuilds/linux-$arch" "$root/prebuilds/"
  for f in "$root/prebuilds/linux-$arch"/*.node; do echo "prebuilds: $f: $(file -b "$f")"; done
}

for arch in $archs; do
  case "$arch" in
    x64) prebuild x64 "" ;;
    arm64) prebuild arm64 aarch64-linux-gnu- ;;
    *) echo "prebuilds: unknown arch $arch (x64, arm64)" >&2; exit 2 ;;
  esac
done
