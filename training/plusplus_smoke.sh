#!/usr/bin/env bash
# Smoke-scale StructVPR vs StructVPR++ on nordland64 (docs/plusplus.md): both arms per seed.
# Usage: training/plusplus_smoke.sh SEED...   (needs the label cache runs/nordland64/labels,
# made with `structvpr segment --size 192x96`, covering the first 300 train and 100 val places
# and the test split)
# Stage I RGB is the same config and seed in both arms: it runs once and is copied.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
train() { nice -n 10 "$PY" -m structvpr_core.train.cli "$@" --threads 1; }
for S in "$@"; do
  SV=training/plusplus_smoke_structvpr.yaml PP=training/plusplus_smoke_plusplus.yaml
  train stage1-rgb --config $SV --seed $S --resume
  mkdir -p runs/plusplus_smoke/plusplus/seed$S
  [ -e runs/plusplus_smoke/plusplus/seed$S/stage1-rgb ] || \
    cp -r runs/plusplus_smoke/structvpr/seed$S/stage1-rgb runs/plusplus_smoke/plusplus/seed$S/
  for C in $SV $PP; do
    train stage1-seg --config $C --seed $S --resume
    train test --config $C --seed $S --step stage1-seg
    train partition --config $C --seed $S
    train stage2 --config $C --seed $S --resume
    train test --config $C --seed $S --step stage2
  done
done
