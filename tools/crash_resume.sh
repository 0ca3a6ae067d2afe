#!/usr/bin/env bash
# SIGKILL-and-resume check for lam's long jobs (lam train, lam train --frames, lam control
# fit, lam encoder pretrain, lam lawm pretrain and finetune, lam embed): runs each job once uninterrupted,
# then again killed with SIGKILL at KILLS random moments (the same command, with --resume
# where the job takes it, restarts it each time, as a scheduler would after a preemption),
# and compares the final weights (or shards) tensor by tensor, bit for bit. Prints one line per job and exits 1 if any differ or a run fails.
#
# usage: tools/crash_resume.sh OUT [KILLS]      (LAM=path/to/lam for another binary;
#        ONLY=NAME runs that job alone, e.g. ONLY=train-frames)
# needs: a built lam (cargo build --release -p lam)
set -euo pipefail
OUT=${1:?output folder}
KILLS=${2:-10}
LAM=${LAM:-target/release/lam}
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*

# Compares two safetensors files, or two shard folders (every shard-*.safetensors and the
# index), tensor by tensor and bit for bit (the files' headers may order tensors differently).
cat >"$OUT/compare.py" <<'PY'
import glob, json, os, struct, sys
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    return {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in head.items() if k != "__metadata__"}
a, b = sys.argv[1], sys.argv[2]
if os.path.isfile(a):
    ta, tb = tensors(a), tensors(b)
    diff = sorted(k for k in ta.keys() | tb.keys() if ta.get(k) != tb.get(k))
    print(f"{len(ta)} tensors equal bit for bit" if not diff else f"DIFFER in {len(diff)} tensors: {diff[:3]}")
else:
    names = sorted(os.path.basename(p) for p in glob.glob(a + "/shard-*.safetensors"))
    other = sorted(os.path.basename(p) for p in glob.glob(b + "/shard-*.safetensors"))
    bad = [n for n in names if n not in other or tensors(f"{a}/{n}") != tensors(f"{b}/{n}")]
    index = lambda d: {k: v for k, v in json.load(open(d + "/index.json")).items()
                       if "time" not in k and "second" not in k}
    if names != other or bad or index(a) != index(b):
        print(f"DIFFER: shards {len(names)} vs {len(other)}, {bad[:3]} differ, "
              f"index equal: {index(a) == index(b)}")
    else:
        print(f"{len(names)} shards equal tensor by tensor, index equal")
PY

# Data: embedding shards with hidden actions (lam train), the same kind with the actions
# written (lam control fit), a sim recording (lam lawm).
"$LAM" data synthetic --out "$OUT/syn" --clips 512 >/dev/null
"$LAM" data synthetic --out "$OUT/syn-labeled" --clips 256 --labeled >/dev/null
"$LAM" sim record --task reach --domain human --policy random --episodes 20 --seed 5 \
  --out "$OUT/rec" --quiet >/dev/null
# Labeled robot demos (lam lawm finetune) and a small sim encoder (lam embed).
"$LAM" sim record --task reach --domain robot --policy mixed --episodes 10 --seed 6 \
  --out "$OUT/robot" --quiet >/dev/null
"$LAM" encoder pretrain --data "$OUT/rec" --out "$OUT/enc" --steps 20 --quiet >/dev/null

# Kills "$@" (with RUN replaced by the crashed folder, and EXTRA appended) at KILLS random
# moments spread over SECS seconds and restarts it each time; leaves it to finish the last
# time. Sets kills and restarts.
kill_and_restart() {
  local name=$1 crashed=$2 secs=$3 extra=$4
  shift 4
  kills=0 restarts=0
  while :; do
    restarts=$((restarts + 1))
    # shellcheck disable=SC2086
    "${@//RUN/$crashed}" $extra >"$OUT/$name.log" 2>&1 &
    local pid=$!
    if ((kills < KILLS)); then
      # A random moment, spread so that KILLS kills fit in the run's length.
      sleep "$(python3 -c "import random; print(round(random.uniform(0.3, max(0.5, 2 * $secs / $KILLS)), 2))")"
      if kill -9 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        kills=$((kills + 1))
        continue
      fi
    fi
    if ! wait "$pid"; then
      echo "$name: the resumed run failed after $kills kills:"; tail -5 "$OUT/$name.log"
      return 1
    fi
    return 0
  done
}

# The weights file $2 of run folder $1: CKPT in $2 stands for its latest checkpoint.
weights_of() {
  echo "$1/${2//CKPT/checkpoints/$(cat "$1/checkpoints/latest" 2>/dev/null)}"
}

# $1 name, $2 weights file relative to the run folder (CKPT: its latest checkpoint), $3...
# command taking the run folder as RUN (substituted).
check() {
  local name=$1 weights=$2
  shift 2
  if [[ -n ${ONLY:-} && $ONLY != "$name" ]]; then return 0; fi
  local clean="$OUT/$name-clean" crashed="$OUT/$name-crashed"
  local t0=$SECONDS
  "${@//RUN/$clean}" >/dev/null 2>&1
  local secs=$((SECONDS - t0))
  kill_and_restart "$name" "$crashed" "$secs" --resume "$@" || return 1
  local verdict
  verdict=$(python3 "$OUT/compare.py" "$(weights_of "$clean" "$weights")" \
    "$(weights_of "$crashed" "$weights")")
  echo "$name: $kills SIGKILLs at random moments, $restarts starts; final weights vs the uninterrupted run (${secs} s): $verdict"
  [[ $verdict == *equal* && $verdict != DIFFER* ]]
}

# lam embed resumes by itself (shards already written are kept): the same command is
# restarted, and every shard tensor and the index are compared.
check_embed() {
  if [[ -n ${ONLY:-} && $ONLY != embed ]]; then return 0; fi
  local name=embed clean="$OUT/embed-clean" crashed="$OUT/embed-crashed"
  local cmd=("$LAM" embed --data "$OUT/rec" --encoder "$OUT/enc/encoder" --out RUN --fps 5 \
    --frames 4 --stride 2 --pooling keypoints --clips-per-shard 64)
  local t0=$SECONDS
  "${cmd[@]//RUN/$clean}" >/dev/null 2>&1
  local secs=$((SECONDS - t0))
  kill_and_restart "$name" "$crashed" "$secs" "" "${cmd[@]}" || return 1
  local verdict
  verdict=$(python3 "$OUT/compare.py" "$clean" "$crashed")
  echo "$name: $kills SIGKILLs at random moments, $restarts starts; shards vs the uninterrupted run (${secs} s): $verdict"
  [[ $verdict == *equal* && $verdict != DIFFER* ]]
}

status=0
check train CKPT/model.safetensors \
  "$LAM" train --data "$OUT/syn" --run RUN --steps 300 --set train.checkpoint_every=25 --quiet \
  || status=1
# End-to-end from pixels: the encoder of the last checkpoint (the world model beside it is
# compared by the in-process test end_to_end_trains_writes_a_usable_encoder_and_resumes_exactly).
check train-frames CKPT/encoder.safetensors \
  "$LAM" train --frames "$OUT/rec" --run RUN --steps 60 --set train.checkpoint_every=5 --quiet \
  || status=1
check control-fit controller.safetensors \
  "$LAM" control fit --run "$OUT/train-clean" --data "$OUT/syn-labeled" --out RUN --steps 1500 \
  --frame-conditioned \
  || status=1
check encoder-pretrain encoder/model.safetensors \
  "$LAM" encoder pretrain --data "$OUT/rec" --out RUN --steps 60 --checkpoint-every 5 \
  --probe-episodes 0 --quiet \
  || status=1
check lawm-pretrain CKPT/policy.safetensors \
  "$LAM" lawm pretrain --data "$OUT/rec" --out RUN --steps 60 --checkpoint-every 5 --quiet \
  || status=1
check lawm-finetune CKPT/policy.safetensors \
  "$LAM" lawm finetune --data "$OUT/robot" --init "$OUT/lawm-pretrain-clean" --out RUN \
  --steps 60 --checkpoint-every 5 --quiet \
  || status=1
check_embed || status=1
exit $status
