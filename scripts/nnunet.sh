#!/usr/bin/env bash
# nnU-Net's whole pipeline on one raw dataset, stage by stage with the nn-tools binaries:
# fingerprint -> plan -> preprocess each configuration -> train every configuration x fold (each fold
# ends with its validation predictions) -> choose the best configuration or ensemble and its
# postprocessing from the cross-validation -> predict RAW_DIR/imagesTs with that choice.
#
# Every stage skips work whose outputs are complete and newer than their inputs, so rerunning after a
# failure or a pre-emption resumes and a rerun of a finished pipeline does nothing: nn-resample skips
# finished cases, nn-train --resume continues an interrupted fold, finished folds are left alone.
#
# Usage: scripts/nnunet.sh RAW_DIR WORK_DIR [--configs 2d,3d_fullres] [--folds 0-4] [--epochs N]
#                          [--iters N] [--device auto|cpu|cuda] [-j N]
# Outputs: WORK_DIR/{dataset_fingerprint.json, plans.json, preprocessed/CONFIG, runs/CONFIG/fold_F,
#          inference_plan.json, predictions/}
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${NN_TOOLS_BIN:-$here/target/release}
usage() { sed -n '/^# Usage/,/^# Outputs/p' "$0" | sed 's/^# //' >&2; exit 2; }
[[ $# -ge 2 ]] || usage
raw=$1 work=$2
shift 2
configs="" folds="0-4" train_flags=() device=auto threads=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --configs) configs=$2; shift 2 ;;
        --folds) folds=$2; shift 2 ;;
        --epochs|--iters|--val-iters) train_flags+=("$1" "$2"); shift 2 ;;
        --device) device=$2; shift 2 ;;
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
    "$bin/nn-plan" --fingerprint "$fingerprint" --dataset "$raw" -o "$plans"
    mark plans
fi

# configurations to run: the plans' trainable ones (a cascade needs its lowres stage's predictions,
# which training does not produce yet), or the requested subset
planned=$(python3 -c '
import json, sys
plans = json.load(open(sys.argv[1]))["configurations"]
print(" ".join(name for name, c in plans.items() if "previous_stage" not in c and "inherits_from" not in c))' "$plans")
if [[ -n $configs ]]; then
    planned=$(for c in ${configs//,/ }; do
        [[ " $planned " == *" $c "* ]] || { echo "nnunet.sh: error: $plans: no trainable configuration $c ($planned)" >&2; exit 2; }
        echo "$c"
    done)
fi
if [[ $folds =~ ^([0-9])-([0-9])$ ]]; then folds=$(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"); else folds=${folds//,/ }; fi

runs=()
for c in $planned; do
    manifest=$work/preprocessed/$c/manifest.json
    # a raw change that matters changes the fingerprint (shapes, spacings, foreground intensities)
    if current "resample-$c" "$plans" "$fingerprint" && [[ -f $manifest ]]; then
        step "nn-resample -c $c: current"
    else
        step "nn-resample -c $c"
        "$bin/nn-resample" --plans "$plans" -c "$c" -i "$raw" -o "$work/preprocessed/$c" -q "${threads[@]}"
        mark "resample-$c"
    fi
    run=$work/runs/$c
    runs+=("$run")
    for f in $folds; do
        final=$run/fold_$f/checkpoint_final.json
        if newer_than "$final" "$manifest" && [[ -d $run/fold_$f/validation ]]; then
            step "train $c fold $f: done"
            continue
        fi
        # an unfinished fold resumes; a finished one whose preprocessed data changed trains anew
        resume=(--resume)
        [[ -f $final ]] && ! newer_than "$final" "$manifest" && resume=()
        step "nn-train -c $c --fold $f"
        "$bin/nn-train" --plans "$plans" -c "$c" --data "$work/preprocessed/$c" --dataset "$raw/dataset.json" \
            --fold "$f" -o "$run" "${resume[@]}" --device "$device" "${train_flags[@]}" "${threads[@]}"
    done
done

folds_csv=$(echo $folds | tr ' ' ',')
finals=()
for run in "${runs[@]}"; do for f in $folds; do finals+=("$run/fold_$f/checkpoint_final.json"); done; done
plan=$work/inference_plan.json
if current select "${finals[@]}"; then
    step "nn-ensemble select: current"
else
    step "nn-ensemble select"
    "$bin/nn-ensemble" select --runs "${runs[@]}" --ref "$raw/labelsTr" --folds "$folds_csv" -o "$plan" "${threads[@]}"
    mark select
fi

if [[ -d $raw/imagesTs ]]; then
    # the stamp is shared with scripts/Makefile's prediction target
    if current predict "$plan" "${finals[@]}" "$raw"/imagesTs/*; then
        step "predictions: current"
    else
        step "nn-infer $raw/imagesTs with the models of $plan"
        "$bin/nn-infer" --plan "$plan" -i "$raw/imagesTs" -o "$work/predictions_raw" --device "$device" -q "${threads[@]}"
        step "nn-ensemble postprocess -> $work/predictions"
        "$bin/nn-ensemble" postprocess -i "$work/predictions_raw" -o "$work/predictions" --plan "$plan" "${threads[@]}"
        mark predict
    fi
fi
step "done: $work"
