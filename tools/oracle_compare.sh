#!/usr/bin/env bash
# Oracle rows of the closed-loop comparison (issue "Control that works", step 1): the frame
# embedding is the simulator's true state (agent position, object poses, the walls that place
# reach's door), so the rows say whether dynamics and planning work when vision is perfect.
# Records TASK in the robot domain with the random exploration policy (1,000 episodes: its
# long full-speed holds press the agent into walls and objects, which the model must see;
# POLICY=mixed for the expert with random segments, which moves objects more often),
# embeds them with the oracle encoder in action blocks of 5 steps (2 fps of the 10 fps
# recording) and 4-frame clips (history 3), trains the action-conditioned world model for
# 6,000 steps and plans the protocol with CEM 300 x 30 / 30 elites, horizon 5 blocks, one
# action held per block, MSE cost at the best step of the horizon.
#
# ENCODER=DIR (a sim encoder folder) embeds the frames with that encoder instead, pooled by
# POOLING_KIND (keypoints by default; none keeps every token): the same row from pixels.
# STANDARDIZE=false trains on the embedding as it is instead of standardising each channel
# (keypoints that barely move are otherwise scaled up to the agent's and the object's spread);
# SCALE=shared standardises every channel by one shared deviation instead, which keeps their
# sizes relative to each other (model.standardize_scale; what lam demo does with transport).
# STEPS=N trains N steps instead of 6,000 (12,000 plans reach from pixels 96-98%, 6,000 92%).
#
# usage: tools/oracle_compare.sh OUT [EPISODES] [TASK]   (LAM=path/to/lam for another binary)
set -euo pipefail
OUT=${1:?output folder}
EPISODES=${2:-20}
TASK=${3:-reach}
LAM=${LAM:-target/release/lam}
POLICY=${POLICY:-random}
STANDARDIZE=${STANDARDIZE:-true}
SCALE=${SCALE:-channel}
STEPS=${STEPS:-6000}
SCALING=()
if [ "$STANDARDIZE" = true ]; then SCALING=(--set "model.standardize_scale=$SCALE"); fi
ENCODER=${ENCODER:-oracle}
POOLING=()
if [ "$ENCODER" != oracle ]; then POOLING=(--pooling "${POOLING_KIND:-keypoints}"); fi
mkdir -p "$OUT"
rm -rf "$OUT"/{robot,shards,ac,plan}
"$LAM" sim record --task "$TASK" --domain robot --policy "$POLICY" --episodes 1000 --seed 7000 \
  --out "$OUT/robot" --quiet
"$LAM" embed --data "$OUT/robot" --encoder "$ENCODER" --out "$OUT/shards" --fps 2 --frames 4 \
  --stride 1 --val-fraction 0.05 "${POOLING[@]}"
"$LAM" train --data "$OUT/shards" --run "$OUT/ac" --steps "$STEPS" --set model.standardize=$STANDARDIZE \
  "${SCALING[@]}" --set model.conditioning=action --set model.latent_dim=10 --quiet   # 5 robot actions of 2-D per block
"$LAM" plan eval --action-run "$OUT/ac" --encoder "$ENCODER" --task "$TASK" --episodes "$EPISODES" \
  --cost mse --objective min --samples 300 --iterations 30 --elites 30 --hold-actions \
  --out "$OUT/plan"
