#!/usr/bin/env bash
# Install nada into ./.venv, then run the main job once so you see it work.
#   NADA_SKIP_DEMO=1 ./install.sh     install only
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch pinned: an unpinned torch resolves to a multi-GB CUDA build. 2.13.0 is a CPU wheel where
# this project is developed; on a GPU machine the same pin installs the CUDA build.
pip install -q torch==2.13.0 torchvision==0.28.0
pip install -q -e '.[serve,test,bench]'
echo "installed: $(python -c 'import nada_train, torch; print("nada", nada_train.__version__, "torch", torch.__version__)')"

if [ "${NADA_SKIP_DEMO:-0}" = "1" ]; then exit 0; fi
# The main job on the built-in default. Until a trained built-in world ships (issue 5), this is a
# smoke run: a 64-px generator and a ViT-B-32 with RANDOM weights (no pretrained weights can be
# downloaded here), 2 iterations, showing every output a real run writes.
demo=runs/demo
rm -rf "$demo"
nada-train --generator random:64 --clip ViT-B-32:random --source photo --target sketch \
  --iterations 2 --sample-every 1 --out "$demo" --quiet --device cpu
nada-generate "$demo" --seeds 0-3 --truncation 0.7 --out "$demo/generated" --grid
echo "demo run (random weights): $demo"
