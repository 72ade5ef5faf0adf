#!/usr/bin/env bash
# Sets up if needed, then runs nnU-Net's whole pipeline with a small CPU budget (scripts/nnunet.sh):
# on a seeded synthetic dataset, or on the raw dataset folder given as argument. Ends with the
# cross-validation Dice table of the chosen configuration and where to look at training curves,
# overlays and predictions. Usage: scripts/demo.sh [RAW_DATASET_DIR] [WORK_DIR]   (WORK_DIR default: demo-out)
# DEMO_EPOCHS, DEMO_ITERS and DEMO_CONFIGS change the budget (default 10 epochs of 12 iterations,
# 2d and 3d_fullres).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
work=${2:-demo-out}
bin=target/release
if [[ -n ${1:-} ]]; then
    raw=$1
else
    raw="$work/raw/Dataset900_Synth"
    echo "== nn-synth: 12 labelled + 2 test cases, 2 channels, 2 labels -> $raw"
    "$bin/nn-synth" -o "$raw" --cases 12 --test-cases 2 --channels 2 --labels 2 --min-size 20 --max-size 28 --seed 42 --force
fi

scripts/nnunet.sh "$raw" "$work" --configs "${DEMO_CONFIGS:-2d,3d_fullres}" --folds 0-4 \
    --epochs "${DEMO_EPOCHS:-10}" --iters "${DEMO_ITERS:-12}" --val-iters 5 --device cpu

# the chosen model's cross-validation predictions (for a pair, the average of both per fold), evaluated
# together
plan="$work/inference_plan.json"
chosen_runs=$("$bin/nn-ensemble" show --plan "$plan" --runs)
mapfile -t models <<< "$chosen_runs"
cv="$work/crossval"
rm -rf "$cv"
mkdir -p "$cv/predictions"
for fold in "${models[0]}"/fold_*; do
    fold=$(basename "$fold")
    if [[ ${#models[@]} -gt 1 ]]; then
        "$bin/nn-ensemble" average -i "${models[@]/%//$fold/validation}" -o "$cv/$fold" --dataset "$raw/dataset.json"
        cp "$cv/$fold"/*.nii.gz "$cv/predictions/"
    else
        cp "${models[0]}/$fold"/validation/*.nii.gz "$cv/predictions/"
    fi
done
class_table=$("$bin/nn-eval" --ref "$raw/labelsTr" --pred "$cv/predictions" --dataset "$raw/dataset.json" \
    -o "$cv/summary.json" --overlays "$cv/overlays" --images "$raw/imagesTr" --table)
echo
"$bin/nn-ensemble" show --plan "$plan"
echo
echo "per class (chosen, before postprocessing):"
echo "$class_table"
echo
echo "training curves: ${models[0]}/fold_0/progress.png"
echo "overlays (reference green, prediction red): $cv/overlays/"
echo "predictions of $raw/imagesTs: $work/predictions/"
