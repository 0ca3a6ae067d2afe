#!/usr/bin/env bash
# What lam does on a machine with an NVIDIA GPU, in one short run (BUDGET_S seconds, default 520).
#
# Build and pack the binary on a machine with the package registries (no download in any build
# script; `cuda` needs internet to build):
#   cargo build --release -p lam --features vulkan,wgpu && bash tools/gpu_pack.sh
# then, on the GPU machine, from the repository root (with .gpu/ and .gl/ carried there):
#   bash tools/gpu_check.sh [OUT]
# It unpacks .gpu/ (the binary and its FFmpeg libraries) into /tmp/lam-gpu unless LAM names a
# binary, and Debian's Vulkan loader from .gl/ where the machine has none; it needs at run time
# only the NVIDIA driver. Python with torch (CUDA) runs the PyTorch twins when present; without
# it the twins are skipped.
#
# Steps: what the machine offers; which GPU device comes up (DEVICE, default vulkan, then wgpu);
# `lam bench train` (tiny, medium), `lam bench plan` (tiny, LeWM-sized) and `lam bench e2e`
# (the end-to-end step: sim encoder + IDM + world model) against the twins on CUDA; the
# `--scale paper` model on the suite's embeddings (`lam bench train` and `plan` with the `paper`
# preset); `lam experiment regularizers --scale paper`, one arm, few steps and episodes
# (EXPERIMENT=0 skips it); then `lam demo --device DEVICE` (the whole pipeline: encoder, stage 1,
# controller, closed loop) in whatever time is left (DEMO=0 skips it). Each step gets at most
# its own limit and never more than what is left of BUDGET_S; a failing step is logged and the
# rest run. BENCHES names the benchmarks to run (default all: train_tiny plan_tiny train_medium
# plan_lewm e2e train_paper plan_paper), e.g. BENCHES=e2e EXPERIMENT=0 DEMO=0 for one.
#
# Writes into OUT (default docs/results): gpu_machine.json, gpu_bench_train_{tiny,medium,paper}.json,
# gpu_bench_plan_{tiny,lewm,paper}.json, gpu_bench_e2e.json, gpu_experiment_paper.md,
# gpu_demo_summary.md, gpu_demo_metrics.json and gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/results}
if [ -z "${LAM:-}" ] && [ -f .gpu/lam.xz ]; then
  mkdir -p /tmp/lam-gpu/lib
  xz -dc .gpu/lam.xz > /tmp/lam-gpu/lam 2>/dev/null \
    || python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.gpu/lam.xz'), open('/tmp/lam-gpu/lam', 'wb'))"
  chmod +x /tmp/lam-gpu/lam
  [ -f .gpu/libs.tar.xz ] && tar xJf .gpu/libs.tar.xz -C /tmp/lam-gpu/lib
  export LD_LIBRARY_PATH=/tmp/lam-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  LAM=/tmp/lam-gpu/lam
fi
LAM=${LAM:-target/release/lam}
DEVICE=${DEVICE:-vulkan}
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-520}
START=$(date +%s)
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

step() { echo; echo "== [$(( $(date +%s) - START )) s] $*"; }
BENCHES=${BENCHES:-train_tiny plan_tiny train_medium plan_lewm e2e train_paper plan_paper}
# want NAME: whether BENCHES holds the benchmark NAME.
want() { [[ " $BENCHES " == *" $1 "* ]]; }
# limit SECONDS: the step's own limit, cut to what is left of the budget (0: skip the step).
limit() {
  local left=$(( BUDGET_S - ($(date +%s) - START) ))
  if [ "$left" -lt 20 ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
# timed LIMIT CMD...: runs CMD under the step's limit and says how it ended.
timed() {
  local t; t=$(limit "$1"); shift
  if [ "$t" = 0 ]; then echo "SKIPPED (budget spent)"; return 1; fi
  timeout "$t" "$@"; local rc=$?
  if [ $rc = 124 ]; then echo "STOPPED at its limit of $t s"; elif [ $rc != 0 ]; then echo "FAILED (exit $rc)"; fi
  return $rc
}

step "Vulkan loader"
# The NVIDIA driver's Vulkan ICD needs libGLdispatch (libglvnd) beside the loader.
if ! ldconfig -p | grep -q 'libvulkan.so.1' || ! ldconfig -p | grep -q 'libGLdispatch.so.0'; then
  if compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    echo "unpacked $(ls .gl/*.deb | wc -l) packages from .gl/"
  else
    echo "no libvulkan.so.1 or libGLdispatch.so.0, and no .gl/*.deb: the vulkan device will not come up"
  fi
fi
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
           /etc/vulkan/icd.d/nvidia_icd.json; do
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; fi
done
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-(unset: the default search path of the loader)}"

step "machine"
if ldd "$LAM" | grep "not found"; then echo "the libraries above are missing: lam will not start"; fi
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

step "which GPU device comes up"
for d in "$DEVICE" wgpu; do
  if timed 120 "$LAM" bench train --device "$d" --rust-only --steps 1 --warmup 1; then
    DEVICE=$d; echo "using --device $DEVICE"; break
  fi
  echo "--device $d did not run a training step"
done

if want train_tiny; then
  step "lam on $DEVICE: training step, tiny model (parity of every loss term against the twin)"
  timed 100 "$LAM" bench train --device "$DEVICE" $(twin) --twin-muon-f32 --steps 20 --warmup 3 \
    --out "$OUT/gpu_bench_train_tiny.json"
fi

if want plan_tiny; then
  step "lam on $DEVICE: one CEM plan 300 x 30, horizon 5, tiny model"
  timed 120 "$LAM" bench plan --device "$DEVICE" $(twin) --repeats 2 \
    --out "$OUT/gpu_bench_plan_tiny.json"
fi

if want train_medium; then
  step "lam on $DEVICE: training step, medium model"
  M="--set model.wm_dim=256 --set model.wm_depth=4 --set model.wm_heads=4 --set model.embed_dim=128
     --set model.grid=[8,8] --set model.latent_dim=32 --set model.idm_hidden=512 --set train.batch_size=16"
  timed 100 "$LAM" bench train --device "$DEVICE" $(twin) --twin-muon-f32 --steps 10 --warmup 2 $M \
    --out "$OUT/gpu_bench_train_medium.json"
fi

if want plan_lewm; then
  step "lam on $DEVICE: one CEM plan, LeWM-sized predictor (one token per frame, 6 blocks, width 256, history 3)"
  L="--set model.grid=[1,1] --set model.wm_dim=256 --set model.wm_depth=6 --set model.wm_heads=4
     --set model.embed_dim=192"
  timed 100 "$LAM" bench plan --device "$DEVICE" $(twin) --repeats 2 --history 3 $L \
    --out "$OUT/gpu_bench_plan_lewm.json"
fi

if want e2e; then
  step "lam on $DEVICE: end-to-end training step (sim encoder + IDM + world model, tiny)"
  timed 100 "$LAM" bench e2e --device "$DEVICE" $(twin) --twin-muon-f32 --steps 10 --warmup 3 \
    --out "$OUT/gpu_bench_e2e.json"
fi

# The --scale paper model on the suite's embeddings: 20 channels (keypoints + context), one
# token per frame, 3 frames of history.
P="--preset paper --set model.embed_dim=20 --set model.grid=[1,1] --set model.frames=4"
if want train_paper; then
  step "lam on $DEVICE: training step of the --scale paper model (768 wide, 12 blocks, batch 256)"
  timed 100 "$LAM" bench train --device "$DEVICE" $(twin) --twin-muon-f32 --steps 5 --warmup 2 $P \
    --out "$OUT/gpu_bench_train_paper.json"
fi

if want plan_paper; then
  step "lam on $DEVICE: one CEM plan 300 x 30, horizon 5, through the --scale paper model"
  timed 100 "$LAM" bench plan --device "$DEVICE" $(twin) --repeats 1 --history 3 $P \
    --out "$OUT/gpu_bench_plan_paper.json"
fi

if [ "${EXPERIMENT:-1}" != 0 ]; then
  step "lam experiment regularizers --scale paper on $DEVICE: one arm, 200 steps, 4 episodes"
  rm -rf runs/experiment-paper-gpu
  timed 300 "$LAM" experiment regularizers --scale paper --device "$DEVICE" --arms noisy-high \
    --steps 200 --episodes 4 --human-episodes 200 --out runs/experiment-paper-gpu
  [ -f runs/experiment-paper-gpu/report.md ] && cp runs/experiment-paper-gpu/report.md "$OUT/gpu_experiment_paper.md"
fi

if [ "${DEMO:-1}" = 0 ]; then step "done (DEMO=0: no demo): $(ls "$OUT"/gpu_* | tr '\n' ' ')"; exit 0; fi
step "lam demo --device $DEVICE (the whole pipeline) in what is left of the budget"
rm -rf runs/demo-gpu
timed 100000 "$LAM" demo --device "$DEVICE" --out runs/demo-gpu
for f in summary.md metrics.json; do
  [ -f "runs/demo-gpu/$f" ] && cp "runs/demo-gpu/$f" "$OUT/gpu_demo_$f"
done

step "done: $(ls "$OUT"/gpu_* | tr '\n' ' ')"
