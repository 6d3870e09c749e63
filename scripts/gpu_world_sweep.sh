#!/usr/bin/env bash
# Adaptation settings of the built-in world, side by side on a GPU (README, issue 5): each target
# style under eight settings, judged (metrics.json), with one before/after grid per target.
# Run from the repository root:  OUT=/some/dir bash scripts/gpu_world_sweep.sh   (about 4 minutes on
# an H100; it ran as two halves of four settings each).
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/sweep-out}; DEV=${DEV:-cuda}; L=/tmp/sweep; rm -rf $L; mkdir -p $L/runs
if ls .whl/*.whl >/dev/null 2>&1; then  # open_clip and its two pure-Python needs, carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site
fi
C=nada_train/world/assets/clip.safetensors
cat > $L/nada-train <<'SH'
#!/bin/sh
exec python3 -c 'import sys; from nada_train.cli.train import main_entry; sys.argv[0] = "nada-train"; main_entry()' "$@"
SH
chmod +x $L/nada-train; : > $L/jobs
for t in sketch neon pixel; do
  for setting in "all 0.01 400 0" "all 0.03 300 0" "auto 0.02 400 0" "all 0.01 600 1" "all 0.01 300 1" "all 0.01 300 0.5" "all 0.02 300 0.3" "all 0.005 300 2"; do
    set -- $setting
    echo "$L/nada-train --out $L/runs/$t-$1-lr$2-i$3-g$4 --target $t --clip world:$C --layers $1 --lr $2 --iterations $3 --global-weight $4 --device $DEV -q" >> $L/jobs
  done
done
timeout 300 xargs -d '\n' -P 12 -I{} sh -c '{} > /dev/null 2>&1' < $L/jobs
for t in sketch neon pixel; do python3 -m nada_train.world.figure $L/runs/$t-* --out $OUT/grid-$t.png > /dev/null 2>&1; done
python3 - $L <<'PY'
import json, pathlib, sys
print("| run | target | kept | dir |")
for m in sorted(pathlib.Path(sys.argv[1]).glob("runs/*/metrics.json")):
    d = json.loads(m.read_text())
    print(f"| {m.parent.name} | {d['target_style_rate']:.2f} | {d['content_kept_rate']:.2f} | {d['directional_clip_similarity']:.3f} | {d['adapted_style_counts']}")
PY
tar -czf $OUT/runs.tgz -C $L --exclude='*.safetensors' --exclude=state runs
