#!/usr/bin/env bash
# Wall time and peak RSS of nn-fingerprint against nnUNetv2_extract_fingerprint (nnU-Net v2.8.1) on the
# same data set and cores: median of RUNS runs each (default 3).
# Usage: scripts/bench-fingerprint.sh [RAW_DIR]   (default ../shared/data/Dataset004_Hippocampus)
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

read -r ours_s ours_kb < <(measure target/release/nn-fingerprint -q -j 2 "$raw")
echo "nn-fingerprint:               ${ours_s} s, $((ours_kb / 1024)) MB peak RSS"

if [[ -x $venv/bin/nnUNetv2_extract_fingerprint ]]; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    name=$(basename "$raw")
    id=$((10#${name:7:3}))
    mkdir -p "$scratch/raw" "$scratch/pre" "$scratch/res"
    ln -s "$raw" "$scratch/raw/$name"
    read -r theirs_s theirs_kb < <(nnUNet_raw="$scratch/raw" nnUNet_preprocessed="$scratch/pre" \
        nnUNet_results="$scratch/res" measure "$venv/bin/nnUNetv2_extract_fingerprint" -d "$id" -np 2 --clean)
    echo "nnUNetv2_extract_fingerprint: ${theirs_s} s, $((theirs_kb / 1024)) MB peak RSS"
else
    theirs_s=11.2 theirs_kb=$((1880 * 1024))
    echo "nnU-Net not installed (run with --install); using its recorded 11.2 s, 1880 MB"
fi
python3 -c "print(f'ratio nn-tools / nnU-Net: time {$ours_s / $theirs_s:.3f}, peak RSS {$ours_kb / $theirs_kb:.3f}')"
