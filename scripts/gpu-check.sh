#!/usr/bin/env bash
# The GPU check of docs/performance.md, in two halves:
#
#   scripts/gpu-check.sh pack   (here, after scripts/setup.sh) stages what the lent GPU machine needs
#                               in .device/ (git-ignored, about 35 MB): the stripped release binaries
#                               and Dataset004_Hippocampus from ../shared/data.
#   scripts/gpu-check.sh run    (there, with .device carried) runs the binaries against the machine's
#                               own torch 2.11.0 libraries and writes $OUT/gpu-check.json.
#
# `run`: preprocesses Dataset004 for 3d_fullres, times one epoch to size the training budget, has
# that model predict 2 images on the GPU and the CPU (a failing prediction path shows in seconds), trains
# fold 0 for as many 250-iteration epochs as fit in GPU_CHECK_TRAIN_SECONDS (default 300) while
# nvidia-smi samples utilisation and memory, evaluates the fold's validation predictions (Dice), times
# nn-infer with mirroring TTA on the validation images (cases per second), and compares CPU and CUDA
# predictions of the same weights voxel by voxel on GPU_CHECK_CPU_CASES (default 8) of them.
# GPU_CHECK_DEVICE=cpu GPU_CHECK_ITERS=2 GPU_CHECK_TRAIN_SECONDS=1 rehearses the whole run on a CPU
# (tests/gpu_check.rs does, on a synthetic dataset: GPU_CHECK_DATA, GPU_CHECK_STAGE, GPU_CHECK_WORK and
# NN_TOOLS_BIN move the dataset, the staging folder, the scratch folder and the binaries' folder).
# The full run should take about 7 minutes on an H100 (estimated; never run there yet): give the device
# call a 600 s limit. The figures are all in the JSON, written on exit (also after a failure, naming
# the stage in `failed_at`), and a copy of the log lines is in $OUT/gpu-check.log.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stage=${GPU_CHECK_STAGE:-$here/.device}
bin_dir=${NN_TOOLS_BIN:-$here/target/release}
tools=(nn-fingerprint nn-plan nn-resample nn-train nn-infer nn-eval)

pack() {
    local data=${GPU_CHECK_DATA:-$here/../shared/data/Dataset004_Hippocampus}
    [[ -f $data/dataset.json ]] || { echo "gpu-check: error: $data: no dataset.json" >&2; exit 2; }
    rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/data"
    for tool in "${tools[@]}"; do
        [[ -x $bin_dir/$tool ]] || { echo "gpu-check: error: $bin_dir/$tool missing: run scripts/setup.sh" >&2; exit 2; }
        if command -v strip > /dev/null; then strip -o "$stage/bin/$tool" "$bin_dir/$tool"; else cp "$bin_dir/$tool" "$stage/bin/"; fi
    done
    cp -r "$data" "$stage/data/dataset"
    # the device gets a copy of the working tree without .git: record what was built
    (cd "$here" && git describe --always --dirty 2> /dev/null || echo unknown) > "$stage/commit"
    echo "gpu-check: staged $(du -sh "$stage" | cut -f1) in $stage; run there with it carried: scripts/gpu-check.sh run" >&2
}

# Figures are kept as G_* variables and written to $OUT/gpu-check.json when the script exits, also
# after a failure or a timeout, with `failed_at` naming the stage that did not finish.
report() {
    if [[ -n ${G_sampler:-} ]]; then kill "$G_sampler" 2> /dev/null || true; fi
    echo "== $(date +%T) report"
    python3 - <<'PY'
import array, csv, glob, gzip, json, os, statistics, struct, subprocess

env = os.environ
out, work = env["G_out"], env["G_work"]
number = lambda name: float(env[name]) if env.get(name) else None

def read_json(path):
    try:
        return json.loads(open(path).read().replace("NaN", "null"))
    except (OSError, ValueError):
        return None

def read_log(path):
    try:
        return [json.loads(line) for line in open(path)]
    except (OSError, ValueError):
        return []

def voxels(path):
    # a NIfTI-1 label map as nn-infer writes it: the voxels (uint8, or uint16 past 255 labels) start at
    # the header's vox_offset
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    (offset,) = struct.unpack("<f", raw[108:112])
    (datatype,) = struct.unpack("<h", raw[70:72])
    return array.array({2: "B", 512: "H"}[datatype], raw[int(offset):])

def agreement(cpu_dir, other_dir):
    cases = []
    for cpu in sorted(glob.glob(f"{cpu_dir}/*.nii.gz")):
        other = f"{other_dir}/{os.path.basename(cpu)}"
        if os.path.exists(other):
            theirs, mine = voxels(other), voxels(cpu)
            cases.append((os.path.basename(cpu), sum(a == b for a, b in zip(theirs, mine)), len(mine)))
    if not cases:
        return None
    equal, total = sum(c[1] for c in cases), sum(c[2] for c in cases)
    return {"cases": len(cases), "equal_voxels": equal, "voxels": total, "fraction": equal / total,
            "worst_case": min((c[1] / c[2], c[0]) for c in cases)}

gpu = {}
samples = f"{out}/gpu-samples.csv"
if os.path.exists(samples):
    rows = []
    for row in csv.reader(open(samples)):
        try:
            rows.append((float(row[1]), float(row[2])))
        except (IndexError, ValueError):
            pass  # "[N/A]" fields, a line cut off by the kill
    utilisation = [r[0] for r in rows]
    # the first seconds load the network and autotune cuDNN, the last ones predict the validation
    # cases: utilisation over the middle 80% of the run is that of the training proper
    busy = utilisation[len(utilisation) // 10:len(utilisation) - len(utilisation) // 10]
    gpu = {
        "samples": len(rows),
        "utilisation_mean_percent": round(statistics.mean(busy), 1) if busy else None,
        "utilisation_median_percent": statistics.median(busy) if busy else None,
        "utilisation_mean_whole_run_percent": round(statistics.mean(utilisation), 1) if utilisation else None,
        "peak_memory_mib": max((r[1] for r in rows), default=None),
    }
    try:
        gpu["name"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True).stdout.strip()
    except OSError:
        pass

log = read_log(f"{work}/run/fold_0/log.jsonl")
times = [entry["epoch_time_s"] for entry in log]
summary = read_json(f"{out}/validation-summary.json")
infer_s, cases = number("G_infer_s"), number("G_cases")
report = {
    "commit": env.get("G_commit"),
    "device": env.get("G_device"),
    "failed_at": env.get("G_stage") or None,
    "torch": env.get("G_torch"),
    "iterations_per_epoch": int(env["G_iters"]),
    "training_budget_s": number("G_budget"),
    "preprocessing_s": number("G_preprocess_s"),
    "calibration_epoch_s": number("G_epoch_s"),
    "epochs_planned": int(env["G_epochs"]) if env.get("G_epochs") else None,
    "epochs": len(log),
    "training_wall_s": number("G_train_s"),
    "epoch_s": {"first": times[0], "mean_after_first": statistics.mean(times[1:] or times),
                "median": statistics.median(times), "min": min(times), "max": max(times)} if times else None,
    "gpu": gpu,
    "validation": {
        "cases": len(summary["metric_per_case"]),
        "dice_per_class": {k: v["Dice"] for k, v in summary["mean"].items()},
        "mean_dice": summary["foreground_mean"]["Dice"],
        "final_ema_pseudo_dice": log[-1]["ema_pseudo_dice"] if log else None,
    } if summary else None,
    "inference_tta": {"cases": int(cases), "wall_s": infer_s, "cases_per_s": cases / infer_s} if infer_s and cases else None,
    "smoke_cpu_agreement": agreement(f"{work}/smoke-cpu", f"{work}/smoke-device"),
    "cpu_agreement": agreement(f"{work}/predicted-on-cpu", f"{work}/predicted"),
}
path = f"{out}/gpu-check.json"
json.dump(report, open(path + ".tmp", "w"), indent=2)
os.replace(path + ".tmp", path)
print(json.dumps(report, indent=2))
PY
}

run() {
    export G_out=${OUT:-$here/gpu-check-out} G_device=${GPU_CHECK_DEVICE:-cuda} G_budget=${GPU_CHECK_TRAIN_SECONDS:-300}
    export G_iters=${GPU_CHECK_ITERS:-250} G_work=${GPU_CHECK_WORK:-/tmp/gpu-check}
    local cpu_cases=${GPU_CHECK_CPU_CASES:-8} bin=$stage/bin raw=$stage/data/dataset
    local out=$G_out work=$G_work device=$G_device
    [[ -x $bin/nn-train && -f $raw/dataset.json ]] || { echo "gpu-check: error: $stage is not staged: run scripts/gpu-check.sh pack here and carry it" >&2; exit 2; }
    mkdir -p "$out"
    exec > >(tee "$out/gpu-check.log") 2>&1
    export G_commit; G_commit=$(cat "$stage/commit")
    # the binaries' rpath names the build machine's venv: use this machine's torch when it has one, and
    # only the libtorch they were built against
    local torch_lib
    torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2> /dev/null || true)
    if [[ -n $torch_lib ]]; then
        export G_torch; G_torch=$(python3 -c 'import torch; print(torch.__version__)')
        [[ $G_torch == 2.11.0* ]] || { echo "gpu-check: error: this python3 has torch $G_torch; the binaries need 2.11.0" >&2; exit 2; }
        export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
    echo "gpu-check: libtorch from ${torch_lib:-the rpath of the binaries}, binaries of $G_commit"
    rm -rf "$work" && mkdir -p "$work"
    trap report EXIT
    step() { export G_stage=$1; echo "== $(date +%T) $1"; }
    seconds() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.3f}")' "$1"; }

    step "preprocess (fingerprint, plan, resample 3d_fullres)"
    local t0; t0=$(date +%s.%N)
    "$bin/nn-fingerprint" "$raw" -o "$work/fingerprint.json" -q
    "$bin/nn-plan" --fingerprint "$work/fingerprint.json" --dataset "$raw" -o "$work/plans.json"
    "$bin/nn-resample" --plans "$work/plans.json" -c 3d_fullres -i "$raw" -o "$work/preprocessed" -q
    export G_preprocess_s; G_preprocess_s=$(seconds "$t0")

    local train=("$bin/nn-train" --plans "$work/plans.json" -c 3d_fullres --data "$work/preprocessed" --dataset "$raw/dataset.json"
                 --device "$device" --iters "$G_iters" --val-iters $(( (G_iters + 4) / 5 )) -q)
    # --fold all: the same epoch, without the final validation a fold ends with
    step "calibration: one epoch of $G_iters iterations (cuDNN autotuning included)"
    "${train[@]}" --fold all -o "$work/calibration" --epochs 1
    export G_epoch_s G_epochs
    G_epoch_s=$(python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["epoch_time_s"])' "$work/calibration/fold_all/log.jsonl")
    G_epochs=$(python3 -c 'import sys; print(max(1, int(float(sys.argv[1]) / float(sys.argv[2]))))' "$G_budget" "$G_epoch_s")
    # the prediction path, once, before the long run depends on it: a failure costs seconds, not the run
    step "smoke test: the calibration model predicts 2 images on $device and on the CPU"
    local smoke=("$raw/imagesTr/"*_0000.nii.gz)
    "$bin/nn-infer" -m "$work/calibration" --folds all -i "${smoke[@]:0:2}" -o "$work/smoke-device" --device "$device" -q
    "$bin/nn-infer" -m "$work/calibration" --folds all -i "${smoke[@]:0:2}" -o "$work/smoke-cpu" --device cpu -q

    step "training fold 0 for $G_epochs epochs (first epoch took ${G_epoch_s}s)"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > "$out/gpu-samples.csv" &
        export G_sampler=$!
    fi
    t0=$(date +%s.%N)
    # a run that overruns is stopped (nn-train saves checkpoint_latest on SIGTERM) inside the limit
    timeout -k 20 $(( G_budget + 150 )) "${train[@]}" --fold 0 -o "$work/run" --epochs "$G_epochs"
    export G_train_s; G_train_s=$(seconds "$t0")
    kill "${G_sampler:-}" 2> /dev/null || true
    export G_sampler=""

    step "Dice of fold 0's validation predictions"
    "$bin/nn-eval" --ref "$raw/labelsTr" --pred "$work/run/fold_0/validation" --dataset "$raw/dataset.json" --chill -o "$out/validation-summary.json"

    local cases=() id
    for label in "$work/run/fold_0/validation/"*.nii.gz; do
        id=$(basename "$label" .nii.gz)
        cases+=("$raw/imagesTr/${id}_0000.nii.gz")
    done
    step "nn-infer with TTA on ${#cases[@]} validation images ($device)"
    t0=$(date +%s.%N)
    "$bin/nn-infer" -m "$work/run" --folds 0 -i "${cases[@]}" -o "$work/predicted" --device "$device" -q
    export G_infer_s G_cases=${#cases[@]}; G_infer_s=$(seconds "$t0")

    local compared=("${cases[@]:0:$cpu_cases}")
    step "nn-infer with TTA on ${#compared[@]} of them on the CPU, for the CPU/$device agreement"
    "$bin/nn-infer" -m "$work/run" --folds 0 -i "${compared[@]}" -o "$work/predicted-on-cpu" --device cpu -q
    export G_stage=""
}

case ${1:-} in
    pack) pack ;;
    run) run ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
