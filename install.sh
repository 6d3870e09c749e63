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
pip install -q -e '.[all,test,bench]'
# nada-app's browser test drives Debian's chromium (Playwright's own browsers are a download); as root
# with apt-get it is installed here, else the test says how to get it
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
    || echo "install.sh: could not install chromium (apt-get install chromium); the browser test needs it"
fi
echo "installed: $(python -c 'import nada, torch; print("nada", nada.__version__, "torch", torch.__version__)')"

if [ "${NADA_SKIP_DEMO:-0}" = "1" ]; then exit 0; fi
# The main job on the built-in default: the built-in world's 64-px generator (trained on photos of
# shapes only) adapted photo -> pixel with the world's own small CLIP, then judged (metrics.json);
# then fresh renders encoded and drawn in the new domain. Under 3 minutes on a 2-core CPU; no download.
out=runs/default
rm -rf "$out"
nada-train --out "$out" --quiet
nada-generate "$out" --seeds 0-7 --out "$out/generated" --grid
# pictures the generator never drew (fresh renders), through the world's encoder, in the run's domain
python -m nada_world.train_encoder --evaluate builtin:world --run "$out" --n 256 --figure "$out/edit.png" \
  > "$out/edit.json"
echo "default run: $out (samples/: frozen row above adapted row; metrics.json: the judge's verdict;"
echo "  edit.png: fresh renders, their reconstructions, the run's images of them; edit.json: judged)"
