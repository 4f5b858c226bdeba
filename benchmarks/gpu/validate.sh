#!/usr/bin/env bash
# Real-GPU validation on one CUDA GPU, in one call: latency profiles for SD-1.5 512² and SDXL 1024² (fp16, batch
# 1/2/4/8, random weights; profile_latency.sh), a short simulation with the measured profile of $VALIDATE (default
# sd15), then `python -m sim validate` on $SAMPLE sampled requests and its report. Everything stops by $BUDGET_S
# seconds: the validation is interrupted (SIGINT) in time to report what it measured. Run from the repository root.
# Results go flat into $DEST (else $OUT, else benchmarks/out/validate): the two profiles, validation.md/.csv/.png
# and validation.tar.gz (run folder and whole validation folder), so that they fit the device tool's 8 files.
#
# CPU rehearsal with the tiny models (the same lines; benchmarks/gpu/README.md gives the timing):
#   CPU=1 DEST=/tmp/val PY=.venv/bin/python bash benchmarks/gpu/validate.sh
set -euo pipefail

PY=${PY:-python3}
DEST=${DEST:-${OUT:-benchmarks/out/validate}}
WORK=${WORK:-$(mktemp -d /tmp/validate.XXXXXX)}
BUDGET_S=${BUDGET_S:-420}
SAMPLE=${SAMPLE:-64}
VALIDATE=${VALIDATE:-sd15}
WHEELS=${WHEELS:-.whl}
LIMIT=${LIMIT:-1500}
if [ "${CPU:-0}" = 1 ]; then  # tiny random models on the CPU: the code path, not a measurement
  export SD15=${SD15:-tiny} SDXL=${SDXL:-tiny-xl} RES15=${RES15:-32} RESXL=${RESXL:-32} DEVICE=cpu DTYPE=fp32
  export STEPS=${STEPS:-2} BATCH=${BATCH:-1,2} WARMUP=${WARMUP:-0} REPEATS15=1 REPEATSXL=1
  SAMPLE=${SAMPLE_CPU:-8} VALIDATE=${VALIDATE_CPU:-tiny}
fi
export DEVICE=${DEVICE:-cuda} DTYPE=${DTYPE:-fp16} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
SECONDS=0

# diffusers and simpy are not installed on the device machine: wheels carried in .whl/ (benchmarks/gpu/README.md)
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
mkdir -p "$DEST" "$WORK/profiles"

# Profiles get PROFILE_SHARE percent of the budget; SD-1.5 is measured first, so a cut leaves its profile behind.
set +e
WHEELS=none DEST="$WORK/profiles" PY="$PY" timeout "$((BUDGET_S * ${PROFILE_SHARE:-60} / 100))" \
  bash benchmarks/gpu/profile_latency.sh
PROFILED=$?
set -e
cp "$WORK"/profiles/*-measured.yaml "$DEST/" 2>/dev/null || true
echo "profiles done after ${SECONDS} s (exit ${PROFILED})"

case "$VALIDATE" in
  sd15) MODEL=${SD15:-sd15} RES=${RES15:-512} ;;
  sdxl) MODEL=${SDXL:-sdxl} RES=${RESXL:-1024} ;;
  *) MODEL=$VALIDATE RES=${RES15:-32} ;;
esac
PROFILE=$(ls "$WORK"/profiles/"$MODEL"-"$RES"-*-measured.yaml 2>/dev/null | head -n 1 || true)
if [ -z "$PROFILE" ]; then
  echo "no $MODEL ${RES}² profile was written (profiling exit ${PROFILED}): nothing to validate"
  exit 1
fi
GPU=$(basename "$PROFILE" | sed -E "s/^$MODEL-$RES-(.*)-(random|real)-measured\.yaml$/\1/")
"$PY" -m sim run benchmarks/gpu/validate.yaml --out "$WORK/sim" --overwrite --quiet \
  --set model.name="$MODEL" --set model.width="$RES" --set model.height="$RES" --set trace.limit="$LIMIT" \
  --set "hardware.pools=[{gpu: $GPU, count: 4, latency_profile: $PROFILE}]"
echo "simulation done after ${SECONDS} s ($MODEL ${RES}² on $GPU, profile $PROFILE)"

LEFT=$((BUDGET_S - SECONDS - 15))
if [ "$LEFT" -lt 30 ]; then
  echo "only ${LEFT} s left of BUDGET_S=${BUDGET_S}: validation skipped"
  exit 1
fi
# SIGINT at the deadline: the validation reports the requests measured so far and exits 130.
set +e
timeout -s INT "$LEFT" "$PY" -m sim validate "$WORK/sim/run" --sample "$SAMPLE" --model "$MODEL" --device "$DEVICE" \
  --dtype "$DTYPE" --resolution "$RES" --tier files --latent-dir "$WORK/latents" --out "$WORK/sim/run/validation"
STATUS=$?
set -e
echo "validation exit ${STATUS} after ${SECONDS} s"
V="$WORK/sim/run/validation"
cp "$V/validation.md" "$V/validation.csv" "$DEST/" 2>/dev/null || true
cp "$V/validation.png" "$DEST/" 2>/dev/null || true
tar -czf "$DEST/validation.tar.gz" -C "$WORK" --exclude latents sim/run profiles
ls -l "$DEST"
if [ "$STATUS" = 124 ]; then  # timeout's code once the SIGINT landed: the report covers what was measured
  echo "validation stopped at BUDGET_S=${BUDGET_S}: validation.md reports the requests measured before it"
  exit 3
fi
exit "$STATUS"
