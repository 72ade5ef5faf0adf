#!/usr/bin/env bash
# Seconds per training iteration of 3d_fullres on Dataset004 on CPU (batch 9, patch 40x56x40, data
# loading included): nn-train against nnU-Net v2.8.1's own training loop (../shared/bench/nnunet_steps.py),
# in the same run. Usage: scripts/bench-train.sh [--install] [ITERATIONS]   (default 5)
# nnU-Net is taken from NNUNET_VENV (default .bench-venv; --install creates it with
# scripts/install-nnunet.sh). Without it, nnU-Net's recorded 8.88 s per iteration is used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=${NNUNET_VENV:-.bench-venv}
if [[ ${1:-} == --install ]]; then scripts/install-nnunet.sh "$venv"; shift; fi
iterations=${1:-5}
shared=$(realpath ../shared)
dataset=Dataset004_Hippocampus
scripts/setup.sh
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

target/release/nn-resample -q --plans "$shared/reference/$dataset/nnUNetPlans.json" -c 3d_fullres \
    -i "$shared/data/$dataset" -o "$scratch/pre"
# Per-iteration time as the difference of two one-epoch runs, so start-up, validation and plotting cancel.
epoch_seconds() {
    rm -rf "$scratch/run"
    target/release/nn-train -q --plans "$shared/reference/$dataset/nnUNetPlans.json" -c 3d_fullres \
        --data "$scratch/pre" --dataset "$shared/data/$dataset/dataset.json" --fold 0 -o "$scratch/run" \
        --epochs 1 --iters "$1" --val-iters 1 --device cpu
    python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['epoch_time_s'])" "$scratch/run/fold_0/log.jsonl"
}
short=$(epoch_seconds 1)
long=$(epoch_seconds $((iterations + 1)))
ours=$(python3 -c "print(f'{($long - $short) / $iterations:.3f}')")
echo "nn-train:      $ours s per iteration"

if [[ -x $venv/bin/nnUNetv2_preprocess ]]; then
    mkdir -p "$scratch/raw" "$scratch/nnpre/$dataset" "$scratch/res"
    ln -s "$shared/data/$dataset" "$scratch/raw/$dataset"
    cp "$shared/reference/$dataset/"{nnUNetPlans.json,dataset_fingerprint.json,splits_final.json} "$shared/data/$dataset/dataset.json" "$scratch/nnpre/$dataset/"
    export nnUNet_raw="$scratch/raw" nnUNet_preprocessed="$scratch/nnpre" nnUNet_results="$scratch/res" nnUNet_n_proc_DA=2
    "$venv/bin/nnUNetv2_preprocess" -d 4 -c 3d_fullres -np 2 > /dev/null 2>&1
    # nnU-Net's loader workers outlive nnunet_steps.py's os._exit: log to a file (a pipe would wait for
    # them) and end them afterwards
    "$venv/bin/python3" "$shared/bench/nnunet_steps.py" 4 3d_fullres "$iterations" > "$scratch/steps.log" 2>&1
    pkill -f "$shared/bench/nnunet_steps.py" || true
    theirs=$(tail -n 1 "$scratch/steps.log")
    echo "nnU-Net v2.8.1: $theirs s per iteration"
else
    theirs=8.88
    echo "nnU-Net not installed (run with --install); using its recorded $theirs s per iteration"
fi
python3 -c "print(f'ratio nn-tools / nnU-Net: {$ours / $theirs:.3f}')"
