# Sourced by the GPU recipes in docs/recipes/: open_clip and its two pure-Python needs from the
# wheels carried in .whl/ (nothing can be downloaded on the GPU machine), and $L/nada-train, the CLI
# without an installed entry point. Needs $L.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=${PYTHONPATH:-$PWD}:/tmp/site
fi
# nada itself, editable and without dependencies: its entry points (the built-in world as nada-train's
# default base) exist only in an installed package's metadata
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir -e . >/dev/null 2>&1 \
  || echo "gpu_env: could not install nada's entry points; nada-train needs --generator there" >&2
export NADA_CLIP_CONFIG_DIR=$PWD/nada_world/assets  # world CLIP files written elsewhere name these configs
cat > "$L/nada-train" <<'EOF'
#!/bin/sh
exec python3 -c 'import sys; from nada_core.entry_points import train; sys.argv[0] = "nada-train"; train()' "$@"
EOF
chmod +x "$L/nada-train"
