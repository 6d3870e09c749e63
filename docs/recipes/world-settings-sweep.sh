#!/usr/bin/env bash
# Adaptation settings of the built-in world, side by side on a GPU (README, issue 5): each target
# style under eight settings, judged (metrics.json), with one before/after grid per target.
# Run from the repository root:  OUT=/some/dir bash docs/recipes/world-settings-sweep.sh   (about 4 minutes on
# an H100; it ran as two halves of four settings each).
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/sweep-out}; DEV=${DEV:-cuda}; L=/tmp/sweep; rm -rf $L; mkdir -p $L/runs
. docs/recipes/gpu_env.sh
C=nada_world/assets/clip.safetensors
: > $L/jobs
for t in sketch neon pixel; do
  for setting in "all 0.01 400 0" "all 0.03 300 0" "auto 0.02 400 0" "all 0.01 600 1" "all 0.01 300 1" "all 0.01 300 0.5" "all 0.02 300 0.3" "all 0.005 300 2"; do
    set -- $setting
    echo "$L/nada-train --out $L/runs/$t-$1-lr$2-i$3-g$4 --target $t --clip nada-world-clip-rn:$C --layers $1 --lr $2 --iterations $3 --global-weight $4 --device $DEV -q" >> $L/jobs
  done
done
timeout 300 xargs -d '\n' -P 12 -I{} sh -c '{} > /dev/null 2>&1' < $L/jobs
for t in sketch neon pixel; do python3 -m nada_world.figure $L/runs/$t-* --out $OUT/grid-$t.png > /dev/null 2>&1; done
python3 -m nada_world.table $L/runs/*
tar -czf $OUT/runs.tgz -C $L --exclude='*.safetensors' --exclude=state runs
