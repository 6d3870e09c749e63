#!/usr/bin/env bash
# Issue 5's last lever, in one run on an NVIDIA H100 80GB HBM3 (about 9 minutes): a sharper world generator.
#   A. three fine-tunes of the shipped generator side by side: L1 regression alone (the control) and
#      with a patch critic's adversarial term at two weights; renders kept on the GPU (--pool);
#   B. each generator, the shipped one included, through the default run for every target style at
#      global weight 1 (the default) and 0.3, judged (metrics.json), with a before/after grid each.
# Run from the repository root:  OUT=/some/dir bash docs/recipes/world-generator-finetune.sh
# Generators land in $OUT/, everything else in $OUT/results.tgz (logs, metrics, grids, a table).
# On the H100 (8.6 min): A as above; B judged the shipped and the L1 generator before its 200-s limit
# (not the adversarial ones, whose samples agreed less with the scene), and results.tgz came out over the 16-MiB return limit
# with the runs' samples in it (now left out). The same H100 session then ran the shipped generator's last step:
#   python3 -m nada_world.train_generator --continue-from $OUT/generator-l1.safetensors --finetune-minutes 3 \
#     --batch 256 --pool 16384 --workers 12 --lr 1e-3 --seed 31 --device cuda --out generator.safetensors
# DEV=cpu QUICK=1 runs the same steps tiny on a CPU, to check the script before a GPU run.
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/gpu-out}; DEV=${DEV:-cuda}; QUICK=${QUICK:-0}
L=/tmp/gpu-generator; A=nada_world/assets
rm -rf "$L"; mkdir -p "$L/runs" "$OUT"
T0=$(date +%s); stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
pack() { tar -czf "$OUT/results.tgz.tmp" -C "$L" --exclude="*.safetensors" --exclude=trees --exclude=samples . && mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"; }
. docs/recipes/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null

if [ "$QUICK" = 1 ]; then M=0.1; TB="--batch 16 --pool 64 --workers 1"; ITER="--iterations 2"; P=2; TO=600
else M=4; TB="--batch 256 --pool 16384 --workers 4"; ITER=""; P=12; TO=200; fi

stamp "A. generator fine-tunes, side by side ($M min each)"
tune() {  # NAME ADVERSARIAL SEED
  timeout $(( ${M%.*} * 60 + 90 )) python3 -m nada_world.train_generator --continue-from "$A/generator.safetensors" \
    --finetune-minutes "$M" $TB --lr 1e-3 --adversarial "$2" --seed "$3" --device "$DEV" \
    --out "$OUT/generator-$1.safetensors" > "$L/train-$1.log" 2>&1
}
tune l1 0 21 &
tune adv0.01 0.01 22 &
tune adv0.05 0.05 23 &
wait
grep -h "finetune:\|judge on" "$L"/train-*.log; pack

stamp "B. the default run on each generator"
# each generator gets its own copy of the package, so that it is the built-in one there
: > "$L/jobs"
for name in shipped l1 adv0.01 adv0.05; do
  src="$OUT/generator-$name.safetensors"; [ "$name" = shipped ] && src="$A/generator.safetensors"
  [ -f "$src" ] || continue
  mkdir -p "$L/trees/$name" && cp -r nada_train "$L/trees/$name/" && cp "$src" "$L/trees/$name/$A/generator.safetensors"
  for t in sketch neon pixel; do
    for gw in 1 0.3; do
      echo "cd $L/trees/$name && PYTHONPATH=$L/trees/$name:/tmp/site $L/nada-train --out $L/runs/$name-$t-g$gw --target $t --global-weight $gw --device $DEV -q $ITER > $L/run-$name-$t-g$gw.log 2>&1" >> "$L/jobs"
    done
  done
done
timeout $TO xargs -d '\n' -P $P -I{} sh -c '{}' < "$L/jobs"
for name in shipped l1 adv0.01 adv0.05; do
  [ -d "$L/trees/$name" ] || continue
  (cd "$L/trees/$name" && PYTHONPATH=$L/trees/$name:/tmp/site python3 -m nada_world.figure \
    "$L/runs/$name-sketch-g1" "$L/runs/$name-neon-g1" "$L/runs/$name-pixel-g1" --out "$L/grid-$name.png" > "$L/grid-$name.log" 2>&1) || echo "grid $name failed: $(tail -n 1 "$L/grid-$name.log")"
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
from safetensors import safe_open
OUT = pathlib.Path(sys.argv[1])
print("| generator | judge shape / colour on its samples |")
print("|---|---|")
files = {"shipped": pathlib.Path("nada_world/assets/generator.safetensors")}
files.update((p.stem.removeprefix("generator-"), p) for p in sorted(OUT.glob("generator-*.safetensors")))
for name, path in files.items():
    with safe_open(str(path), "pt") as f:
        r = json.loads(f.metadata().get("world_report", "{}") or "{}")
    print(f"| {name} | {r.get('shape', float('nan')):.3f} / {r.get('colour', float('nan')):.3f} |")
PY
echo; python3 -m nada_world.table "$L"/runs/*
rm -f "$L"/runs/*/generator.safetensors; rm -rf "$L"/runs/*/state; pack
stamp "done"
