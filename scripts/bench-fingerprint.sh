#!/usr/bin/env bash
# Wall time and peak memory of nn-fingerprint against nnUNetv2_extract_fingerprint (nnU-Net v2.8.1) on the
# same data sets and cores (-j 2 / -np 2): median of RUNS runs each (default 3). Memory is the largest
# process's peak RSS and the peak PSS summed over the process tree (scripts/measure.sh).
# Usage: scripts/bench-fingerprint.sh [--install] [RAW_DIR...]   (default: ../shared's Dataset004_Hippocampus
# and Dataset005_BraTS2013mini, and the brain-sized set of scripts/bench-data.sh, 20 cases of ~171^3)
# With FORMATS=1 it then converts the first data set to .mha and .nrrd (nn-dataset create --to, compressed as
# SimpleITK writes them) and times both tools on each, so that the cost per voxel of each format shows.
# nnU-Net is taken from NNUNET_VENV (default .bench-venv); with --install it is created there first
# (scripts/install-nnunet.sh: nnunetv2==2.8.1, reusing .venv's torch). Without it, only nn-tools is timed;
# on Dataset004 it is compared with the figures measured when the benchmark was written (nnU-Net: 11.2 s,
# 1.88 GB on 2 cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
install=0
if [[ ${1:-} == --install ]]; then install=1; shift; fi
runs=${RUNS:-3}
venv=${NNUNET_VENV:-.bench-venv}
scripts/setup.sh

if [[ $install == 1 ]]; then scripts/install-nnunet.sh "$venv"; fi
if [[ $# == 0 ]]; then
    set -- ../shared/data/Dataset004_Hippocampus ../shared/data/Dataset005_BraTS2013mini "$(scripts/bench-data.sh brain)"
fi

source scripts/measure.sh

# one data set: nn-fingerprint, then nnUNetv2_extract_fingerprint (or its recorded figures); prints both
# and their ratio
compare() {
    local raw=$1 label=$2
    ours=$(measure target/release/nn-fingerprint -q -j 2 "$raw")
    row "$label nn-fingerprint" "$ours"
    if [[ -x $venv/bin/nnUNetv2_extract_fingerprint ]]; then
        local name id
        name=$(basename "$raw")
        id=$((10#${name:7:3}))
        rm -rf "$scratch/raw" "$scratch/pre" "$scratch/res"
        mkdir -p "$scratch/raw" "$scratch/pre" "$scratch/res"
        ln -s "$raw" "$scratch/raw/$name"
        theirs=$(nnUNet_raw="$scratch/raw" nnUNet_preprocessed="$scratch/pre" \
            nnUNet_results="$scratch/res" measure "$venv/bin/nnUNetv2_extract_fingerprint" -d "$id" -np 2 --clean)
        row "$label nnUNetv2_extract_fingerprint" "$theirs"
    elif [[ $(basename "$raw") == Dataset004_Hippocampus ]]; then
        theirs="11.2 $((1880 * 1024)) -"
        echo "nnU-Net not installed (run with --install); using its recorded 11.2 s, 1880 MB"
    else
        echo "$label nnU-Net not installed (run with --install): no comparison"
        return
    fi
    ratio "$label" "$ours" "$theirs"
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
nifti_s=
for raw in "$@"; do
    raw=$(realpath "$raw")
    compare "$raw" "[$(basename "$raw")]"
    nifti_s=${nifti_s:-${ours%% *}}
done
if [[ ${FORMATS:-0} == 1 ]]; then
    raw=$(realpath "$1")
    channels=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(' '.join(f'--channel {k}={v}' for k, v in d['channel_names'].items()))" "$raw/dataset.json")
    for numbered in 994.mha 995.nrrd; do
        ending=.${numbered#*.}
        converted="$scratch/formats/Dataset${numbered%%.*}_${ending#.}"
        # shellcheck disable=SC2086
        target/release/nn-dataset create -q --images "$raw/imagesTr" --labels "$raw/labelsTr" $channels \
            --to "$ending" -o "$converted"
        compare "$converted" "[$ending]"
        python3 -c "print(f'[$ending] nn-fingerprint time / the same on .nii.gz: {${ours%% *} / $nifti_s:.3f}')"
    done
fi
