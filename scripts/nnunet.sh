#!/usr/bin/env bash
# nnU-Net's whole pipeline on one raw dataset, stage by stage with the nn-tools binaries:
# fingerprint -> plan -> preprocess each configuration -> train every configuration x fold (each fold
# ends with its validation predictions) -> choose the best configuration or ensemble and its
# postprocessing from the cross-validation -> predict RAW_DIR/imagesTs with that choice.
# Where the plans have nnU-Net's cascade, 3d_lowres's folds also write their validation cases' labels
# for 3d_cascade_fullres, which trains on them after all five lowres folds (with fewer folds it is
# skipped).
#
# Every stage skips work whose outputs are complete and newer than their inputs, so rerunning after a
# failure or a pre-emption resumes and a rerun of a finished pipeline does nothing: nn-resample skips
# finished cases, nn-train --resume continues an interrupted fold, finished folds are left alone.
#
# Usage: scripts/nnunet.sh RAW_DIR WORK_DIR [--configs 2d,3d_fullres] [--folds 0-4] [--epochs N]
#                          [--iters N] [--device auto|cpu|cuda] [--precision auto|fp32|bf16|fp16]
#                          [--gpu-memory-gb N] [-j N]
# Outputs: WORK_DIR/{dataset_fingerprint.json, plans.json, preprocessed/CONFIG, runs/CONFIG/fold_F,
#          inference_plan.json, predictions/}
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${NN_TOOLS_BIN:-$here/target/release}
usage() { sed -n '/^# Usage/,/^# Outputs/p' "$0" | sed 's/^# //' >&2; exit 2; }
[[ $# -ge 2 ]] || usage
raw=$1 work=$2
shift 2
configs="" fold_request="0-4" train_flags=() plan_flags=() device=auto precision=auto threads=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --configs) configs=$2; shift 2 ;;
        --folds) fold_request=$2; shift 2 ;;
        --epochs|--iters|--val-iters) train_flags+=("$1" "$2"); shift 2 ;;
        --device) device=$2; shift 2 ;;
        --precision) precision=$2; shift 2 ;;
        --gpu-memory-gb) plan_flags+=("$1" "$2"); shift 2 ;;
        -j|--threads) threads=(-j "$2"); shift 2 ;;
        *) echo "nnunet.sh: unknown option $1" >&2; usage ;;
    esac
done
[[ -f $raw/dataset.json ]] || { echo "nnunet.sh: error: $raw: no dataset.json" >&2; exit 2; }
mkdir -p "$work/.stamps"
step() { echo "== $*" >&2; }
# true when the file $1 exists and is newer than every later argument that exists
newer_than() { local out=$1; shift; [[ -e $out ]] || return 1; for input in "$@"; do [[ ! -e $input || $out -nt $input ]] || return 1; done; }
# Stages that produce content (fingerprint, plans, inference plan) leave their file untouched when it
# comes out the same, so WORK/.stamps/STAGE records when a stage last ran and the content file's own
# mtime tells later stages whether anything changed.
current() { local stage=$1; shift; newer_than "$work/.stamps/$stage" "$@"; }
mark() { touch "$work/.stamps/$1"; }
shopt -s nullglob

fingerprint=$work/dataset_fingerprint.json plans=$work/plans.json
if current fingerprint "$raw/dataset.json" "$raw"/imagesTr/* "$raw"/labelsTr/*; then
    step "fingerprint: current"
else
    step "nn-fingerprint $raw"
    "$bin/nn-fingerprint" "$raw" -o "$fingerprint" "${threads[@]}"
    mark fingerprint
fi
if current plans "$fingerprint"; then
    step "plans: current"
else
    step "nn-plan"
    "$bin/nn-plan" --fingerprint "$fingerprint" --dataset "$raw" -o "$plans" "${plan_flags[@]}"
    mark plans
fi

# the stages to run, from the plans (nn-plan stages: each configuration's preprocessed data, run folder
# and cascade arguments; see docs/formats.md): every configuration the plans have (nnU-Net's 2d,
# 3d_fullres, and for large images 3d_lowres and 3d_cascade_fullres, left out when the folds cannot feed
# it), or the requested ones, in the plans' order. One line of bash assignments per configuration.
request=(--plans "$plans" --work "$work" --folds "$fold_request")
[[ -z $configs ]] || request+=(--configs "$configs")
stage_lines=$("$bin/nn-plan" stages "${request[@]}" --format shell) || exit
mapfile -t stages <<< "$stage_lines"

# each preprocessed folder once; a raw change that matters changes the fingerprint (shapes, spacings,
# foreground intensities)
declare -A resampled
for line in "${stages[@]}"; do
    eval "$line"
    if [[ -n $skipped ]]; then
        step "$configuration: skipped: $skipped"
        continue
    fi
    [[ -z ${resampled[$data_configuration]:-} ]] || continue
    resampled[$data_configuration]=1
    if current "resample-$data_configuration" "$plans" "$fingerprint" && [[ -f $manifest ]]; then
        step "nn-resample -c $data_configuration: current"
    else
        step "nn-resample -c $data_configuration"
        "$bin/nn-resample" --plans "$plans" -c "$data_configuration" -i "$raw" -o "$data" -q "${threads[@]}"
        mark "resample-$data_configuration"
    fi
done

# a configuration with a next stage (3d_lowres) writes each fold's labels for it in its validation, then
# that fold's mark; the next stage's folds need every mark (inputs)
runs=() all_finals=()
for line in "${stages[@]}"; do
    eval "$line"
    [[ -z $skipped ]] || continue
    runs+=("$run")
    all_finals+=("${finals[@]}")
    selected_folds=("${folds[@]}")
    for i in "${!folds[@]}"; do
        f=${folds[$i]} final=${finals[$i]}
        train=("$bin/nn-train" --plans "$plans" -c "$configuration" --data "$data" --dataset "$raw/dataset.json"
            "${train_args[@]}" --fold "$f" -o "$run" --device "$device" --precision "$precision" "${train_flags[@]}" "${threads[@]}")
        if newer_than "$final" "$manifest" "${inputs[@]}" && [[ -d ${validations[$i]} ]]; then
            if [[ ${#next_stage_marks[@]} -eq 0 ]] || newer_than "${next_stage_marks[$i]}" "$final" "$next_stage_manifest"; then
                step "train $configuration fold $f: done"
            else
                # trained before the next stage's data existed or changed: only the validation is redone
                step "nn-train -c $configuration --fold $f --validate-only (labels for $next_stage)"
                "${train[@]}" --validate-only
            fi
            continue
        fi
        # an unfinished fold resumes; a finished one whose inputs changed trains anew
        resume=(--resume)
        [[ -f $final ]] && ! newer_than "$final" "$manifest" "${inputs[@]}" && resume=()
        step "nn-train -c $configuration --fold $f"
        "${train[@]}" "${resume[@]}"
    done
done

folds_csv=$(IFS=,; echo "${selected_folds[*]}")
plan=$work/inference_plan.json
if current select "${all_finals[@]}"; then
    step "nn-ensemble select: current"
else
    step "nn-ensemble select"
    "$bin/nn-ensemble" select --runs "${runs[@]}" --ref "$raw/labelsTr" --folds "$folds_csv" -o "$plan" "${threads[@]}"
    mark select
fi

if [[ -d $raw/imagesTs ]]; then
    # the stamp is shared with scripts/Makefile's prediction target
    if current predict "$plan" "${all_finals[@]}" "$raw"/imagesTs/*; then
        step "predictions: current"
    else
        step "nn-infer $raw/imagesTs with the models of $plan"
        "$bin/nn-infer" --plan "$plan" -i "$raw/imagesTs" -o "$work/predictions_raw" --device "$device" --precision "$precision" -q "${threads[@]}"
        step "nn-ensemble postprocess -> $work/predictions"
        "$bin/nn-ensemble" postprocess -i "$work/predictions_raw" -o "$work/predictions" --plan "$plan" "${threads[@]}"
        mark predict
    fi
fi
step "done: $work"
