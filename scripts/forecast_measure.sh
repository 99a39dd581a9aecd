#!/usr/bin/env bash
# The full forecast measurement (docs/forecast.md): fit a forecaster on a drift run's
# uncapped transcripts (plus the catalogue's validation transcripts), then compare no
# capping, always-on capping and forecast-triggered capping on the drift scenarios.
#
#   scripts/forecast_measure.sh [AXIS_RUN] [DRIFT_FOLDER] [OUT_FOLDER] [CAP_EXPERIMENT]
#
# Defaults: the SmolLM2 quick axis, its drift run, runs/forecast-<axis name>, and the
# capping experiment layers_11:19-p25 (else the axis run's first p25 one). The drift folder is resumed: its `none`
# transcripts are reused (and the cap condition's, if that drift run had --cap); the
# forecast-triggered condition is written beside them under transcripts/.
# Environment: THREADS (torch threads, default 1), PERMUTATIONS (default 1000),
# BOOTSTRAP (default 2000), NICE (default 19).
set -euo pipefail
cd "$(dirname "$0")/.."

AXIS=${1:-runs/axis-smollm2-135m-instruct-quick}
DRIFT=${2:-runs/drift-smollm2-quick}
OUT=${3:-runs/forecast-$(basename "$AXIS" | sed 's/^axis-//')}
THREADS=${THREADS:-1}
PERMUTATIONS=${PERMUTATIONS:-1000}
BOOTSTRAP=${BOOTSTRAP:-2000}
NICE=${NICE:-19}
PS=".venv/bin/personaspace"
export OMP_NUM_THREADS=$THREADS

CAP=${4:-$(.venv/bin/python - "$AXIS" <<'EOF'
import sys
from personaspace.runfolder import RunFolder
ids = RunFolder(sys.argv[1]).capping().ids
preferred = "layers_11:19-p25"  # what the SmolLM2 drift run caps with
print(preferred if preferred in ids else next((i for i in ids if i.endswith("-p25")), ids[0]))
EOF
)}

if [ ! -d "$DRIFT/transcripts/none" ]; then
  echo "no $DRIFT/transcripts/none: run personaspace drift --axis $AXIS --out $DRIFT first" >&2
  exit 2
fi
mkdir -p "$OUT"
echo "axis $AXIS, drift $DRIFT, cap $CAP, out $OUT"

# 1. Fit: R^2 of the position and the change, per feature set, with the null and intervals.
time nice -n "$NICE" $PS forecast fit "$DRIFT" src/personaspace/catalogue/data/validation \
  --axis "$AXIS" --out "$OUT/forecaster.safetensors" \
  --permutations "$PERMUTATIONS" --bootstrap "$BOOTSTRAP" 2>&1 | tee "$OUT/fit.log"

# 2. Held-out check: the forecaster fitted on the drift run, scored on the validation
#    transcripts alone (no refit), and vice versa the fit on drift alone.
time nice -n "$NICE" $PS forecast fit "$DRIFT" --axis "$AXIS" \
  --out "$OUT/drift-only/forecaster.safetensors" \
  --permutations "$PERMUTATIONS" --bootstrap "$BOOTSTRAP" 2>&1 | tee "$OUT/fit-drift-only.log"
nice -n "$NICE" $PS forecast eval "$OUT/drift-only/forecaster.safetensors" \
  src/personaspace/catalogue/data/validation --axis "$AXIS" 2>&1 | tee "$OUT/eval-validation.log"

# 3. The three-condition capping comparison (writes DRIFT/forecast_capping.json and .csv).
time nice -n "$NICE" $PS forecast compare --axis "$AXIS" \
  --forecaster "$OUT/drift-only/forecaster.safetensors" --cap "$CAP" \
  --cap-when-forecast floor --out "$DRIFT" 2>&1 | tee "$OUT/compare.log"
cp "$DRIFT/forecast_capping.json" "$DRIFT/forecast_capping.csv" "$OUT/"
echo "done: $OUT/fit.json, $OUT/drift-only/fit.json, $OUT/forecast_capping.json"
