#!/usr/bin/env bash
# SIGKILL-and-resume check for lam's long jobs: runs each job once uninterrupted, then again
# killed with SIGKILL at KILLS random moments (the same command with --resume restarts it
# each time, as a scheduler would after a preemption), and compares the final weights
# byte for byte. Prints one line per job and exits 1 if any differ or a run fails.
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
      # A random moment within the uninterrupted run's length (at least 0.3 s in).
      sleep "$(python3 -c "import random; print(round(random.uniform(0.3, max(0.4, $secs * 0.8)), 2))")"
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
  local a b
  a=$(sha256sum "$clean/checkpoints/$(cat "$clean/checkpoints/latest")/$weights" | cut -c1-16)
  b=$(sha256sum "$crashed/checkpoints/$(cat "$crashed/checkpoints/latest")/$weights" | cut -c1-16)
  if [[ $a == "$b" ]]; then
    echo "$name: $kills SIGKILLs, $restarts starts, final weights equal byte for byte ($a; uninterrupted run ${secs} s)"
  else
    echo "$name: $kills SIGKILLs, final weights DIFFER ($a vs $b)"
    return 1
  fi
}

status=0
check train model.safetensors \
  "$LAM" train --data "$OUT/syn" --run RUN --steps 300 --set train.checkpoint_every=25 --quiet \
  || status=1
check lawm-pretrain policy.safetensors \
  "$LAM" lawm pretrain --data "$OUT/rec" --out RUN --steps 60 --checkpoint-every 5 --quiet \
  || status=1
exit $status
