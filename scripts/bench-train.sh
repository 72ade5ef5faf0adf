#!/usr/bin/env bash
# Seconds per training iteration of 3d_fullres on Dataset004 on CPU (batch 9, patch 40x56x40, data
# loading included): nn-train against nnU-Net v2.8.1's own training loop (../shared/bench/nnunet_steps.py),
# in the same run, with and without augmentation, and one augmented batch ours vs nnU-Net's
# get_training_transforms. Usage: scripts/bench-train.sh [--install] [ITERATIONS]   (default 5)
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
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

target/release/nn-resample -q --plans "$shared/reference/$dataset/nnUNetPlans.json" -c 3d_fullres \
    -i "$shared/data/$dataset" -o "$scratch/pre"
# Per-iteration time as the difference of two one-epoch runs, so start-up, validation and plotting cancel;
# --fold all because a cross-validation fold ends by predicting its validation cases.
epoch_seconds() {
    rm -rf "$scratch/run"
    target/release/nn-train -q --plans "$shared/reference/$dataset/nnUNetPlans.json" -c 3d_fullres \
        --data "$scratch/pre" --dataset "$shared/data/$dataset/dataset.json" --fold all -o "$scratch/run" \
        --epochs 1 --iters "$1" --val-iters 1 --device cpu "${@:2}"
    python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['epoch_time_s'])" "$scratch/run/fold_all/log.jsonl"
}
short=$(epoch_seconds 1)
long=$(epoch_seconds $((iterations + 1)))
ours=$(python3 -c "print(f'{($long - $short) / $iterations:.3f}')")
echo "nn-train:      $ours s per iteration (nnU-Net's augmentation)"
short=$(epoch_seconds 1 --augment none)
long=$(epoch_seconds $((iterations + 1)) --augment none)
plain=$(python3 -c "print(f'{($long - $short) / $iterations:.3f}')")
echo "nn-train:      $plain s per iteration without augmentation (--augment none)"
# one augmented batch (9 x 1 x 73x80x64 -> 40x56x40) on its own
augment_ms=$(cargo test --release -q -p nntools-augmentation hippocampus_batch_time -- --ignored --nocapture \
    | sed -n 's/.*: \([0-9.]*\) ms per batch drawn.*/\1/p')
echo "nn-train augmentation: $augment_ms ms per batch of 9"

if [[ -x $venv/bin/nnUNetv2_preprocess ]]; then
    source scripts/nnunet-env.sh
    nnunet_preprocess "$venv" "$scratch" "$dataset" "$shared/reference/$dataset/nnUNetPlans.json"
    # nnU-Net's loader workers outlive nnunet_steps.py's os._exit: log to a file (a pipe would wait for
    # them) and end them afterwards
    "$venv/bin/python3" "$shared/bench/nnunet_steps.py" 4 3d_fullres "$iterations" > "$scratch/steps.log" 2>&1
    pkill -f "$shared/bench/nnunet_steps.py" || true
    theirs=$(tail -n 1 "$scratch/steps.log")
    echo "nnU-Net v2.8.1: $theirs s per iteration"
    # nnU-Net's own training transforms on a batch of the same size, sample by sample as its loader does
    "$venv/bin/python3" - <<'PY'
import math, time, torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
torch.set_num_threads(2)
angle = 30 / 360 * 2 * math.pi
transforms = nnUNetTrainer.get_training_transforms(
    (40, 56, 40), (-angle, angle), None, (0, 1, 2), False, use_mask_for_norm=[False], foreground_labels=[1, 2])
image, seg = torch.randn(1, 73, 80, 64), torch.randint(0, 3, (1, 73, 80, 64), dtype=torch.int16)
start = time.perf_counter()
for _ in range(5):
    for _ in range(9):
        transforms(image=image.clone(), segmentation=seg.clone())
print(f"nnU-Net v2.8.1 augmentation: {(time.perf_counter() - start) / 5 * 1000:.1f} ms per batch of 9")
PY
else
    theirs=8.88
    echo "nnU-Net not installed (run with --install); using its recorded $theirs s per iteration"
fi
python3 -c "print(f'ratio nn-tools / nnU-Net: {$ours / $theirs:.3f}; augmentation share of our iteration: {$augment_ms / 1000 / $ours:.3f}')"
