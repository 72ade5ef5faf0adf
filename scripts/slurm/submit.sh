#!/usr/bin/env bash
# scripts/nnunet.sh's pipeline as dependent Slurm jobs:
#   plan (nn-fingerprint, nn-plan) -> preprocessing of each configuration's data (--parts shards of
#   nn-resample --part K/N, then one pass that writes manifest.json) -> a training array per configuration,
#   one task per fold (scripts/slurm/train-folds.sbatch; the cascade after every 3d_lowres fold) ->
#   nn-ensemble select -> nn-infer of RAW/imagesTs in --parts shards -> nn-ensemble postprocess.
# The plans decide which configurations, folders and dependencies there are (nn-plan stages), and they do
# not exist before the plan job ran: so this script submits only the plan job, and that job submits the
# others and lists them in WORK/slurm/jobs-PLANJOB (name and id per line). Binaries and scripts are
# found here, at submission, and passed to the jobs by absolute path. WORK has scripts/nnunet.sh's
# layout and stamps, so either continues the other's run; it must be on storage every node sees.
#
# Usage: scripts/slurm/submit.sh RAW_DIR WORK_DIR [--configs 2d,3d_fullres] [--folds 0-4] [--epochs N]
#            [--iters N] [--val-iters N] [--device auto|cpu|cuda] [--precision auto|fp32|bf16|fp16]
#            [--gpu-memory-gb N] [-j N] [--parts N]
#            [--wait] [--sbatch-args "OPTIONS"] [--train-sbatch-args "OPTIONS"]
#   --parts N             preprocessing and prediction in N shards each (default 1)
#   --sbatch-args         sbatch options for every job (partition, account, time limit)
#   --train-sbatch-args   sbatch options for training and prediction jobs only (e.g. "--gres=gpu:1")
#   --wait                block until every job ended; exit 1 if one failed or was cancelled
# Prints the jobs as they are known: "NAME JOBID" per line on stdout. Logs: WORK_DIR/slurm/logs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
usage() { sed -n '/^# Usage/,/^# Prints/p' "$0" | sed 's/^# //' >&2; exit 2; }
[[ $# -ge 2 ]] || usage
raw=$1 work=$2
shift 2
parse_options "$@"
options=()
for option in "$@"; do [[ $option == --wait ]] || options+=("$option"); done
[[ -f $raw/dataset.json ]] || { echo "submit.sh: error: $raw: no dataset.json" >&2; exit 2; }
command -v sbatch >/dev/null || { echo "submit.sh: error: sbatch not found: no Slurm here" >&2; exit 2; }
mkdir -p "$work/slurm"
raw=$(cd "$raw" && pwd) work=$(cd "$work" && pwd)

plan=$(submit plan "" -- "$slurm_dir/stage.sh" plan "$raw" "$work" "${options[@]}")
echo "plan $plan"
[[ -n $wait ]] || { echo "submit.sh: the plan job submits the rest and lists them in $work/slurm/jobs-$plan" >&2; exit 0; }

# Waits for jobs without Slurm's accounting database (which a small cluster may lack): scontrol knows a
# job for MinJobAge (300 s by default) after its end, and each is checked every few seconds.
# the states of a job's tasks (one for a plain job), space-separated; empty when slurmctld forgot it
states() { scontrol show job -o "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 | sort -u | xargs; }
# wait_for NAME ID...: returns once every job ended; exits 1 naming the first that did not complete
wait_for() {
    local pending=("$@") left name id state
    while [[ ${#pending[@]} -gt 0 ]]; do
        left=()
        for ((i = 0; i < ${#pending[@]}; i += 2)); do
            name=${pending[i]} id=${pending[i + 1]}
            state=$(states "$id")
            case $state in
                COMPLETED) ;;
                ""|*FAILED*|*CANCELLED*|*TIMEOUT*|*OUT_OF_MEMORY*|*DEADLINE*|*BOOT_FAIL*)
                    echo "submit.sh: error: job $name ($id) ended ${state:-unseen}: see $work/slurm/logs/nn-$name-*.log" >&2
                    exit 1 ;;
                *) left+=("$name" "$id") ;;
            esac
        done
        pending=("${left[@]}")
        [[ ${#pending[@]} -eq 0 ]] || sleep 3
    done
}
wait_for plan "$plan"
[[ -f $work/slurm/jobs-$plan ]] || { echo "submit.sh: error: the plan job listed no jobs in $work/slurm/jobs-$plan" >&2; exit 1; }
cat "$work/slurm/jobs-$plan"
mapfile -t later < <(tr ' ' '\n' < "$work/slurm/jobs-$plan")
wait_for "${later[@]}"
echo "submit.sh: every job completed: $work" >&2
