#!/usr/bin/env bash
# The real-resolution StructVPR experiment (issue 7), every step a `structvpr` command:
#   bash training/run_realres.sh [SEED ...]        (default: seeds 0 1 2)
# 1. teacher label cache (Cityscapes ESPNet, once), 2. per seed: stage I RGB and seg,
# partition, stage II arms None / KD-All / GP-D phi, each then whitened. Every step resumes (a finished one is a no-op),
# so the script can be re-run after an interruption. Selection is on val only; test numbers
# come from `structvpr benchmark` over the arms' best.pt files.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${STRUCTVPR_SHARED:-../shared}
LABELS=runs/labels/espnet_cityscapes
W=$S/models/espnet/espnet_p2_q8_cityscapes.pth
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
seg() { .venv/bin/structvpr segment --weights "$W" --threads 1 --input "$1" --output "$LABELS/$2" --size "$3"; }
# Label sizes: ESPNet's Cityscapes size is 1024x512; gardenspoint at 512x288 keeps its aspect
# at a quarter of the cost; nordland64's 64x32 frames at 192x96 (training/README.md).
for t in day_left day_right night_right; do seg "$S/data/gardenspoint/$t" "$t" 512x288; done
seg "$S/data/grief_seasons/michigan/images" images 1024x384
for s in summer winter; do seg "$S/data/nordland64/$s" "$s" 192x96; done
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
for seed in "${seeds[@]}"; do
    for step in stage1-rgb stage1-seg partition; do
        .venv/bin/structvpr train "$step" --config training/realres_base.yaml --seed "$seed" --resume
    done
    for arm in none kd_all gpd_phi; do
        .venv/bin/structvpr train stage2 --config "training/realres_$arm.yaml" --seed "$seed" --resume
        # learned PCA whitening of the arm (train descriptors, shrink chosen on val)
        [ -f "runs/realres/seed$seed/stage2-$arm-whitened/best.pt" ] ||
            .venv/bin/structvpr train whiten --config "training/realres_$arm.yaml" --seed "$seed"
    done
done
