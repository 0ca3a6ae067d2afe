#!/usr/bin/env bash
# Installs everything a fresh Debian machine needs to build, test and run lam.
# Idempotent; run as root (or with sudo available).
set -euo pipefail
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

# System libraries: FFmpeg (video decode/encode through ffmpeg-next), clang for bindgen,
# pkg-config, the DejaVu font that plots use for text, and the ffmpeg CLI that the
# lam-ingest tests use to make small test videos.
PKGS=(pkg-config clang libclang-dev
      libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
      libavdevice-dev libavfilter-dev ffmpeg
      fonts-dejavu-core)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
