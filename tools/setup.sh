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

# The Python client of `lam serve` (clients/python) with its dependencies numpy, msgpack and
# websockets; crates/lam/tests/serve_python.rs drives the server with it. Skipped when
# python3 already imports all of them.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! python3 -c "import numpy, msgpack, websockets.sync.client, lam_client" >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip
  fi
  PIP_FLAGS=(--quiet --disable-pip-version-check --root-user-action=ignore)
  # A distribution-managed interpreter refuses pip installs outside a virtual environment
  # (PEP 668); these packages do not clash with Debian's own.
  if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED")))'; then
    PIP_FLAGS+=(--break-system-packages)
  fi
  if [[ $(id -u) -ne 0 ]] && ! python3 -c 'import os, sys, sysconfig; sys.exit(not os.access(sysconfig.get_paths()["purelib"], os.W_OK))'; then
    PIP_FLAGS+=(--user)
  fi
  python3 -m pip install "${PIP_FLAGS[@]}" "$ROOT/clients/python"
fi
