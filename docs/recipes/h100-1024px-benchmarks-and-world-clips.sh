#!/usr/bin/env bash
# The GPU work of issues 2, 4 and 5 in one run on an NVIDIA H100 80GB HBM3 (about 9 minutes):
#   A. world: three adversarially trained world CLIPs and a longer generator fine-tune, side by side;
#   B. benchmarks: 1024-px inference (eager and CUDA graphs, fp32 and bf16) and 1024-px training
#      speed with two CLIP models;
#   C. world: each CLIP through the pixel-space gate (probe_clip) and through the default run for
#      every target style (nada-train, judged by metrics.json), with before/after grids.
# Run from the repository root:  OUT=/some/dir bash docs/recipes/h100-1024px-benchmarks-and-world-clips.sh
# Weights land in $OUT/world/, everything else in $OUT/results.tgz (logs, JSON, grids, plots).
# DEV=cpu QUICK=1 runs the same steps tiny on a CPU, to check the script before a GPU run.
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/gpu-out}; DEV=${DEV:-cuda}; QUICK=${QUICK:-0}
L=/tmp/gpu-session; A=nada_world/assets; W=$OUT/world
rm -rf "$L"; mkdir -p "$L/runs" "$W"
T0=$(date +%s); stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
pack() { tar -czf "$OUT/results.tgz.tmp" -C "$L" --exclude="*.safetensors" . && mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"; }
. docs/recipes/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>/dev/null
python3 -c "import torch, numpy; from nada_train.clip.compat import import_open_clip; print('torch', torch.__version__, 'open_clip', import_open_clip().__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

if [ "$QUICK" = 1 ]; then M=0.1; CB="--batch 32 --pool 256 --refresh 0.25"; GB="--batch 16"; CW=1; GW=1
else M=2.5; CB="--batch 512 --pool 16384 --refresh 0.125"; GB="--batch 128"; CW=3; GW=5; fi

stamp "A. world training, side by side ($M min each)"
clip() {  # NAME MODEL EPS SEED
  timeout 260 python3 -m nada_world.train_clip --model "$2" --adv-eps "$3" --adv-steps 3 --seed "$4" --lr 1e-3 \
    --minutes "$M" $CB --device "$DEV" --workers $CW --out "$W/clip-$1.safetensors" > "$L/train-clip-$1.log" 2>&1
}
clip rn-e1.5 nada-world-clip-rn 1.5 11 &
clip rn-e4 nada-world-clip-rn 4 12 &
clip p8-e2 nada-world-clip-p8 2 13 &
timeout 260 python3 -m nada_world.train_generator --continue-from "$A/generator.safetensors" --finetune-minutes "$M" \
  $GB --lr 1e-3 --seed 7 --device "$DEV" --workers $GW --out "$W/generator.safetensors" > "$L/train-generator.log" 2>&1 &
wait
tail -n 2 "$L"/train-*.log; pack

stamp "B. benchmarks"
if [ "$QUICK" = 1 ]; then S=64; BB="1 4"; IT=1; TC="--clip ViT-B-32:random"; else S=1024; BB="1 4 16"; IT=3; TC="--clip ViT-B-32:random --clip ViT-B-16:random"; fi
for dt in fp32 bf16; do
  timeout 90 python3 -m benchmarks.inference --size $S --device $DEV --backends eager cudagraph --batches $BB --dtype $dt \
    --requests 30 --min-seconds 1 --json "$L/inference-$S-$dt.json" --plot "$L/inference-$S-$dt.png" > "$L/inference-$S-$dt.log" 2>&1
  tail -n 12 "$L/inference-$S-$dt.log"
done
pack
timeout 130 python3 -m benchmarks.training --size $S $TC --layers auto all --precision fp32 bf16 --iterations $IT --batch 2 \
  --device $DEV --json "$L/training-$S.json" > "$L/training-$S.log" 2>&1
tail -n 9 "$L/training-$S.log"
pack
stamp "C. world evaluation"
# the longer-trained generator becomes the base for this evaluation only if the judge agrees more with it;
# the shipped file is put back when the script ends
cp "$A/generator.safetensors" "$L/generator-shipped.safetensors"
trap 'cp "$L/generator-shipped.safetensors" "$A/generator.safetensors"' EXIT
python3 - "$A/generator.safetensors" "$W/generator.safetensors" <<'PY' && cp "$W/generator.safetensors" "$A/generator.safetensors"
import json, sys
from safetensors import safe_open
def shape(p):
    with safe_open(p, "pt") as f:
        return json.loads(f.metadata()["world_report"])["shape"]
old, new = shape(sys.argv[1]), shape(sys.argv[2])
print(f"generator: judge shape agreement shipped {old:.3f}, fine-tuned {new:.3f}")
sys.exit(0 if new > old else 1)
PY
cp "$A/clip.safetensors" "$L/clip-shipped.safetensors"
CLIPS="shipped:$L/clip-shipped.safetensors"
for c in rn-e1.5 rn-e4 p8-e2; do [ -f "$W/clip-$c.safetensors" ] && CLIPS="$CLIPS $c:$W/clip-$c.safetensors"; done
ITER=""; STEPS=200; [ "$QUICK" = 1 ] && ITER="--iterations 2" && STEPS=5
: > "$L/jobs"
for entry in $CLIPS; do
  name=${entry%%:*}; file=${entry#*:}
  echo "python3 -m nada_world.probe_clip --clip $file --lr 0.01 0.03 0.1 --steps $STEPS --device $DEV --json $L/probe-$name.json > $L/probe-$name.log 2>&1" >> "$L/jobs"
  for t in sketch neon pixel; do
    echo "$L/nada-train --out $L/runs/$name-$t --clip $(python3 -c "from nada_world.models import clip_model_name as n; import sys; print(n(sys.argv[1]))" $file):$file --target $t --device $DEV -q $ITER > $L/run-$name-$t.log 2>&1" >> "$L/jobs"
  done
  echo "$L/nada-train --out $L/runs/$name-sketch-lr0.01 --clip $(python3 -c "from nada_world.models import clip_model_name as n; import sys; print(n(sys.argv[1]))" $file):$file --target sketch --lr 0.01 --layers all --device $DEV -q $ITER > $L/run-$name-sketch-lr0.01.log 2>&1" >> "$L/jobs"
done
timeout 120 xargs -d '\n' -P 10 -I{} sh -c '{}' < "$L/jobs"
for entry in $CLIPS; do
  name=${entry%%:*}
  python3 -m nada_world.figure "$L/runs/$name-sketch" "$L/runs/$name-neon" "$L/runs/$name-pixel" "$L/runs/$name-sketch-lr0.01" \
    --out "$L/grid-$name.png" > /dev/null 2>&1
done
python3 - "$L" <<'PY'
import json, pathlib, sys
L = pathlib.Path(sys.argv[1])
print("| CLIP | probe lr | CLIP says target | judge says target | judge content kept |")
print("|---|---|---|---|---|")
for p in sorted(L.glob("probe-*.json")):
    for r in json.loads(p.read_text())["rows"]:
        print(f"| {p.stem[6:]} | {r['lr']:g} | {r['clip_target_rate']:.2f} | {r['judge_target_rate']:.2f} | {r['judge_content_kept']:.2f} |")
PY
echo; python3 -m nada_world.table "$L"/runs/*
rm -f "$L"/runs/*/generator.safetensors; rm -rf "$L"/runs/*/state; pack

stamp "done"
