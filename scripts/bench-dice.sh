#!/usr/bin/env bash
# Dice after the same training budget: nn-train against nnU-Net v2.8.1's own trainer on Dataset004
# 3d_fullres fold 0 (nnU-Net's splits), on CPU. Both get nnU-Net's plans with the batch size set to
# BATCH_SIZE (9 planned; 2 makes an iteration about 4x cheaper, so a 2-core machine reaches a useful
# Dice in minutes). Each preprocesses with its own code, trains EPOCHS epochs of ITERATIONS iterations
# (poly learning rate over those epochs, 5 pseudo-Dice batches each), then predicts the fold's 52
# validation cases with mirroring, as its final validation does. nn-eval scores both folders against
# labelsTr, so the metric code is the same.
# Usage: scripts/bench-dice.sh [--install] [EPOCHS [ITERATIONS [BATCH_SIZE]]]   (default 5 50 2)
# nn-train's seed is BENCH_SEED (default nn-train's); nnU-Net's trainer is not seeded.
# nnU-Net is taken from NNUNET_VENV (default .bench-venv; --install creates it with
# scripts/install-nnunet.sh). Prints one JSON object; each side's seconds include its preprocessing
# and its final validation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=${NNUNET_VENV:-.bench-venv}
if [[ ${1:-} == --install ]]; then scripts/install-nnunet.sh "$venv"; shift; fi
epochs=${1:-5} iterations=${2:-50} batch_size=${3:-2} val_iterations=5
[[ -x $venv/bin/nnUNetv2_preprocess ]] || { echo "bench-dice: no nnU-Net in $venv (run with --install)" >&2; exit 2; }
shared=$(realpath ../shared)
dataset=Dataset004_Hippocampus
reference=$shared/reference/$dataset
scripts/setup.sh
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 - "$reference/nnUNetPlans.json" "$batch_size" > "$scratch/plans.json" <<'PY'
import json, sys
plans = json.load(open(sys.argv[1]))
plans["configurations"]["3d_fullres"]["batch_size"] = int(sys.argv[2])
print(json.dumps(plans, indent=1))
PY

# nn-tools
start=$SECONDS
target/release/nn-resample -q --plans "$scratch/plans.json" -c 3d_fullres -i "$shared/data/$dataset" -o "$scratch/pre"
target/release/nn-train -q --plans "$scratch/plans.json" -c 3d_fullres --data "$scratch/pre" \
    --dataset "$shared/data/$dataset/dataset.json" --splits "$reference/splits_final.json" --fold 0 \
    -o "$scratch/ours" --epochs "$epochs" --iters "$iterations" --val-iters "$val_iterations" --device cpu \
    ${BENCH_SEED:+--seed "$BENCH_SEED"}
ours_seconds=$((SECONDS - start))

# nnU-Net v2.8.1: its trainer with the budget set on the instance, then its final validation
start=$SECONDS
source scripts/nnunet-env.sh
nnunet_preprocess "$venv" "$scratch" "$dataset" "$scratch/plans.json"
# a script file, not stdin: its export workers are spawned and import the main module again
cat > "$scratch/train_nnunet.py" <<'PY'
import os, sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
if __name__ == "__main__":
    epochs, iterations, val_iterations = map(int, sys.argv[1:])
    trainer = get_trainer_from_args("4", "3d_fullres", 0, "nnUNetTrainer", "nnUNetPlans", device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = epochs, iterations, val_iterations
    trainer.run_training()
    trainer.perform_actual_validation()
    os._exit(0)
PY
# its loader workers outlive the script's os._exit: log to a file (a pipe would wait for them)
"$venv/bin/python3" "$scratch/train_nnunet.py" "$epochs" "$iterations" "$val_iterations" > "$scratch/nnunet.log" 2>&1 \
    || { tail -n 20 "$scratch/nnunet.log" >&2; exit 1; }
pkill -f "$scratch/train_nnunet.py" || true
theirs_seconds=$((SECONDS - start))
theirs_validation=$scratch/res/$dataset/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/validation

for side in ours theirs; do
    predictions=$scratch/ours/fold_0/validation
    [[ $side == theirs ]] && predictions=$theirs_validation
    target/release/nn-eval --no-surface --ref "$shared/data/$dataset/labelsTr" --pred "$predictions" --chill \
        --dataset "$shared/data/$dataset/dataset.json" -o "$scratch/$side.json"
done
python3 - "$scratch" "$epochs" "$iterations" "$batch_size" "$ours_seconds" "$theirs_seconds" <<'PY'
import json, os, sys
scratch, epochs, iterations, batch_size, ours_s, theirs_s = sys.argv[1:]
def scores(side):
    summary = json.load(open(f"{scratch}/{side}.json"))
    return {"cases": len(summary["metric_per_case"]),
            "dice_per_class": {k: round(v["Dice"], 4) for k, v in summary["mean"].items()},
            "foreground_mean_dice": round(summary["foreground_mean"]["Dice"], 4)}
report = {"dataset": "Dataset004_Hippocampus", "configuration": "3d_fullres", "fold": 0, "device": "cpu",
          "epochs": int(epochs), "iterations_per_epoch": int(iterations), "batch_size": int(batch_size),
          "nn_train_seed": os.environ.get("BENCH_SEED", "default"),
          "nn_tools": {**scores("ours"), "seconds": int(ours_s)},
          "nnunet_v2_8_1": {**scores("theirs"), "seconds": int(theirs_s)}}
print(json.dumps(report, indent=1))
PY
