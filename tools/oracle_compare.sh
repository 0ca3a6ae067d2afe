#!/usr/bin/env bash
# Oracle rows of the closed-loop comparison (issue "Control that works", step 1): the frame
# embedding is the simulator's true state (agent position + the door's walls), so the rows say
# whether dynamics and planning work when vision is perfect. Records reach in the robot domain
# with the random policy (200 episodes) and the mixed policy (100), embeds both with the oracle
# encoder in action blocks of 5 steps (2 fps of the 10 fps recording) and 4-frame clips
# (history 3), trains the action-conditioned world model on the random-policy blocks and plans
# the protocol with CEM 300 x 30 / 30 elites, horizon 5 blocks, MSE cost, under each planning
# objective (final step, mean over steps, best step).
#
# usage: tools/oracle_compare.sh OUT [EPISODES]   (LAM=path/to/lam to use another binary)
set -euo pipefail
OUT=${1:?output folder}
EPISODES=${2:-20}
LAM=${LAM:-target/release/lam}
mkdir -p "$OUT"
rm -rf "$OUT"/{robotr,orr,oac,plan-*}
"$LAM" sim record --task reach --domain robot --policy random --episodes 200 --seed 7000 --out "$OUT/robotr" --quiet
"$LAM" embed --data "$OUT/robotr" --encoder oracle --out "$OUT/orr" --fps 2 --frames 4 --stride 1 --val-fraction 0.1
"$LAM" train --data "$OUT/orr" --run "$OUT/oac" --steps 1000 --set model.standardize=true \
  --set model.conditioning=action --set model.latent_dim=10 --quiet
for objective in final sum min; do
  "$LAM" plan eval --action-run "$OUT/oac" --encoder oracle --task reach --episodes "$EPISODES" \
    --cost mse --objective "$objective" --samples 300 --iterations 30 --elites 30 \
    --out "$OUT/plan-$objective"
done
