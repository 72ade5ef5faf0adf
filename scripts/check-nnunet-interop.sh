#!/usr/bin/env bash
# Models both ways between nn-tools and nnU-Net v2.8.1 (issue 20), on a Dataset004 subset: the first
# TRAIN_CASES labelled cases (5-fold split by nnU-Net's generate_crossval_split, fold 0) and TEST_CASES
# held-out images, all on CPU.
#  a. nn-fingerprint, nn-plan, nn-resample, nn-train (a few short epochs) -> nnU-Net's
#     nnUNetv2_predict_from_modelfolder on the run folder against nn-infer on it, with and without TTA;
#  b. nnUNetv2_train --c (nnU-Net's run_training_entry, epochs and iterations shortened on the trainer)
#     continues that run for one epoch on nnU-Net's own preprocessing of the same plans;
#  c. nnU-Net's own trainer (a few iterations) -> nnUNetv2_export_model_to_zip -> nn-model install ->
#     nn-infer against nnUNetv2_predict;
#  d. nn-model export of a.'s run -> nnUNetv2_install_pretrained_model_from_zip -> nnUNetv2_predict
#     against a.'s nn-infer labels without TTA.
# About 9 minutes on the 2-core development machine (516 s of steps after the build).
# Usage: scripts/check-nnunet-interop.sh [--install] [TRAIN_CASES [TEST_CASES]]   (default 20 8)
# nnU-Net is taken from NNUNET_VENV (default .bench-venv; --install creates it with
# scripts/install-nnunet.sh). Prints one JSON object: per comparison the fraction of voxels with equal
# labels, per case and its minimum (and in a. the largest probability difference); exit 1 when a
# minimum is below 0.999, the continued training did not resume at the checkpoint's epoch, or a step fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=${NNUNET_VENV:-.bench-venv}
if [[ ${1:-} == --install ]]; then scripts/install-nnunet.sh "$venv"; shift; fi
train_cases=${1:-20} test_cases=${2:-8}
[[ -x $venv/bin/nnUNetv2_train ]] || { echo "check-nnunet-interop: no nnU-Net in $venv (run with --install)" >&2; exit 2; }
venv=$(realpath "$venv")
shared=$(realpath ../shared)
dataset=Dataset004_Hippocampus dataset_id=4
trainer_folder=$dataset/nnUNetTrainer__nnUNetPlans__3d_fullres
scripts/setup.sh
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
bin=$PWD/target/release
scratch=$(mktemp -d "${TMPDIR:-/tmp}/nnunet-interop.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/logs" "$scratch/pred"
start=$SECONDS

# step NAME COMMAND...: runs COMMAND with its output in logs/NAME.log and its seconds in seconds.txt;
# on failure, the command and the log's tail on stderr, exit 1.
step() {
    local name=$1 begin=$SECONDS
    shift
    if ! timeout 900 "$@" > "$scratch/logs/$name.log" 2>&1; then
        echo "check-nnunet-interop: step $name failed: $*" >&2
        tail -n 25 "$scratch/logs/$name.log" >&2
        exit 1
    fi
    echo "$name $((SECONDS - begin))" >> "$scratch/seconds.txt"
}

# agreement NAME FOLDER_A FOLDER_B: the fraction of voxels with equal labels per case into NAME.json,
# and the largest probability difference where both folders hold CASE.npz
agreement() {
    step "agreement_$1" "$venv/bin/python3" - "$2" "$3" "$scratch/$1.json" <<'PY'
import json, os, sys
import numpy as np
import SimpleITK as sitk
first, second, output = sys.argv[1:]
cases = sorted(f for f in os.listdir(first) if f.endswith(".nii.gz"))
others = sorted(f for f in os.listdir(second) if f.endswith(".nii.gz"))
if not cases or cases != others:
    sys.exit(f"{first} and {second} hold different cases: {cases} against {others}")
per_case, foreground, probability_differences = {}, [], []
for f in cases:
    case = f[:-len(".nii.gz")]
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(d, f))) for d in (first, second))
    per_case[case] = round(float((a == b).mean()), 6) if a.shape == b.shape else 0.0
    foreground.append(float((b > 0).mean()))
    if all(os.path.isfile(os.path.join(d, case + ".npz")) for d in (first, second)):
        p, q = (np.load(os.path.join(d, case + ".npz"))["probabilities"] for d in (first, second))
        probability_differences.append(float(np.abs(p - q).max()) if p.shape == q.shape else 1.0)
# the foreground share shows the labels compared are not all background
report = {"min": min(per_case.values()), "per_case": per_case,
          "mean_foreground_fraction": round(sum(foreground) / len(foreground), 4)}
if probability_differences:
    report["max_probability_difference"] = round(max(probability_differences), 6)
json.dump(report, open(output, "w"))
PY
}

# The subset: raw dataset, its split, and held-out test images
raw=$scratch/raw/$dataset
mkdir -p "$raw/imagesTr" "$raw/labelsTr" "$scratch/test"
mapfile -t cases < <(find "$shared/data/$dataset/labelsTr" -name '*.nii.gz' -printf '%f\n' | sed 's/\.nii\.gz$//' | sort \
    | head -n $((train_cases + test_cases)))
for case in "${cases[@]:0:train_cases}"; do
    ln -s "$shared/data/$dataset/imagesTr/${case}_0000.nii.gz" "$raw/imagesTr/"
    ln -s "$shared/data/$dataset/labelsTr/$case.nii.gz" "$raw/labelsTr/"
done
for case in "${cases[@]:train_cases}"; do ln -s "$shared/data/$dataset/imagesTr/${case}_0000.nii.gz" "$scratch/test/"; done
step subset "$venv/bin/python3" - "$shared/data/$dataset/dataset.json" "$raw" "${cases[@]:0:train_cases}" <<'PY'
import json, sys
from nnunetv2.utilities.crossval_split import generate_crossval_split
source, raw, cases = sys.argv[1], sys.argv[2], sys.argv[3:]
dataset = json.load(open(source))
dataset["numTraining"] = len(cases)
json.dump(dataset, open(f"{raw}/dataset.json", "w"), indent=1)
# nnUNetTrainer.do_split's split of the sorted case names
json.dump(generate_crossval_split(sorted(cases), seed=12345, n_splits=5), open(f"{raw}/../splits_final.json", "w"), indent=1)
PY
splits=$scratch/raw/splits_final.json

# a. nn-tools' pipeline, then nnU-Net and nn-infer predict with its run folder
run=$scratch/run
step nn_fingerprint "$bin/nn-fingerprint" -q "$raw" -o "$scratch/dataset_fingerprint.json"
step nn_plan "$bin/nn-plan" -q --fingerprint "$scratch/dataset_fingerprint.json" --dataset "$raw" -o "$scratch/nnUNetPlans.json"
step nn_resample "$bin/nn-resample" -q --plans "$scratch/nnUNetPlans.json" -c 3d_fullres -i "$raw" -o "$scratch/pre"
step nn_train "$bin/nn-train" -q --plans "$scratch/nnUNetPlans.json" -c 3d_fullres --data "$scratch/pre" \
    --dataset "$raw/dataset.json" --splits "$splits" --fold 0 -o "$run" --epochs 2 --iters 5 --val-iters 2 --device cpu

export nnUNet_raw=$scratch/raw nnUNet_preprocessed=$scratch/nnpre nnUNet_results=$scratch/results_unused \
    nnUNet_n_proc_DA=0 nnUNet_def_n_proc=2
nnunet_predict=("$venv/bin/nnUNetv2_predict" -i "$scratch/test" -d "$dataset_id" -c 3d_fullres -f 0 -device cpu -npp 1 -nps 1)
for tta in tta notta; do
    nnunet_flag=() ours_flag=()
    [[ $tta == notta ]] && nnunet_flag=(--disable_tta) ours_flag=(--no-tta)
    step "a_nnunet_$tta" "$venv/bin/nnUNetv2_predict_from_modelfolder" -i "$scratch/test" -o "$scratch/pred/a_nnunet_$tta" \
        -m "$run" -f 0 -chk checkpoint_final.pth -device cpu -npp 1 -nps 1 --save_probabilities "${nnunet_flag[@]}"
    step "a_nn_infer_$tta" "$bin/nn-infer" -q --device cpu -m "$run" --folds 0 -i "$scratch/test" \
        -o "$scratch/pred/a_nn_infer_$tta" --save-probabilities "${ours_flag[@]}"
    agreement "a_$tta" "$scratch/pred/a_nn_infer_$tta" "$scratch/pred/a_nnunet_$tta"
done

# nnU-Net's own preprocessing of the same plans, for its trainers in b. and c.
mkdir -p "$nnUNet_preprocessed/$dataset"
cp "$scratch/nnUNetPlans.json" "$scratch/dataset_fingerprint.json" "$raw/dataset.json" "$splits" "$nnUNet_preprocessed/$dataset/"
step nnunet_preprocess "$venv/bin/nnUNetv2_preprocess" -d "$dataset_id" -c 3d_fullres -np 2

# b. nnUNetv2_train --c from nn-train's checkpoint_final.pth: one more epoch of 3 iterations.
# A script file, not stdin: the validation's export workers are spawned and import the main module.
mkdir -p "$scratch/results_b/$dataset"
cp -r "$run" "$scratch/results_b/$trainer_folder"
cat > "$scratch/continue_training.py" <<'PY'
import json, sys
import torch
import nnunetv2.run.run_training as run_training

if __name__ == "__main__":
    checkpoint_file, iterations, report = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    before = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    resumed = {}
    get_trainer = run_training.get_trainer_from_args
    maybe_load_checkpoint = run_training.maybe_load_checkpoint

    def shortened_trainer(*args, **kwargs):
        trainer = get_trainer(*args, **kwargs)
        trainer.num_epochs = before["current_epoch"] + 1
        trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = iterations, 1
        return trainer

    def recorded_load(trainer, *args, **kwargs):
        maybe_load_checkpoint(trainer, *args, **kwargs)
        resumed["epoch"] = trainer.current_epoch

    run_training.get_trainer_from_args = shortened_trainer
    run_training.maybe_load_checkpoint = recorded_load
    sys.argv = ["nnUNetv2_train", "4", "3d_fullres", "0", "--c", "-device", "cpu"]
    run_training.run_training_entry()

    after = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    logged, continued = before["logging"], after["logging"]
    json.dump({"checkpoint_trainer_name": before["trainer_name"],
               "checkpoint_epoch": before["current_epoch"],
               "resumed_from_epoch": resumed.get("epoch"),
               "final_checkpoint_epoch": after["current_epoch"],
               "logging_lengths_before": {k: len(v) for k, v in logged.items()},
               "logging_lengths_after": {k: len(v) for k, v in continued.items()},
               "logging_history_kept": all(continued[k][:len(v)] == v for k, v in logged.items()),
               "train_losses_after": [round(float(x), 4) for x in continued["train_losses"]],
               "mean_fg_dice_after": [round(float(x), 4) for x in continued["mean_fg_dice"]]},
              open(report, "w"))
PY
export nnUNet_results=$scratch/results_b
step b_nnunet_train_continue "$venv/bin/python3" "$scratch/continue_training.py" \
    "$scratch/results_b/$trainer_folder/fold_0/checkpoint_final.pth" 3 "$scratch/b.json"

# c. nnU-Net's own trainer: one epoch of 4 iterations, its final validation (summary.json) and progress.png
cat > "$scratch/train_nnunet.py" <<'PY'
import sys
import torch
from nnunetv2.run.run_training import get_trainer_from_args

if __name__ == "__main__":
    trainer = get_trainer_from_args("4", "3d_fullres", 0, "nnUNetTrainer", "nnUNetPlans", device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 4, 1
    trainer.run_training()
    trainer.perform_actual_validation()
PY
export nnUNet_results=$scratch/results_c
step c_nnunet_train "$venv/bin/python3" "$scratch/train_nnunet.py"
step c_nnunet_export "$venv/bin/nnUNetv2_export_model_to_zip" -d "$dataset_id" -o "$scratch/nnunet_model.zip" -c 3d_fullres -f 0
step c_nn_model_install "$bin/nn-model" install "$scratch/nnunet_model.zip" -o "$scratch/installed"
installed=$(<"$scratch/logs/c_nn_model_install.log")
[[ $installed == "$scratch/installed/$trainer_folder" ]] \
    || { echo "check-nnunet-interop: nn-model install printed '$installed', not the trainer folder" >&2; exit 1; }
step c_nn_model_info "$bin/nn-model" info "$installed"
step c_nn_infer "$bin/nn-infer" -q --device cpu -m "$installed" -i "$scratch/test" -o "$scratch/pred/c_nn_infer"
step c_nnunet_predict "${nnunet_predict[@]}" -o "$scratch/pred/c_nnunet"
agreement c "$scratch/pred/c_nn_infer" "$scratch/pred/c_nnunet"

# d. nn-model export of a.'s run, installed by nnU-Net into fresh results, nnU-Net predicts
export nnUNet_results=$scratch/results_d
step d_nn_model_info "$bin/nn-model" info "$run"
step d_nn_model_export "$bin/nn-model" export "$run" -o "$scratch/nn_tools_model.zip"
step d_nnunet_install "$venv/bin/nnUNetv2_install_pretrained_model_from_zip" "$scratch/nn_tools_model.zip"
# without TTA, as a.'s barely trained model's mirrored predictions average to little foreground
step d_nnunet_predict "${nnunet_predict[@]}" -chk checkpoint_final.pth --disable_tta -o "$scratch/pred/d_nnunet"
agreement d "$scratch/pred/a_nn_infer_notta" "$scratch/pred/d_nnunet"

"$venv/bin/python3" - "$scratch" "$train_cases" "$test_cases" "$((SECONDS - start))" <<'PY'
import json, os, sys
scratch, train_cases, test_cases, seconds = sys.argv[1:]
def load(name):
    return json.load(open(os.path.join(scratch, name + ".json")))
def model_info(step):
    info = json.load(open(os.path.join(scratch, "logs", step + ".log")))
    return {k: info[k] for k in ("trainer_name", "network_class_name", "folds", "parameters")}
plans = load("nnUNetPlans")["configurations"]["3d_fullres"]
steps = dict(line.split() for line in open(os.path.join(scratch, "seconds.txt")))
report = {
    "dataset": "Dataset004_Hippocampus", "train_cases": int(train_cases), "test_cases": int(test_cases),
    "configuration": "3d_fullres", "fold": 0, "device": "cpu", "cpu_cores": os.cpu_count(),
    "batch_size": plans["batch_size"], "patch_size": plans["patch_size"],
    "a_nn_train_to_nnunet_predict_from_modelfolder": {"nn_train": "2 epochs x 5 iterations",
                                                      "tta": load("a_tta"), "no_tta": load("a_notta")},
    # step() stops the script on any other exit status
    "b_nnunet_train_continue": {**load("b"), "exit_status": 0, "iterations": 3},
    "c_nnunet_export_to_nn_model_install_nn_infer": {"nnunet_train": "1 epoch x 4 iterations",
                                                     "installed": model_info("c_nn_model_info"), "tta": load("c")},
    "d_nn_model_export_to_nnunet_install_predict": {"exported": model_info("d_nn_model_info"), "no_tta": load("d")},
    "seconds": {**{k: int(v) for k, v in steps.items() if not k.startswith("agreement_")}, "total": int(seconds)},
}
print(json.dumps(report, indent=1))
minima = [report["a_nn_train_to_nnunet_predict_from_modelfolder"][k]["min"] for k in ("tta", "no_tta")] + \
         [report["c_nnunet_export_to_nn_model_install_nn_infer"]["tta"]["min"],
          report["d_nn_model_export_to_nnunet_install_predict"]["no_tta"]["min"]]
b = report["b_nnunet_train_continue"]
continued = b["resumed_from_epoch"] == b["checkpoint_epoch"] and b["final_checkpoint_epoch"] == b["checkpoint_epoch"] + 1 \
    and b["logging_history_kept"] and all(n == b["checkpoint_epoch"] + 1 for n in b["logging_lengths_after"].values())
if min(minima) < 0.999 or not continued:
    sys.exit("check-nnunet-interop: an agreement is below 0.999 or nnUNetv2_train --c did not continue the run")
PY
