# Sourced by scripts/slurm/submit.sh and scripts/slurm/stage.sh: their shared options (scripts/nnunet.sh's
# and the Slurm ones), the binaries' folder and job submission. Both run from the repository (a job
# runs stage.sh by its absolute path through `sbatch --wrap`, never a spooled copy), so the folders
# are found from this file's own path, resolved before any job starts.
slurm_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=$(cd "${NN_TOOLS_BIN:-$slurm_dir/../../target/release}" && pwd)

# parse_options OPTION...: sets configs, fold_request, train_flags, plan_flags, device, precision, threads, parts,
# wait, sbatch_args, train_sbatch_args
parse_options() {
    configs="" fold_request="0-4" train_flags=() plan_flags=() device=auto precision=auto threads=() parts=1 wait=""
    sbatch_args=() train_sbatch_args=()
    while [[ $# -gt 0 ]]; do
        [[ $1 == --wait || $# -ge 2 ]] || { echo "$0: $1 needs a value" >&2; exit 2; }
        case $1 in
            --configs) configs=$2; shift 2 ;;
            --folds) fold_request=$2; shift 2 ;;
            --epochs|--iters|--val-iters) train_flags+=("$1" "$2"); shift 2 ;;
            --device) device=$2; shift 2 ;;
            --precision) precision=$2; shift 2 ;;
            --gpu-memory-gb) plan_flags+=("$1" "$2"); shift 2 ;;
            -j|--threads) threads=(-j "$2"); shift 2 ;;
            --parts)
                [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "$0: --parts must be a positive number, not '$2'" >&2; exit 2; }
                parts=$2; shift 2 ;;
            --wait) wait=1; shift ;;
            --sbatch-args) read -ra sbatch_args <<< "$2"; shift 2 ;;
            --train-sbatch-args) read -ra train_sbatch_args <<< "$2"; shift 2 ;;
            *) echo "$0: unknown option $1" >&2; exit 2 ;;
        esac
    done
}

# submit NAME DEPENDENCIES SBATCH_OPTION... -- COMMAND...: submits COMMAND as a job named nn-NAME after
# the jobs DEPENDENCIES (ids separated by ':', or empty) finished successfully, and prints its id. A job
# whose dependency failed is cancelled rather than left pending for ever. A COMMAND that is a .sbatch
# file is submitted as the batch script (its #SBATCH lines apply), any other through --wrap. Logs:
# WORK/slurm/logs.
submit() {
    local name=$1 after=$2 options=()
    shift 2
    while [[ $1 != -- ]]; do options+=("$1"); shift; done
    shift
    [[ -z $after ]] || options+=(--dependency="afterok:$after" --kill-on-invalid-dep=yes)
    [[ $1 == *.sbatch ]] || set -- --wrap "exec $(printf '%q ' "$@")"
    mkdir -p "$work/slurm/logs"
    # the binaries as found here travel with every job (sbatch runs .sbatch files from a spool copy)
    sbatch --parsable --job-name="nn-$name" --output="$work/slurm/logs/%x-%j.log" --open-mode=append \
        --export="ALL,NN_TOOLS_BIN=$bin" "${sbatch_args[@]}" "${options[@]}" "$@" | cut -d';' -f1
}
