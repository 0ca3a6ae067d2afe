#!/usr/bin/env bash
# Packs a GPU build of lam for a machine that has the NVIDIA driver and nothing else (no FFmpeg,
# no Vulkan loader, no package registry): run here after
#   cargo build --release -p lam --features vulkan,wgpu
# It writes (both folders are ignored by git; name them in the device tool's `carry`):
#   .gpu/lam.xz        the stripped binary, xz-compressed
#   .gpu/libs.tar.xz   the shared libraries it loads, glibc's own and SKIP's left out; libcodec2
#                      (an FFmpeg speech codec lam never calls, 9.5 MB packed) is replaced by a
#                      stub of the same name whose functions abort
#   .gl/*.deb          Debian's Vulkan loader and GL vendor-neutral dispatch (the NVIDIA Vulkan
#                      driver's ICD library needs libGLdispatch)
# tools/gpu_check.sh unpacks them on the GPU machine. The H200 machine of 2026-12-04 had libssl,
# zlib and the other libraries in SKIP; the pack of that day's build was 54.5 MB (the device tool
# carries at most 64 MiB with the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lam}
SKIP=${SKIP:-'libc\.so|libm\.so|libpthread|libdl\.so|ld-linux|librt\.so|libgcc_s|libstdc\+\+|libcrypto\.so\.3|libssl\.so\.3|libz\.so|libbz2|liblzma|libpcre2-8|libgcrypt|libgpg-error|libselinux|libffi|libexpat'}
mkdir -p .gpu .gl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
strip -o "$tmp/lam" "$BIN"
xz -T2 -6 -c "$tmp/lam" > .gpu/lam.xz.part && mv .gpu/lam.xz.part .gpu/lam.xz
mkdir "$tmp/libs"
ldd "$BIN" | awk '/=>/ {print $3}' | grep -v -E "$SKIP" | xargs cp -L -t "$tmp/libs"
if [ -f "$tmp/libs/libcodec2.so.1.0" ]; then
  rm "$tmp/libs/libcodec2.so.1.0"
  for f in "$tmp"/libs/*; do objdump -T "$f" 2>/dev/null; done \
    | awk '/\*UND\*/ && $NF ~ /^codec2_/ {print $NF}' | sort -u \
    | sed 's/.*/void &(void) { abort(); }/' | { echo '#include <stdlib.h>'; cat; } > "$tmp/codec2.c"
  cc -shared -fPIC -Wl,-soname,libcodec2.so.1.0 -o "$tmp/libs/libcodec2.so.1.0" "$tmp/codec2.c"
fi
tar cf - -C "$tmp/libs" . | xz -T2 -9e > .gpu/libs.tar.xz.part && mv .gpu/libs.tar.xz.part .gpu/libs.tar.xz
if ! compgen -G ".gl/libvulkan1_*.deb" >/dev/null || ! compgen -G ".gl/libglvnd0_*.deb" >/dev/null; then
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists='"$tmp/lists"
  mkdir -p "$tmp/lists/partial"
  apt-get $o update >/dev/null
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -cb .gpu/* .gl/* | tail -1 | awk '{printf "packed %.1f MB into .gpu/ and .gl/\n", $1 / 1e6}'
