#!/usr/bin/env bash
# What lam does on a machine with an NVIDIA GPU, in one short run (about 5-8 minutes).
#
# Build the binary on a machine with the package registries (no download in any build script):
#   cargo build --release -p lam --features vulkan      # or wgpu; `cuda` needs internet to build
# then, on the GPU machine, from the repository root:
#   LAM=target/release/lam bash tools/gpu_check.sh [OUT]
#
# It needs at run time only the NVIDIA driver and a Vulkan loader (libvulkan1). Where the loader
# is missing, Debian's .deb files put in .gl/ beside this checkout are unpacked first
# (`apt-get download libvulkan1 libegl1 libglvnd0` on any Debian machine). Python with torch
# (CUDA) is used for the PyTorch twins when present; without it the twins are skipped.
#
# Writes into OUT (default docs/results): gpu_machine.json (driver, GPU, Vulkan, CUDA
# libraries, torch), gpu_bench_train_{tiny,medium}.json, gpu_bench_plan_{tiny,lewm}.json and
# gpu_check.log. Each step has its own time limit; a failing step is logged and the rest run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/results}
LAM=${LAM:-target/release/lam}
DEVICE=${DEVICE:-vulkan}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

step() { echo; echo "== $*"; }

step "Vulkan loader"
if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
  if compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    echo "unpacked $(ls .gl/*.deb | wc -l) packages from .gl/"
  else
    echo "no libvulkan.so.1 and no .gl/*.deb: the vulkan device will not come up"
  fi
fi
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
           /etc/vulkan/icd.d/nvidia_icd.json; do
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; fi
done
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-(unset: the default search path of the loader)}"

step "machine"
TWIN_DEVICE=cpu
if "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  TWIN_DEVICE=cuda
fi
LAM="$LAM" TWIN_DEVICE="$TWIN_DEVICE" "$PYTHON" - "$OUT/gpu_machine.json" <<'EOF'
import json, os, subprocess, sys

def run(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr).strip()
    except Exception as e:  # the tool is missing
        return f"unavailable: {e}"

info = {
    "nvidia_smi": run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                       "--format=csv,noheader"]),
    "libvulkan": run(["sh", "-c", "ldconfig -p | grep libvulkan || true"]),
    "vk_driver_files": os.environ.get("VK_DRIVER_FILES"),
    "cuda_libraries": run(["sh", "-c", "ldconfig -p | grep -E 'libcudart|libnvrtc|libcublas' || true"]),
    "cpu_cores": os.cpu_count(),
    "lam": os.environ["LAM"],
    "twin_device": os.environ["TWIN_DEVICE"],
}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        info["torch_gpu"] = torch.cuda.get_device_name(0)
except ImportError:
    info["torch"] = None
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info, indent=2))
EOF

twin() {
  if "$PYTHON" -c 'import torch, safetensors' 2>/dev/null; then
    echo --python "$PYTHON" --twin-device "$TWIN_DEVICE"
  else
    echo --rust-only
  fi
}

step "lam on $DEVICE: training step, tiny model (parity of every loss term against the twin)"
timeout 240 "$LAM" bench train --device "$DEVICE" $(twin) --twin-muon-f32 --steps 20 --warmup 3 \
  --out "$OUT/gpu_bench_train_tiny.json" || echo "FAILED (exit $?)"

step "lam on $DEVICE: training step, medium model"
M="--set model.wm_dim=256 --set model.wm_depth=4 --set model.wm_heads=4 --set model.embed_dim=128
   --set model.grid=[8,8] --set model.latent_dim=32 --set model.idm_hidden=512 --set train.batch_size=16"
timeout 300 "$LAM" bench train --device "$DEVICE" $(twin) --twin-muon-f32 --steps 10 --warmup 2 $M \
  --out "$OUT/gpu_bench_train_medium.json" || echo "FAILED (exit $?)"

step "lam on $DEVICE: one CEM plan 300 x 30, horizon 5, tiny model"
timeout 300 "$LAM" bench plan --device "$DEVICE" $(twin) --repeats 2 \
  --out "$OUT/gpu_bench_plan_tiny.json" || echo "FAILED (exit $?)"

step "lam on $DEVICE: one CEM plan, LeWM-sized predictor (one token per frame, 6 blocks, width 256, history 3)"
L="--set model.grid=[1,1] --set model.wm_dim=256 --set model.wm_depth=6 --set model.wm_heads=4
   --set model.embed_dim=192"
timeout 300 "$LAM" bench plan --device "$DEVICE" $(twin) --repeats 2 --history 3 $L \
  --out "$OUT/gpu_bench_plan_lewm.json" || echo "FAILED (exit $?)"

step "done: $(ls "$OUT"/gpu_* | tr '\n' ' ')"
