#!/usr/bin/env bash
# The GPU part of issue 15, prepared on the CPU (it has not yet run on a GPU):
#   A. 1024-px config-f inference in process: nada-generate's precision gate on the GPU, eager and CUDA
#      graph of the inference copy (fp32; fp16 with fp32 styles and demodulation), AOTInductor packages
#      built for cuda (fp32, fp16), batches 1 4 16 32, share of the compute floor;
#   B. nada-export --engine aoti --device cuda of a 1024-px generator: build time, parity, file sizes;
#   C. (STAGE=C, a second call with the nvidia-pytriton wheel in .whl/) the same repository served by
#      Triton on the GPU, batch 1 over gRPC with and without shared memory;
#   E. (STAGE=E) the encoders beside the 1024-px synthesis: e4e, ReStyle-e4e (5 steps), eager and
#      AOTInductor for cuda, batches 1 and 8 (benchmarks/encoder.py);
#   F. (STAGE=F, with the nvidia-pytriton wheel) lightweight domains served (issue 25): one model of 1 and
#      64 domains against 8 models of one domain each: RSS, start to ready, p50 of 8 images in 8 domains
#      against 8 in one, images/s (benchmarks/domains.py).
# Run from the repository root:  OUT=/some/dir bash docs/recipes/gpu-1024px-aoti-and-serving.sh
# Everything lands in $OUT/results.tgz (logs, JSON, plots). DEV=cpu QUICK=1 runs it tiny on a CPU.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/gpu-out}; DEV=${DEV:-cuda}; QUICK=${QUICK:-0}; STAGE=${STAGE:-AB}
L=/tmp/gpu-session; mkdir -p "$L" "$OUT"
T0=$(date +%s); stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
pack() { tar -czf "$OUT/results.tgz.tmp" -C "$L" --exclude="*.pt2" --exclude="*.safetensors" . && mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"; }
. docs/recipes/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
if [ "$QUICK" = 1 ]; then S=64; BB="1 4"; R=3; else S=1024; BB="1 4 16 32"; R=30; fi
G=$L/random$S.safetensors
python3 -c "from nada_train.checkpoints import random_generator, save_safetensors; save_safetensors(random_generator($S), '$G')"

if [[ "$STAGE" == *A* ]]; then
  stamp "A. in-process inference, $S px"
  timeout 120 python3 -c 'import sys; from nada_train.cli.generate import main_entry; sys.argv[0] = "nada-generate"; main_entry()' \
    "$G" --device $DEV --seeds 0-15 --out "$L/generated" > "$L/generate.log" 2>&1
  tail -n 1 "$L/generate.log"
  for dt in fp32 fp16; do
    timeout 150 python3 -m benchmarks.inference --generator "$G" --device $DEV --backends eager cudagraph --batches $BB \
      --dtype $dt --requests $R --min-seconds 1 --json "$L/inference-$dt.json" --plot "$L/inference-$dt.png" > "$L/inference-$dt.log" 2>&1
    tail -n 8 "$L/inference-$dt.log"
  done
  for dt in fp32 fp16; do
    timeout 240 python3 -m benchmarks.inference --generator "$G" --device $DEV --backends aoti --batches $BB --dtype $dt \
      --requests $R --min-seconds 1 --json "$L/inference-aoti-$dt.json" --plot "$L/inference-aoti-$dt.png" > "$L/inference-aoti-$dt.log" 2>&1
    tail -n 8 "$L/inference-aoti-$dt.log"
  done
  pack
fi
if [[ "$STAGE" == *B* ]]; then
  stamp "B. nada-export --engine aoti --device $DEV"
  timeout 300 python3 -c 'import sys; from nada_export.cli.export import main_entry; sys.argv[0] = "nada-export"; main_entry()' \
    "$G" --name r$S --engine aoti --device $DEV --max-batch 32 --repository "$L/repo-aoti" > "$L/export-aoti.log" 2>&1
  tail -n 4 "$L/export-aoti.log"
  pack
fi
if [[ "$STAGE" == *C* ]]; then
  stamp "C. Triton on the GPU: gRPC vs shared memory"
  timeout 400 python3 -m benchmarks.inference --generator "$G" --device $DEV --backends triton triton-shm --batches 1 4 \
    --concurrency 1 --requests $R --min-seconds 1 --json "$L/inference-triton.json" --plot "$L/inference-triton.png" > "$L/inference-triton.log" 2>&1
  tail -n 10 "$L/inference-triton.log"
  pack
fi
if [[ "$STAGE" == *E* ]]; then
  stamp "E. encoders beside the synthesis, decoder $S px"
  timeout 400 python3 -m benchmarks.encoder --size $S --device $DEV --backends eager aoti --batches 1 8 \
    --restyle-batches 1 8 --requests $R --min-seconds 1 --json "$L/encoder.json" > "$L/encoder.log" 2>&1
  tail -n 14 "$L/encoder.log"
  pack
fi
if [[ "$STAGE" == *F* ]]; then
  stamp "F. many domains in one served model, $S px"
  if [ "$QUICK" = 1 ]; then DOM="1 8"; SEP=2; else DOM="1 64"; SEP=8; fi
  timeout 540 python3 -m benchmarks.domains --size $S --domains $DOM --separate $SEP --requests 5 --clients 4 \
    --json "$L/domains.json" > "$L/domains.log" 2>&1
  tail -n 8 "$L/domains.log"
  pack
fi
stamp done
