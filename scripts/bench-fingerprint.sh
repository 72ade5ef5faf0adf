#!/usr/bin/env bash
# Wall time and peak RSS of nn-fingerprint against nnUNetv2_extract_fingerprint (nnU-Net v2.8.1) on the
# same data set and cores: median of RUNS runs each (default 3).
# Usage: scripts/bench-fingerprint.sh [RAW_DIR]   (default ../shared/data/Dataset004_Hippocampus)
# With FORMATS=1 it then converts the data set to .mha and .nrrd (nn-dataset create --to, compressed as
# SimpleITK writes them) and times both tools on each, so that the cost per voxel of each format shows.
# nnU-Net is taken from NNUNET_VENV (default .bench-venv); with --install it is created there first
# (scripts/install-nnunet.sh: nnunetv2==2.8.1, reusing .venv's torch). Without it, only nn-tools is timed and compared with the
# figures measured when the benchmark was written (nnU-Net: 11.2 s, 1.88 GB on 2 cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
install=0
if [[ ${1:-} == --install ]]; then install=1; shift; fi
raw=$(realpath "${1:-../shared/data/Dataset004_Hippocampus}")
runs=${RUNS:-3}
venv=${NNUNET_VENV:-.bench-venv}
scripts/setup.sh

if [[ $install == 1 ]]; then scripts/install-nnunet.sh "$venv"; fi

source scripts/measure.sh

# one data set: nn-fingerprint, then nnUNetv2_extract_fingerprint (or its recorded figures); prints both
# and their ratio
compare() {
    local raw=$1 label=$2
    read -r ours_s ours_kb < <(measure target/release/nn-fingerprint -q -j 2 "$raw")
    echo "$label nn-fingerprint:               ${ours_s} s, $((ours_kb / 1024)) MB peak RSS"
    if [[ -x $venv/bin/nnUNetv2_extract_fingerprint ]]; then
        local name id
        name=$(basename "$raw")
        id=$((10#${name:7:3}))
        rm -rf "$scratch/raw" "$scratch/pre" "$scratch/res"
        mkdir -p "$scratch/raw" "$scratch/pre" "$scratch/res"
        ln -s "$raw" "$scratch/raw/$name"
        read -r theirs_s theirs_kb < <(nnUNet_raw="$scratch/raw" nnUNet_preprocessed="$scratch/pre" \
            nnUNet_results="$scratch/res" measure "$venv/bin/nnUNetv2_extract_fingerprint" -d "$id" -np 2 --clean)
        echo "$label nnUNetv2_extract_fingerprint: ${theirs_s} s, $((theirs_kb / 1024)) MB peak RSS"
    else
        theirs_s=11.2 theirs_kb=$((1880 * 1024))
        echo "nnU-Net not installed (run with --install); using its recorded 11.2 s, 1880 MB"
    fi
    python3 -c "print(f'$label ratio nn-tools / nnU-Net: time {$ours_s / $theirs_s:.3f}, peak RSS {$ours_kb / $theirs_kb:.3f}')"
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
compare "$raw" "[$(basename "$raw")]"
if [[ ${FORMATS:-0} == 1 ]]; then
    nifti_s=$ours_s
    channels=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(' '.join(f'--channel {k}={v}' for k, v in d['channel_names'].items()))" "$raw/dataset.json")
    for numbered in 994.mha 995.nrrd; do
        ending=.${numbered#*.}
        converted="$scratch/formats/Dataset${numbered%%.*}_${ending#.}"
        # shellcheck disable=SC2086
        target/release/nn-dataset create -q --images "$raw/imagesTr" --labels "$raw/labelsTr" $channels \
            --to "$ending" -o "$converted"
        compare "$converted" "[$ending]"
        python3 -c "print(f'[$ending] nn-fingerprint time / the same on .nii.gz: {$ours_s / $nifti_s:.3f}')"
    done
fi
