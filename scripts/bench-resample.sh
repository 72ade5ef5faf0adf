#!/usr/bin/env bash
# Wall time and peak memory of nn-resample against nnUNetv2_preprocess (nnU-Net v2.8.1), 3d_fullres, the
# same cores (-j 2 / -np 2) and plans, median of RUNS runs each (default 3), for Dataset104, Dataset005
# and the brain-sized set of scripts/bench-data.sh (20 cases of ~171^3, planned by nn-plan; both sides get
# those plans). Memory is the largest process's peak RSS and the peak PSS summed over the process tree
# (scripts/measure.sh). Usage: scripts/bench-resample.sh [--install]
# nnU-Net is taken from NNUNET_VENV (default .bench-venv; --install creates it with
# scripts/install-nnunet.sh). Without it, only nn-tools is timed and compared with the figures
# recorded when the benchmark was written (nnU-Net: 7.7 s / 0.82 GB and 9.5 s / 0.95 GB; none for the
# brain-sized set).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${RUNS:-3}
venv=${NNUNET_VENV:-.bench-venv}
if [[ ${1:-} == --install ]]; then scripts/install-nnunet.sh "$venv"; fi
shared=$(realpath ../shared)
scripts/setup.sh
brain=$(scripts/bench-data.sh brain)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

source scripts/measure.sh

declare -A recorded=([Dataset104_HippocampusAniso]="7.7 $((820 * 1024)) -" [Dataset005_BraTS2013mini]="9.5 $((950 * 1024)) -")
# each data set as its raw folder and the folder holding its nnUNetPlans.json and dataset_fingerprint.json
for set in "$shared/data/Dataset104_HippocampusAniso $shared/reference/Dataset104_HippocampusAniso" \
    "$shared/data/Dataset005_BraTS2013mini $shared/reference/Dataset005_BraTS2013mini" "$brain $(dirname "$brain")"; do
    read -r raw planned <<< "$set"
    dataset=$(basename "$raw")
    ours=$(measure target/release/nn-resample --force -q -j 2 --plans "$planned/nnUNetPlans.json" -c 3d_fullres \
        -i "$raw" -o "$scratch/ours/$dataset")
    row "$dataset nn-resample" "$ours"
    if [[ -x $venv/bin/nnUNetv2_preprocess ]]; then
        id=$((10#${dataset:7:3}))
        mkdir -p "$scratch/raw" "$scratch/pre/$dataset" "$scratch/res"
        ln -sfn "$raw" "$scratch/raw/$dataset"
        cp "$planned/nnUNetPlans.json" "$planned/dataset_fingerprint.json" "$raw/dataset.json" "$scratch/pre/$dataset/"
        theirs=$(nnUNet_raw="$scratch/raw" nnUNet_preprocessed="$scratch/pre" \
            nnUNet_results="$scratch/res" measure "$venv/bin/nnUNetv2_preprocess" -d "$id" -c 3d_fullres -np 2)
        row "$dataset nnUNetv2_preprocess" "$theirs"
    elif [[ -v recorded[$dataset] ]]; then
        theirs=${recorded[$dataset]}
        echo "$dataset nnU-Net not installed (run with --install); using its recorded ${theirs%% *} s, $(( $(cut -d' ' -f2 <<< "$theirs") / 1024 )) MB"
    else
        echo "$dataset nnU-Net not installed (run with --install): no comparison"
        continue
    fi
    ratio "$dataset" "$ours" "$theirs"
    rm -rf "$scratch/ours/$dataset" "$scratch/pre/$dataset"
done
