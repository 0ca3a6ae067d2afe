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

# Python for the tests, in a virtual environment inside the repository (.venv; the system
# Python is left untouched): the client of `lam serve` (clients/python, which
# crates/lam/tests/serve_python.rs drives the server with) and the tensorboard package
# (crates/lam/tests/tensorboard_python.rs reads the runs' event files with it), pinned in
# tools/requirements-test.txt. Skipped when .venv already imports all of them. The twins and
# fixture scripts of tools/reference need PyTorch: `.venv/bin/pip install -r
# tools/reference/requirements.txt` (not needed to build or test).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
if ! "$VENV/bin/python" -c "import numpy, msgpack, websockets.sync.client, lam_client, tensorboard" \
    >/dev/null 2>&1; then
  if ! python3 -m venv --clear "$VENV" >/dev/null 2>&1; then
    # Debian ships venv's pip bootstrap separately.
    rm -rf "$VENV"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv --clear "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$ROOT/tools/requirements-test.txt" "$ROOT/clients/python"
fi
