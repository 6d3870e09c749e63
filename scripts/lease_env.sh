# Sourced by the scripts/gpu_*.sh lease scripts: open_clip and its two pure-Python needs from the
# wheels carried in .whl/ (nothing can be downloaded on a lent machine), and $L/nada-train, the CLI
# without an installed entry point. Needs $L.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=${PYTHONPATH:-$PWD}:/tmp/site
fi
cat > "$L/nada-train" <<'EOF'
#!/bin/sh
exec python3 -c 'import sys; from nada_train.cli.train import main_entry; sys.argv[0] = "nada-train"; main_entry()' "$@"
EOF
chmod +x "$L/nada-train"
