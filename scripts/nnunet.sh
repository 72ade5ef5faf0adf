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
#                          [--iters N] [--device auto|cpu|cuda] [--gpu-memory-gb N] [-j N]
# Outputs: WORK_DIR/{dataset_fingerprint.json, plans.json, preprocessed/CONFIG, runs/CONFIG/fold_F,
#          inference_plan.json, predictions/}
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${NN_TOOLS_BIN:-$here/target/release}
usage() { sed -n '/^# Usage/,/^# Outputs/p' "$0" | sed 's/^# //' >&2; exit 2; }
[[ $# -ge 2 ]] || usage
raw=$1 work=$2
shift 2
configs="" folds="0-4" train_flags=() plan_flags=() device=auto threads=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --configs) configs=$2; shift 2 ;;
        --folds) folds=$2; shift 2 ;;
        --epochs|--iters|--val-iters) train_flags+=("$1" "$2"); shift 2 ;;
        --device) device=$2; shift 2 ;;
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

# configurations to run: the plans' ones (nnU-Net's 2d, 3d_fullres, and for large images 3d_lowres
# and 3d_cascade_fullres), or the requested subset, each with the configuration whose preprocessed data
# it trains on (the cascade: 3d_fullres's)
declare -A data_of
while read -r name source; do data_of[$name]=$source; done < <(python3 -c '
import json, sys
for name, c in json.load(open(sys.argv[1]))["configurations"].items():
    print(name, c.get("inherits_from", name) if "previous_stage" in c else name)' "$plans")
planned=$(python3 -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1]))["configurations"]))' "$plans")
if [[ $folds =~ ^([0-9])-([0-9])$ ]]; then folds=$(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"); else folds=${folds//,/ }; fi
# the cascade trains on 3d_lowres's cross-validation predictions, so it needs all five lowres folds
cascade=3d_cascade_fullres lowres=3d_lowres
cascade_reason=""
[[ $(printf '%s\n' $folds | sort -u | xargs) == "0 1 2 3 4" ]] || cascade_reason="it trains on every case's 3d_lowres prediction, which needs --folds 0-4"
if [[ -n $configs ]]; then
    requested=${configs//,/ }
    for c in $requested; do
        [[ " $planned " == *" $c "* ]] || { echo "nnunet.sh: error: $plans: no configuration $c ($planned)" >&2; exit 2; }
    done
    if [[ " $requested " == *" $cascade "* ]]; then
        [[ " $requested " == *" $lowres "* ]] || { echo "nnunet.sh: error: --configs: $cascade needs $lowres" >&2; exit 2; }
        [[ -z $cascade_reason ]] || { echo "nnunet.sh: error: --configs: $cascade: $cascade_reason" >&2; exit 2; }
    fi
    # in the plans' order, so that 3d_lowres trains before the cascade
    planned=$(for c in $planned; do if [[ " $requested " == *" $c "* ]]; then echo "$c"; fi; done)
elif [[ " $planned " == *" $cascade "* && -n $cascade_reason ]]; then
    step "$cascade: skipped: $cascade_reason"
    planned=$(for c in $planned; do if [[ $c != "$cascade" ]]; then echo "$c"; fi; done)
fi
planned=$(echo $planned)
with_cascade=false
[[ " $planned " == *" $cascade "* ]] && with_cascade=true

for data in $(for c in $planned; do echo "${data_of[$c]}"; done | awk '!seen[$0]++'); do
    manifest=$work/preprocessed/$data/manifest.json
    # a raw change that matters changes the fingerprint (shapes, spacings, foreground intensities)
    if current "resample-$data" "$plans" "$fingerprint" && [[ -f $manifest ]]; then
        step "nn-resample -c $data: current"
    else
        step "nn-resample -c $data"
        "$bin/nn-resample" --plans "$plans" -c "$data" -i "$raw" -o "$work/preprocessed/$data" -q "${threads[@]}"
        mark "resample-$data"
    fi
done

# the cascade's input: each lowres fold's validation writes its cases' labels, then this mark
next_stage=$work/runs/$lowres/predicted_next_stage/$cascade
runs=()
for c in $planned; do
    data=$work/preprocessed/${data_of[$c]}
    inputs=("$data/manifest.json") stage=() marks=false
    if $with_cascade && [[ $c == "$lowres" ]]; then
        stage=(--next-stage-data "$work/preprocessed/3d_fullres") marks=true
    elif [[ $c == "$cascade" ]]; then
        for f in $folds; do inputs+=("$next_stage/fold_$f.json"); done
        stage=(--prev-stage "$next_stage")
    fi
    run=$work/runs/$c
    runs+=("$run")
    for f in $folds; do
        final=$run/fold_$f/checkpoint_final.json
        train=("$bin/nn-train" --plans "$plans" -c "$c" --data "$data" --dataset "$raw/dataset.json" "${stage[@]}"
            --fold "$f" -o "$run" --device "$device" "${train_flags[@]}" "${threads[@]}")
        if newer_than "$final" "${inputs[@]}" && [[ -d $run/fold_$f/validation ]]; then
            if ! $marks || newer_than "$next_stage/fold_$f.json" "$final" "$work/preprocessed/3d_fullres/manifest.json"; then
                step "train $c fold $f: done"
            else
                # trained before the cascade's data existed or changed: only the validation is redone
                step "nn-train -c $c --fold $f --validate-only (labels for $cascade)"
                "${train[@]}" --validate-only
            fi
            continue
        fi
        # an unfinished fold resumes; a finished one whose inputs changed trains anew
        resume=(--resume)
        [[ -f $final ]] && ! newer_than "$final" "${inputs[@]}" && resume=()
        step "nn-train -c $c --fold $f"
        "${train[@]}" "${resume[@]}"
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
