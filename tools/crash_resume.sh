#!/usr/bin/env bash
# SIGKILL-and-resume check for lam's long jobs: runs each job once uninterrupted, then again
# killed with SIGKILL at KILLS random moments (the same command with --resume restarts it
# each time, as a scheduler would after a preemption), and compares the final weights
# tensor by tensor, bit for bit (the files' headers may order them differently). Prints one line per job and exits 1 if any differ or a run fails.
#
# usage: tools/crash_resume.sh OUT [KILLS]      (LAM=path/to/lam for another binary)
# needs: a built lam (cargo build --release -p lam)
set -euo pipefail
OUT=${1:?output folder}
KILLS=${2:-10}
LAM=${LAM:-target/release/lam}
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*

# Data: embedding shards with hidden actions (lam train), a sim recording (lam lawm).
"$LAM" data synthetic --out "$OUT/syn" --clips 512 >/dev/null
"$LAM" sim record --task reach --domain human --policy random --episodes 20 --seed 5 \
  --out "$OUT/rec" --quiet >/dev/null

# $1 name, $2 weights file relative to the run folder's latest checkpoint, $3... command
# taking the run folder as RUN (substituted).
check() {
  local name=$1 weights=$2
  shift 2
  local clean="$OUT/$name-clean" crashed="$OUT/$name-crashed"
  local t0=$SECONDS
  "${@//RUN/$clean}" >/dev/null 2>&1
  local secs=$((SECONDS - t0))
  local kills=0 restarts=0
  while :; do
    restarts=$((restarts + 1))
    "${@//RUN/$crashed}" --resume >"$OUT/$name.log" 2>&1 &
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
    break
  done
  local verdict
  verdict=$(python3 - "$clean/checkpoints/$(cat "$clean/checkpoints/latest")/$weights" \
    "$crashed/checkpoints/$(cat "$crashed/checkpoints/latest")/$weights" <<'PY'
import json, struct, sys
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    return {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in head.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
print(f"{len(a)} tensors equal bit for bit" if not diff else f"DIFFER in {len(diff)} tensors: {diff[:3]}")
PY
  )
  echo "$name: $kills SIGKILLs at random moments, $restarts starts; final weights vs the uninterrupted run (${secs} s): $verdict"
  [[ $verdict != DIFFER* ]]
}

status=0
check train model.safetensors \
  "$LAM" train --data "$OUT/syn" --run RUN --steps 300 --set train.checkpoint_every=25 --quiet \
  || status=1
check lawm-pretrain policy.safetensors \
  "$LAM" lawm pretrain --data "$OUT/rec" --out RUN --steps 60 --checkpoint-every 5 --quiet \
  || status=1
exit $status
