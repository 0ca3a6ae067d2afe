#!/usr/bin/env bash
# The closed-loop comparison of issue 5 on one task of the simulated suite, end to end:
# unlabeled human video -> sim encoder -> mean-pooled shards -> latent action model
# (standardised tokens) -> controller on a small labeled robot set; an action-conditioned world
# model on the same labeled robot set; then `lam plan eval` with every planner (robot-action
# space through the controller), the action-conditioned model with CEM, the random policy and
# the scripted expert, all on the same protocol episodes.
#
# usage: tools/plan_compare.sh TASK OUT [EPISODES]   (LAM=path/to/lam to use another binary)
set -euo pipefail
TASK=${1:?task: reach, push, pusht or sort}
OUT=${2:?output folder}
EPISODES=${3:-20}
LAM=${LAM:-target/release/lam}
mkdir -p "$OUT"
rm -rf "$OUT"/{human,robot,encoder,sh,sr,lam,ac,ctrl,plan}
"$LAM" sim record --task "$TASK" --domain human --policy mixed --nuisances off --episodes 200 --out "$OUT/human" --quiet
"$LAM" sim record --task "$TASK" --domain robot --policy mixed --episodes 100 --seed 5000 --out "$OUT/robot" --quiet
"$LAM" encoder pretrain --data "$OUT/human" --out "$OUT/encoder" --patch 16 --dim 32 --steps 400 --probe-task "$TASK" --probe-domain robot --quiet
for s in human:sh:0.05 robot:sr:0.2; do
  IFS=: read -r src dst val <<<"$s"
  "$LAM" embed --data "$OUT/$src" --encoder "$OUT/encoder/encoder" --out "$OUT/$dst" --fps 10 --frames 8 --stride 4 --val-fraction "$val" --pooling mean
done
"$LAM" train --data "$OUT/sh" --run "$OUT/lam" --steps 1000 --set model.standardize=true --quiet
"$LAM" eval --run "$OUT/lam" --data "$OUT/sh" --out "$OUT/eval.json"
"$LAM" train --data "$OUT/sr" --run "$OUT/ac" --steps 1000 --set model.standardize=true --set model.conditioning=action --set model.latent_dim=2 --quiet
"$LAM" control fit --run "$OUT/lam" --data "$OUT/sr" --out "$OUT/ctrl"
"$LAM" plan eval --run "$OUT/lam" --action-run "$OUT/ac" --encoder "$OUT/encoder/encoder" --controller "$OUT/ctrl" \
  --task "$TASK" --episodes "$EPISODES" --planner random-shooting,cem,icem,mppi,gradient --space action \
  --samples 100 --iterations 10 --elites 10 --baselines --out "$OUT/plan"
