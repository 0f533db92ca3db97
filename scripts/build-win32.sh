#!/bin/sh
# Cross-compiles the native addon for Windows x64 with Debian's MinGW-w64
# (g++-mingw-w64-x86-64, its posix thread model for std::thread) into
# prebuilds/win32-x64/nodevmm.node, the file node-gyp-build loads on Windows.
# The sources are binding.gyp's: its neutral list plus its OS=='win' list.
# N-API comes from node.exe through an import library made from the .def
# files of the npm package node-api-headers (what cmake-js does on Windows),
# fetched once with `npm pack` into $NODEVMM_CACHE/win32 (default
# ~/.cache/nodevmm). WinHvPlatform/WinHvEmulation are not linked: the addon
# loads them at run time (native/whp_api.cc). CI runs this, then the Wine
# load check (scripts/wine-check.js). -Wall -Wextra -Werror.
#
# Usage: sh scripts/build-win32.sh [OUTDIR]   (default: prebuilds/win32-x64)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/prebuilds/win32-x64"}
case "$out" in /*) ;; *) out="$root/$out" ;; esac
cxx=${MINGW_CXX:-x86_64-w64-mingw32-g++-posix}
dlltool=${MINGW_DLLTOOL:-x86_64-w64-mingw32-dlltool}
cache=${NODEVMM_CACHE:-"$HOME/.cache/nodevmm"}/win32
headers_version=1.9.0

for tool in "$cxx" "$dlltool"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build-win32: $tool not found (apt-get install g++-mingw-w64-x86-64)" >&2
    exit 2
  fi
done

# node-api-headers: the C headers and the .def files of node.exe's N-API exports.
headers="$cache/node-api-headers-$headers_version"
if [ ! -f "$headers/def/node_api.def" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.fetch-XXXXXX")
  (cd "$tmp" && npm pack "node-api-headers@$headers_version" --silent >/dev/null) || {
    rm -rf "$tmp"
    echo "build-win32: npm pack node-api-headers@$headers_version failed (no registry?)" >&2
    exit 1
  }
  tar -xzf "$tmp"/node-api-headers-*.tgz -C "$tmp"
  rm -rf "$headers"
  mv "$tmp/package" "$headers"
  rm -rf "$tmp"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/nodevmm-win32-XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM

# One import library for both .def files: every symbol is exported by node.exe.
{
  echo "NAME node.exe"
  echo "EXPORTS"
  grep -hv -e '^NAME' -e '^EXPORTS' -e '^[[:space:]]*$' "$headers/def/js_native_api.def" "$headers/def/node_api.def"
} >"$stage/node.def"
"$dlltool" -d "$stage/node.def" -l "$stage/libnode.a" -D node.exe

sources=$(cd "$root" && node -e '
  const g = JSON.parse(require("fs").readFileSync("binding.gyp", "utf8")).targets[0];
  const win = g.conditions.find(([c]) => c === "OS==\x27win\x27")[1];
  console.log([...g.sources, ...win.sources].join(" "));
')
addon_api=$(cd "$root" && node -p 'require("node-addon-api").include_dir')

start=$(date +%s)
objs=""
for src in $sources; do
  obj="$stage/$(basename "$src" .cc).o"
  "$cxx" -c "$root/$src" -o "$obj" -std=c++17 -O2 -Wall -Wextra -Werror \
    -DNAPI_VERSION=8 -DNODE_ADDON_API_DISABLE_DEPRECATED -DNAPI_DISABLE_CPP_EXCEPTIONS \
    -D_WIN32_WINNT=0x0A00 -DWIN32_LEAN_AND_MEAN -DNOMINMAX \
    -I"$headers/include" -I"$addon_api"
  objs="$objs $obj"
done
mkdir -p "$out"
# libstdc++, libgcc and winpthread linked in: the DLL needs nothing beside node.exe and Windows.
# shellcheck disable=SC2086
"$cxx" -shared -o "$out/nodevmm.node" $objs -L"$stage" -lnode -lsynchronization \
  -static -s

desc=$(file -b "$out/nodevmm.node")
echo "build-win32: $out/nodevmm.node: $desc"
case "$desc" in
  *PE32+\ executable*DLL*x86-64*) ;;
  *)
    echo "build-win32: the result is not a 64-bit Windows DLL" >&2
    exit 1
    ;;
esac
# What it imports: node.exe (N-API) and system DLLs only, never WinHvPlatform.dll.
imports=$(x86_64-w64-mingw32-objdump -p "$out/nodevmm.node" | sed -n 's/^[[:space:]]*DLL Name: //p' | tr '\n' ' ')
echo "build-win32: imports $imports"
for dll in $imports; do
  case "$dll" in
    node.exe | KERNEL32.dll | msvcrt.dll | api-ms-win-*.dll) ;;
    *)
      # A WHP DLL would keep the addon from loading without the optional
      # feature; a MinGW runtime DLL (libwinpthread-1.dll) is not on users' machines.
      echo "build-win32: the addon imports $dll; only node.exe and Windows' own DLLs may be imported" >&2
      exit 1
      ;;
  esac
done
echo "build-win32: ok in $(( $(date +%s) - start )) s ($(echo $sources | wc -w) sources)"
