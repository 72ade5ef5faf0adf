#!/usr/bin/env bash
# The benchmarks' generated datasets, made once and cached under target/bench-data/ (reruns reuse them;
# `rm -rf target/bench-data` makes them again). Usage: scripts/bench-data.sh brain
# prints the raw dataset folder, whose parent also holds nn-fingerprint's dataset_fingerprint.json
# and nn-plan's nnUNetPlans.json for it (nnU-Net's default planner); every benchmark gives both sides
# those plans.
#
# brain: T1-like brain MRIs, one channel, 4 foreground classes, BENCH_BRAIN_CASES cases (default 20)
# of about BENCH_BRAIN_SIZE^3 voxels (default 171, +-5 per axis): near-isotropic 0.7-1.3 mm voxels
# except every 5th case, which has 2.5-4 mm slices (nn-synth --thick-every 5). Set the two variables
# smaller to rehearse a benchmark quickly (BENCH_BRAIN_CASES=6 BENCH_BRAIN_SIZE=48, say).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ ${1:-} == brain ]] || { echo "usage: scripts/bench-data.sh brain" >&2; exit 2; }
cases=${BENCH_BRAIN_CASES:-20} size=${BENCH_BRAIN_SIZE:-171}
synth=(--cases "$cases" --labels 4 --min-size $((size - 5)) --max-size $((size + 5)) --thick-every 5 --seed 22)
dir=$PWD/target/bench-data/brain-${cases}x$size
raw=$dir/Dataset950_BrainSynth
# the stamp records how the folder was made: other flags (a changed script) make it again
if [[ ! -f $dir/made_by || $(cat "$dir/made_by") != "nn-synth ${synth[*]}" || ! -f $dir/nnUNetPlans.json ]]; then
    for tool in nn-synth nn-fingerprint nn-plan; do
        [[ -x target/release/$tool ]] || { echo "bench-data: target/release/$tool missing (run scripts/setup.sh)" >&2; exit 1; }
    done
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "bench-data: making $raw (nn-synth ${synth[*]})" >&2
    target/release/nn-synth -o "$raw" "${synth[@]}" > /dev/null
    target/release/nn-fingerprint -q "$raw" -o "$dir/dataset_fingerprint.json"
    target/release/nn-plan -q --fingerprint "$dir/dataset_fingerprint.json" --dataset "$raw" -o "$dir/nnUNetPlans.json"
    echo "nn-synth ${synth[*]}" > "$dir/made_by"
fi
echo "$raw"
