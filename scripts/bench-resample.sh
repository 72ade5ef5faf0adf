#!/usr/bin/env bash
# Wall time and peak RSS of nn-resample against nnUNetv2_preprocess (nnU-Net v2.8.1), 3d_fullres, the
# same cores (-j 2 / -np 2), median of RUNS runs each (default 3), for Dataset104 and Dataset005.
# Usage: scripts/bench-resample.sh [--install]
# nnU-Net is taken from NNUNET_VENV (default .bench-venv; --install creates it with
# scripts/install-nnunet.sh). Without it, only nn-tools is timed and compared with the figures
# recorded when the benchmark was written (nnU-Net: 7.7 s / 0.82 GB and 9.5 s / 0.95 GB).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${RUNS:-3}
venv=${NNUNET_VENV:-.bench-venv}
if [[ ${1:-} == --install ]]; then scripts/install-nnunet.sh "$venv"; fi
shared=$(realpath ../shared)
scripts/setup.sh
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

source scripts/measure.sh

declare -A recorded=([Dataset104_HippocampusAniso]="7.7 $((820 * 1024))" [Dataset005_BraTS2013mini]="9.5 $((950 * 1024))")
for dataset in Dataset104_HippocampusAniso Dataset005_BraTS2013mini; do
    plans="$shared/reference/$dataset/nnUNetPlans.json"
    read -r ours_s ours_kb < <(measure target/release/nn-resample --force -q -j 2 --plans "$plans" -c 3d_fullres \
        -i "$shared/data/$dataset" -o "$scratch/ours/$dataset")
    echo "$dataset nn-resample:        ${ours_s} s, $((ours_kb / 1024)) MB peak RSS"
    if [[ -x $venv/bin/nnUNetv2_preprocess ]]; then
        id=$((10#${dataset:7:3}))
        mkdir -p "$scratch/raw" "$scratch/pre/$dataset" "$scratch/res"
        ln -sfn "$shared/data/$dataset" "$scratch/raw/$dataset"
        cp "$plans" "$shared/reference/$dataset/dataset_fingerprint.json" "$shared/data/$dataset/dataset.json" "$scratch/pre/$dataset/"
        read -r theirs_s theirs_kb < <(nnUNet_raw="$scratch/raw" nnUNet_preprocessed="$scratch/pre" \
            nnUNet_results="$scratch/res" measure "$venv/bin/nnUNetv2_preprocess" -d "$id" -c 3d_fullres -np 2)
        echo "$dataset nnUNetv2_preprocess: ${theirs_s} s, $((theirs_kb / 1024)) MB peak RSS"
    else
        read -r theirs_s theirs_kb <<< "${recorded[$dataset]}"
        echo "$dataset nnU-Net not installed (run with --install); using its recorded ${theirs_s} s, $((theirs_kb / 1024)) MB"
    fi
    python3 -c "print(f'$dataset ratio nn-tools / nnU-Net: time {$ours_s / $theirs_s:.3f}, peak RSS {$ours_kb / $theirs_kb:.3f}')"
done
