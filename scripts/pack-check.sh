#!/bin/sh
# Proves that the npm package installs without a compiler: packs this checkout
# (which must hold prebuilds/linux-x64 and prebuilds/linux-arm64, made by
# scripts/prebuilds.sh), installs the tarball into a fresh folder with no C or
# C++ compiler and no make on PATH, and loads the addon there; node-gyp-build
# must pick prebuilds/linux-x64 (no build/ may appear). CI runs it after the
# prebuilds step. Needs dist/ built (npm run build:ts). Removes its folder.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/nodevmm-pack-XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
start=$(date +%s)

for a in x64 arm64; do
  ls "$root/prebuilds/linux-$a/"*.node >/dev/null 2>&1 || { echo "pack-check: no prebuilds/linux-$a (sh scripts/prebuilds.sh)" >&2; exit 1; }
done

# dist/ is built already; --ignore-scripts skips `prepare` (tsc) to keep this step fast.
tarball=$(cd "$root" && npm pack --ignore-scripts --silent --pack-destination "$work")
listing=$(tar -tzf "$work/$tarball")
for want in package/prebuilds/linux-x64/ package/prebuilds/linux-arm64/ package/dist/lib/index.js package/dist/lib/cli.bundle package/bin/nodevmm.js; do
  echo "$listing" | grep -q "^$want" || { echo "pack-check: $tarball lacks $want" >&2; exit 1; }
done

# A PATH with node, npm and sh (npm runs scripts with it) only: nothing that could compile the addon.
mkdir "$work/bin" "$work/app"
for tool in node npm npx sh; do ln -s "$(command -v "$tool")" "$work/bin/$tool"; done
for cc in cc gcc g++ c++ clang make; do
  if PATH="$work/bin" command -v "$cc" >/dev/null 2>&1; then echo "pack-check: $cc is still on PATH" >&2; exit 1; fi
done
cd "$work/app"
echo '{ "name": "pack-check", "version": "1.0.0", "private": true }' > package.json
PATH="$work/bin" npm install --no-audit --no-fund --loglevel=error "$work/$tarball"

pkg="$work/app/node_modules/nodevmm"
[ ! -e "$pkg/build" ] || { echo "pack-check: npm install built the addon (build/ exists); the prebuild was not used" >&2; exit 1; }
PATH="$work/bin" node -e '
const dir = require("path").dirname(require.resolve("nodevmm/package.json"));
const file = require("node-gyp-build").resolve(dir);
if (!file.includes("/prebuilds/linux-x64/")) throw new Error(`node-gyp-build picked ${file}, not the linux-x64 prebuild`);
const binding = require("node-gyp-build")(dir);
if (typeof binding.Vm !== "function" || typeof binding.GuestRam !== "function") throw new Error(`${file} loaded but lacks Vm/GuestRam`);
// What the library itself loads (lib/hv/native.ts: build/Release first, which is absent here).
if (typeof require(`${dir}/dist/lib/hv/native.js`).nativeBinding().Vm !== "function") throw new Error("nativeBinding() did not load the prebuild");
const { createVm } = require("nodevmm");
if (typeof createVm !== "function") throw new Error("nodevmm exports no createVm");
console.log(`pack-check: the installed package loads ${file.slice(dir.length + 1)}`);
'
# The CLI starts from its bundle there (lib/cli/launch.ts): only that path writes a compile cache.
NODEVMM_CACHE="$work/cache" PATH="$work/bin" "$work/app/node_modules/.bin/nodevmm" --version
ls "$work/cache/compile-cache/"cli-*.v8cache >/dev/null 2>&1 || { echo "pack-check: the installed nodevmm did not start from dist/lib/cli.bundle (no compile cache was written)" >&2; exit 1; }

echo "pack-check: ok in $(( $(date +%s) - start )) s ($tarball, $(du -k "$work/$tarball" | cut -f1) KiB)"
