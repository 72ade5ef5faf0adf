#!/usr/bin/env bash
# One job of scripts/slurm/submit.sh's pipeline; submit.sh and the plan stage submit it by its absolute
# path (`sbatch --wrap`), with submit.sh's options:
#   stage.sh plan RAW WORK [options]               fingerprint + plans, then submits every later job
#   stage.sh resample RAW WORK CONFIG [K/N] [options]  nn-resample of one preprocessed folder (a shard
#                                                  with K/N; without, the pass that writes manifest.json)
#   stage.sh select RAW WORK [options]             nn-ensemble select over every trained configuration
#   stage.sh predict RAW WORK [K/N] [options]      nn-infer of RAW/imagesTs (one shard with K/N)
#   stage.sh postprocess RAW WORK [options]        nn-ensemble postprocess -> WORK/predictions
# The stamps in WORK/.stamps are scripts/nnunet.sh's, so either continues the other's run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
stage=$1 raw=$2 work=$3
shift 3
part=()
case $stage in
    resample) data_configuration=$1; shift ;;
esac
case $stage in
    resample|predict) [[ ${1:-} != */* ]] || { part=(--part "$1"); shift; } ;;
esac
options=("$@")
parse_options "$@"
plans=$work/plans.json fingerprint=$work/dataset_fingerprint.json
step() { echo "== $*" >&2; }
# scripts/nnunet.sh's rule: a stage is current when its stamp is newer than every input that exists
newer_than() { local out=$1; shift; [[ -e $out ]] || return 1; for input in "$@"; do [[ ! -e $input || $out -nt $input ]] || return 1; done; }
current() { local name=$1; shift; newer_than "$work/.stamps/$name" "$@"; }
mark() { mkdir -p "$work/.stamps" && touch "$work/.stamps/$1"; }
# the stages from the plans: one line of bash assignments per configuration (nn-plan stages)
stage_lines() {
    local request=(--plans "$plans" --work "$work" --folds "$fold_request")
    [[ -z $configs ]] || request+=(--configs "$configs")
    "$bin/nn-plan" stages "${request[@]}" --format shell
}
shopt -s nullglob

plan_and_submit() {
    if current fingerprint "$raw/dataset.json" "$raw"/imagesTr/* "$raw"/labelsTr/*; then
        step "fingerprint: current"
    else
        "$bin/nn-fingerprint" "$raw" -o "$fingerprint" -q "${threads[@]}"
        mark fingerprint
    fi
    if current plans "$fingerprint"; then
        step "plans: current"
    else
        "$bin/nn-plan" --fingerprint "$fingerprint" --dataset "$raw" -o "$plans" -q "${plan_flags[@]}"
        mark plans
    fi
    local lines stages line jobs=() shards finish array after k
    lines=$(stage_lines)
    mapfile -t stages <<< "$lines"
    # preprocessing: each preprocessed folder once, in --parts shards, then the pass that writes its
    # manifest.json and skips every case the shards made
    declare -A resample_job_of_manifest
    for line in "${stages[@]}"; do
        eval "$line"
        [[ -z $skipped && -z ${resample_job_of_manifest[$manifest]:-} ]] || continue
        after=""
        if [[ $parts -gt 1 ]]; then
            shards=()
            for ((k = 0; k < parts; k++)); do
                shards+=("$(submit "resample-$data_configuration-$k" "" -- "$slurm_dir/stage.sh" resample "$raw" "$work" "$data_configuration" "$k/$parts" "${options[@]}")")
                jobs+=("resample-$data_configuration-$k ${shards[-1]}")
            done
            after=$(IFS=:; echo "${shards[*]}")
        fi
        finish=$(submit "resample-$data_configuration" "$after" -- "$slurm_dir/stage.sh" resample "$raw" "$work" "$data_configuration" "${options[@]}")
        jobs+=("resample-$data_configuration $finish")
        resample_job_of_manifest[$manifest]=$finish
    done
    # training: an array of folds per configuration after its data; a configuration that writes labels
    # for its next stage (3d_lowres) also waits for that stage's data, and the next stage (the cascade)
    # waits for all of its folds
    declare -A train_jobs_feeding
    local train_ids=()
    for line in "${stages[@]}"; do
        eval "$line"
        [[ -z $skipped ]] || continue
        after=${resample_job_of_manifest[$manifest]}
        [[ -z $next_stage_manifest ]] || after+=":${resample_job_of_manifest[$next_stage_manifest]}"
        [[ ${#inputs[@]} -eq 0 ]] || after+="${train_jobs_feeding[$configuration]:-}"
        array=$(IFS=,; echo "${folds[*]}")
        train_ids+=("$(submit "train-$configuration" "$after" --array="$array" "${train_sbatch_args[@]}" -- \
            "$slurm_dir/train-folds.sbatch" "$raw" "$work" "$configuration" --bin "$bin" --device "$device" \
            --precision "$precision" --folds "$fold_request" "${train_flags[@]}" "${threads[@]}")")
        jobs+=("train-$configuration ${train_ids[-1]}")
        [[ -z $next_stage ]] || train_jobs_feeding[$next_stage]+=":${train_ids[-1]}"
    done
    after=$(submit select "$(IFS=:; echo "${train_ids[*]}")" -- "$slurm_dir/stage.sh" select "$raw" "$work" "${options[@]}")
    jobs+=("select $after")
    if [[ -d $raw/imagesTs ]]; then
        local predict_ids=()
        local shard=()
        for ((k = 0; k < parts; k++)); do
            [[ $parts -eq 1 ]] || shard=("$k/$parts")
            predict_ids+=("$(submit "predict-$k" "$after" "${train_sbatch_args[@]}" -- "$slurm_dir/stage.sh" predict "$raw" "$work" "${shard[@]}" "${options[@]}")")
            jobs+=("predict-$k ${predict_ids[-1]}")
        done
        after=$(submit postprocess "$(IFS=:; echo "${predict_ids[*]}")" -- "$slurm_dir/stage.sh" postprocess "$raw" "$work" "${options[@]}")
        jobs+=("postprocess $after")
    fi
    # submit.sh --wait reads the jobs from here; written whole, so it never reads half a list
    printf '%s\n' "${jobs[@]}" | tee "$work/slurm/jobs-$SLURM_JOB_ID.tmp"
    mv "$work/slurm/jobs-$SLURM_JOB_ID.tmp" "$work/slurm/jobs-$SLURM_JOB_ID"
}

resample() {
    local line
    line=$(stage_lines | grep -m1 "data_configuration=$data_configuration ")
    eval "$line"
    # not quiet: its one summary line in the job log says how many cases this job made
    "$bin/nn-resample" --plans "$plans" -c "$data_configuration" -i "$raw" -o "$data" "${threads[@]}" "${part[@]}"
    [[ ${#part[@]} -gt 0 ]] || mark "resample-$data_configuration"
}

# every configuration's run folder (runs) and final checkpoints (all_finals), and the folds (folds)
trained_runs() {
    local lines line
    lines=$(stage_lines)
    runs=() all_finals=()
    while read -r line; do
        eval "$line"
        [[ -n $skipped ]] && continue
        runs+=("$run")
        all_finals+=("${finals[@]}")
    done <<< "$lines"
}

select_models() {
    trained_runs
    if current select "${all_finals[@]}"; then
        step "nn-ensemble select: current"
        return
    fi
    "$bin/nn-ensemble" select --runs "${runs[@]}" --ref "$raw/labelsTr" --folds "$(IFS=,; echo "${folds[*]}")" \
        -o "$work/inference_plan.json" "${threads[@]}"
    mark select
}

case $stage in
    plan) plan_and_submit ;;
    resample) resample ;;
    select) select_models ;;
    predict|postprocess)
        trained_runs
        if current predict "$work/inference_plan.json" "${all_finals[@]}" "$raw"/imagesTs/*; then
            step "predictions: current"
            exit 0
        fi ;;&
    predict)
        "$bin/nn-infer" --plan "$work/inference_plan.json" -i "$raw/imagesTs" -o "$work/predictions_raw" \
            --device "$device" --precision "$precision" -q "${threads[@]}" "${part[@]}" ;;
    postprocess)
        "$bin/nn-ensemble" postprocess -i "$work/predictions_raw" -o "$work/predictions" \
            --plan "$work/inference_plan.json" "${threads[@]}"
        mark predict ;;
    *) echo "stage.sh: unknown stage $stage" >&2; exit 2 ;;
esac
