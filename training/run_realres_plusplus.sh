#!/usr/bin/env bash
# StructVPR++ at real resolution (issue 11): bash training/run_realres_plusplus.sh [SEED ...]
# Needs run_realres.sh's label cache and stage I RGB for the same seeds (linked, not retrained);
# then per seed: label-aware stage I seg, partition, stage II GP-D phi with label features.
# Every step resumes. Test numbers come from `structvpr benchmark` (docs/plusplus.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
for seed in "${seeds[@]}"; do
    base=runs/realres/seed$seed/stage1-rgb
    [ -f "$base/best.pt" ] || { echo "missing $base/best.pt: run training/run_realres.sh $seed first" >&2; exit 1; }
    mkdir -p "runs/realres_plusplus/seed$seed"
    ln -sfn "$(pwd)/$base" "runs/realres_plusplus/seed$seed/stage1-rgb"
    for step in stage1-seg partition stage2; do
        .venv/bin/structvpr train "$step" --config training/realres_plusplus.yaml --seed "$seed" --resume
    done
done
