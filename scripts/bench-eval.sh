#!/usr/bin/env bash
# Wall time and peak RSS of nn-eval against nnUNetv2_evaluate_folder (nnU-Net v2.8.1) on all 260 cases
# of Dataset004_Hippocampus, predictions = the reference labels shifted by one voxel along x, the same
# cores (-j 2 / -np 2), median of RUNS runs (default 3); memory as the largest process's peak RSS and the
# peak PSS summed over the process tree (scripts/measure.sh). nn-eval is timed with its surface metrics
# (HD95, NSD; the default) and without (--no-surface, what nnU-Net computes). With nnU-Net's venv the
# script also checks nn-eval's HD95 and NSD against scipy (scripts/check-surface-metrics.py).
# Usage: scripts/bench-eval.sh [--install]
# nnU-Net is taken from NNUNET_VENV (default .bench-venv; --install creates it with
# scripts/install-nnunet.sh). Without it, the labels are evaluated against themselves and nnU-Net's
# time is the one recorded when the benchmark was written.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${RUNS:-3}
venv=${NNUNET_VENV:-.bench-venv}
if [[ ${1:-} == --install ]]; then scripts/install-nnunet.sh "$venv"; fi
shared=$(realpath ../shared)
cargo build --release -q -p nn-eval
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
source scripts/measure.sh

labels="$shared/data/Dataset004_Hippocampus/labelsTr"
dataset="$shared/reference/Dataset004_Hippocampus/dataset.json"
if [[ -x $venv/bin/python3 ]]; then
    mkdir -p "$scratch/pred"
    "$venv/bin/python3" - "$labels" "$scratch/pred" <<'PY'
import os, sys, numpy as np, SimpleITK as sitk
src, dst = sys.argv[1:]
for name in sorted(os.listdir(src)):
    image = sitk.ReadImage(os.path.join(src, name))
    shifted = sitk.GetImageFromArray(np.roll(sitk.GetArrayFromImage(image), 1, axis=2))
    shifted.CopyInformation(image)
    sitk.WriteImage(shifted, os.path.join(dst, name))
PY
    pred="$scratch/pred"
else
    pred="$labels"
fi

surface=$(measure target/release/nn-eval -j 2 --ref "$labels" --pred "$pred" --dataset "$dataset" -o "$scratch/ours.json")
row "nn-eval (Dice etc. + HD95, NSD)" "$surface"
plain=$(measure target/release/nn-eval -j 2 --no-surface --ref "$labels" --pred "$pred" --dataset "$dataset" -o "$scratch/plain.json")
row "nn-eval --no-surface" "$plain"
if [[ -x $venv/bin/nnUNetv2_evaluate_folder ]]; then
    theirs=$(measure "$venv/bin/nnUNetv2_evaluate_folder" "$labels" "$pred" -djfile "$dataset" \
        -pfile "$shared/reference/Dataset004_Hippocampus/nnUNetPlans.json" -o "$scratch/theirs.json" -np 2)
    row "nnUNetv2_evaluate_folder -np 2" "$theirs"
    "$venv/bin/python3" scripts/check-surface-metrics.py "$scratch/ours.json" "$labels" "$pred"
else
    theirs="12.0 $((767 * 1024)) -"
    echo "nnU-Net not installed (run with --install); using its recorded 12.0 s, 767 MB"
fi
ratio "[nn-eval --no-surface]" "$plain" "$theirs"
ratio "[nn-eval with surface metrics]" "$surface" "$theirs"
