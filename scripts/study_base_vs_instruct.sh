#!/usr/bin/env bash
# The offline base-vs-instruct study (docs/studies/base-vs-instruct.md), end to end.
# Each step resumes or reuses what an earlier run left in runs/, so rerunning is cheap.
#   1. quick axis runs of both bundled models (smollm2 ~6 min, gemma-3-270m ~21 min here)
#   2. copies of both runs re-aggregated at --score-threshold 2 (no new generation)
#   3. personaspace compare (rank-based: different families), into runs/study/compare
#   4. personaspace steer-base: gemma-3-270m steered along its own axis
set -euo pipefail
cd "$(dirname "$0")/.."
PS=${PERSONASPACE:-.venv/bin/personaspace}
mkdir -p runs/study
for model in smollm2-135m-instruct gemma-3-270m; do
  "$PS" axis --model "$model"
  study="runs/study/axis-$model-t2"
  if [ ! -f "$study/summary.json" ]; then
    rm -rf "$study"
    cp -r "runs/axis-$model-quick" "$study"
  fi
  "$PS" axis --model "$model" --out "$study" --score-threshold 2
done
"$PS" compare runs/study/axis-gemma-3-270m-t2 runs/study/axis-smollm2-135m-instruct-t2 \
  --out runs/study/compare
"$PS" steer-base runs/study/axis-gemma-3-270m-t2 --out runs/study/steer-base
