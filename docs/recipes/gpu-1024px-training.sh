#!/usr/bin/env bash
# The GPU part of issue 17, prepared on the CPU (it has not yet run on a GPU): training at 1024 px with
# two CLIP models (ViT-B-32 + ViT-B-16, random weights: speed does not depend on them) and adaptive
# layer selection.
#   A. seconds per iteration by phase, fp32 and bf16, eager (the 0.29 s/it the issue starts from);
#   B. the compiled and captured step (--compile inductor / cudagraphs) against eager fp32: speed, loss
#      curve, chosen layers and final images, with a change of seed as the yardstick (goal <= 0.10 s/it);
#   C. what stepping 8 targets batched could save at most, and one run of 1 vs 8 targets;
#   D. the parametrizations (issue 25): full, channels and styles, every layer: s/it and peak GPU memory.
# Run from the repository root:  OUT=/some/dir bash docs/recipes/gpu-1024px-training.sh
# Everything lands in $OUT/results.tgz. DEV=cpu QUICK=1 runs it tiny on a CPU (a check of the script).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/gpu-out}; DEV=${DEV:-cuda}; QUICK=${QUICK:-0}; STAGE=${STAGE:-ABCD}
L=/tmp/gpu-training; mkdir -p "$L" "$OUT"
T0=$(date +%s); stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
pack() { tar -czf "$OUT/results.tgz.tmp" -C "$L" --exclude="*.safetensors" . && mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"; }
. docs/recipes/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
if [ "$QUICK" = 1 ]; then
  S=32; CLIPS="--clip nada-test-tiny:random"; IT=3; CMP=2; VARIANTS="fp32:off bf16:off fp32:inductor"
  export NADA_CLIP_CONFIG_DIR=$L/clip-configs; mkdir -p "$NADA_CLIP_CONFIG_DIR"
  python3 -c "import json; from tests.conftest import TINY_CLIP; json.dump(TINY_CLIP, open('$NADA_CLIP_CONFIG_DIR/nada-test-tiny.json', 'w'))"
else
  S=1024; CLIPS="--clip ViT-B-32:random --clip ViT-B-16:random"; IT=5; CMP=12
  VARIANTS="fp32:off bf16:off fp32:inductor bf16:inductor fp32:cudagraphs bf16:cudagraphs"
fi
if [[ "$STAGE" == *A* ]]; then
  stamp "A. eager step, $S px"
  timeout 240 python3 -m benchmarks.training --size $S $CLIPS --layers auto --iterations $IT --precision fp32 bf16 \
    --device $DEV --json "$L/training.json" > "$L/training.log" 2>&1
  tail -n 6 "$L/training.log"
  pack
fi
if [[ "$STAGE" == *B* ]]; then
  stamp "B. compiled and captured step against eager"
  timeout 420 python3 -m benchmarks.training --size $S $CLIPS --layers auto --compare --iterations $CMP --variants $VARIANTS \
    --device $DEV --json "$L/compare.json" > "$L/compare.log" 2>&1
  tail -n 10 "$L/compare.log"
  pack
fi
if [[ "$STAGE" == *C* ]]; then
  stamp "C. several targets: the batching bound, then 1 vs 8 targets"
  timeout 120 python3 -m benchmarks.training --size $S --batching-bound --device $DEV --json "$L/batching.json" > "$L/batching.log" 2>&1
  tail -n 4 "$L/batching.log"
  timeout 300 python3 -m benchmarks.training --size $S $CLIPS --layers auto --targets 1 8 --iterations $IT --device $DEV \
    --json "$L/targets.json" > "$L/targets.log" 2>&1
  tail -n 5 "$L/targets.log"
  pack
fi
if [[ "$STAGE" == *D* ]]; then
  stamp "D. parametrizations, $S px"
  timeout 300 python3 -m benchmarks.training --size $S $CLIPS --layers all --iterations $IT \
    --parametrization full channels styles --device $DEV --json "$L/parametrizations.json" > "$L/parametrizations.log" 2>&1
  tail -n 6 "$L/parametrizations.log"
  pack
fi
stamp done
