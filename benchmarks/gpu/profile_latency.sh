#!/usr/bin/env bash
# Latency profiles on one CUDA GPU: SD-1.5 at 512² and SDXL at 1024², fp16, request batch 1/2/4/8, 50 steps,
# classifier-free guidance on, random weights (per-step compute does not depend on weight values).
# Run from the repository root. Profiles go to $DEST, else $OUT (the device tool's output folder), else
# profiles/latency/, named MODEL-RES-GPU-random-measured.yaml. Estimated on an H100: about 4 minutes.
#
# Every knob is an environment variable, so the same lines rehearse on a CPU with the tiny models:
#   SD15=tiny SDXL=tiny-xl RES15=64 RESXL=64 DEVICE=cpu DTYPE=fp32 STEPS=2 BATCH=1,2 WARMUP=0 \
#     REPEATS15=1 REPEATSXL=1 WHEELS=none DEST=/tmp/lat PY=.venv/bin/python bash benchmarks/gpu/profile_latency.sh
set -euo pipefail

PY=${PY:-python3}
DEST=${DEST:-${OUT:-profiles/latency}}
SD15=${SD15:-sd15} RES15=${RES15:-512} REPEATS15=${REPEATS15:-3}
SDXL=${SDXL:-sdxl} RESXL=${RESXL:-1024} REPEATSXL=${REPEATSXL:-2}
DEVICE=${DEVICE:-cuda} DTYPE=${DTYPE:-fp16} STEPS=${STEPS:-50} BATCH=${BATCH:-1,2,4,8} WARMUP=${WARMUP:-2}
WHEELS=${WHEELS:-.whl}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

# diffusers is not installed on the device machine: wheels carried in .whl/ (benchmarks/gpu/README.md)
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
mkdir -p "$DEST"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
fi
"$PY" -c "import sys, torch, diffusers, transformers; print(sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"

# SD-1.5 first: it is the cheaper of the two, so a slow SDXL run still leaves one profile behind.
SECONDS=0
"$PY" -m sim profile latency --model "$SD15" --device "$DEVICE" --resolution "$RES15" --batch "$BATCH" \
  --steps "$STEPS" --dtype "$DTYPE" --warmup "$WARMUP" --repeats "$REPEATS15" --out "$DEST/"
echo "sd15 done after ${SECONDS} s"
"$PY" -m sim profile latency --model "$SDXL" --device "$DEVICE" --resolution "$RESXL" --batch "$BATCH" \
  --steps "$STEPS" --dtype "$DTYPE" --warmup "$WARMUP" --repeats "$REPEATSXL" --out "$DEST/"
echo "sdxl done after ${SECONDS} s"
ls -l "$DEST"
