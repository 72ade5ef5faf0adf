#!/usr/bin/env bash
# Seconds per training iteration of 3d_fullres on CPU (data loading included): nn-train in fp32 and with
# --precision bf16 against nnU-Net v2.8.1's own training loop (../shared/bench/nnunet_steps.py), in the
# same run, with peak memory: the largest process's peak RSS and the peak PSS summed over the process
# tree (scripts/measure.sh; nnU-Net's loader processes included), of the longer run of each side.
# - Dataset004 (batch 9, patch 40x56x40), with and without augmentation, and one augmented batch ours vs
#   nnU-Net's get_training_transforms.
# - With BRAIN=1 (or BRAIN=only, without the Dataset004 rows), the brain-sized set of
#   scripts/bench-data.sh (20 cases of ~171^3, nn-plan's plans for both sides: patch 128^3, batch 2).
#   At ~80 s per nnU-Net iteration it takes about 15 minutes (BRAIN_ITERATIONS=1).
# Usage: scripts/bench-train.sh [--install] [ITERATIONS]   (default 5; BRAIN_ITERATIONS default 1)
# nn-train's per-iteration time is the difference of two one-epoch runs of 1 and 1+ITERATIONS iterations,
# so start-up, the first iteration's warm-up, validation and plotting cancel. nnU-Net's is its script's
# mean over ITERATIONS iterations on Dataset004 (first one included, as recorded before), and on the
# brain-sized set the same difference of two runs (1 and 1+BRAIN_ITERATIONS iterations) as ours.
# nnU-Net is taken from NNUNET_VENV (default .bench-venv; --install creates it with
# scripts/install-nnunet.sh). Without it, nnU-Net's recorded 8.88 s per iteration on Dataset004 is used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=${NNUNET_VENV:-.bench-venv}
if [[ ${1:-} == --install ]]; then scripts/install-nnunet.sh "$venv"; shift; fi
iterations=${1:-5} brain=${BRAIN:-0} brain_iterations=${BRAIN_ITERATIONS:-1}
shared=$(realpath ../shared)
dataset=Dataset004_Hippocampus
scripts/setup.sh
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
source scripts/measure.sh
source scripts/nnunet-env.sh
have_nnunet=0
if [[ -x $venv/bin/nnUNetv2_preprocess ]]; then have_nnunet=1; fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# epoch PLANS DATA DATASET_JSON ITERATIONS FLAGS...: one nn-train epoch of ITERATIONS iterations and one
# validation iteration (--fold all: a cross-validation fold would end by predicting its validation cases);
# prints "EPOCH_SECONDS SECONDS MAX_RSS_KB PEAK_PSS_KB"
epoch() {
    local plans=$1 data=$2 dataset_json=$3 n=$4 measured
    shift 4
    rm -rf "$scratch/run"
    measured=$(measure_once "$scratch/train.log" target/release/nn-train -q --plans "$plans" -c 3d_fullres \
        --data "$data" --dataset "$dataset_json" --fold all -o "$scratch/run" --epochs 1 --iters "$n" --val-iters 1 \
        --device cpu "$@")
    echo "$(python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['epoch_time_s'])" \
        "$scratch/run/fold_all/log.jsonl") $measured"
}
# per_iteration K PLANS DATA DATASET_JSON FLAGS...: "SECONDS_PER_ITERATION S RSS PSS", the memory of the
# longer run
per_iteration() {
    local k=$1 short long
    shift
    short=$(epoch "$1" "$2" "$3" 1 "${@:4}")
    long=$(epoch "$1" "$2" "$3" $((k + 1)) "${@:4}")
    python3 -c "import sys; s, l = sys.argv[1].split(), sys.argv[2].split(); print(f'{(float(l[0]) - float(s[0])) / $k:.3f}', *l[1:])" \
        "$short" "$long"
}
# nnunet_steps ID N: nnU-Net's loop for N iterations; prints "SECONDS_PER_ITERATION S RSS PSS". Unbuffered,
# since it leaves by os._exit; its loader workers outlive that, and bench-pss.py ends them.
nnunet_steps() {
    local measured
    measured=$(measure_once "$scratch/steps.log" env PYTHONUNBUFFERED=1 "$venv/bin/python3" "$shared/bench/nnunet_steps.py" \
        "$1" 3d_fullres "$2")
    echo "$(grep -E '^[0-9]+\.[0-9]+$' "$scratch/steps.log" | tail -n 1) $measured"
}
# iteration_row LABEL "SECONDS_PER_ITERATION S RSS PSS"
iteration_row() {
    python3 - "$@" <<'PY'
import sys
label, (per_iteration, _, rss, pss) = sys.argv[1], sys.argv[2].split()
mb = lambda kb: "   n/a" if kb == "-" else f"{int(kb) / 1024:6.0f}"
print(f"{label:52} {float(per_iteration):8.3f} s per iteration  peak RSS {mb(rss)} MB  peak PSS (tree) {mb(pss)} MB")
PY
}

if [[ $brain != only ]]; then
    plans=$shared/reference/$dataset/nnUNetPlans.json
    dataset_json=$shared/data/$dataset/dataset.json
    target/release/nn-resample -q --plans "$plans" -c 3d_fullres -i "$shared/data/$dataset" -o "$scratch/pre"
    ours=$(per_iteration "$iterations" "$plans" "$scratch/pre" "$dataset_json")
    iteration_row "[$dataset] nn-train (nnU-Net's augmentation)" "$ours"
    bf16=$(per_iteration "$iterations" "$plans" "$scratch/pre" "$dataset_json" --precision bf16)
    iteration_row "[$dataset] nn-train --precision bf16" "$bf16"
    plain=$(per_iteration "$iterations" "$plans" "$scratch/pre" "$dataset_json" --augment none)
    iteration_row "[$dataset] nn-train --augment none" "$plain"
    # one augmented batch (9 x 1 x 73x80x64 -> 40x56x40) on its own
    augment_ms=$(cargo test --release -q -p nntools-augmentation hippocampus_batch_time -- --ignored --nocapture \
        | sed -n 's/.*: \([0-9.]*\) ms per batch drawn.*/\1/p')
    echo "[$dataset] nn-train augmentation: $augment_ms ms per batch of 9"

    if [[ $have_nnunet == 1 ]]; then
        nnunet_preprocess "$venv" "$scratch" "$dataset" "$plans"
        theirs=$(nnunet_steps 4 "$iterations")
        iteration_row "[$dataset] nnU-Net v2.8.1" "$theirs"
        # nnU-Net's own training transforms on a batch of the same size, sample by sample as its loader does
        "$venv/bin/python3" - <<'PY'
import math, time, torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
torch.set_num_threads(2)
angle = 30 / 360 * 2 * math.pi
transforms = nnUNetTrainer.get_training_transforms(
    (40, 56, 40), (-angle, angle), None, (0, 1, 2), False, use_mask_for_norm=[False], foreground_labels=[1, 2])
image, seg = torch.randn(1, 73, 80, 64), torch.randint(0, 3, (1, 73, 80, 64), dtype=torch.int16)
start = time.perf_counter()
for _ in range(5):
    for _ in range(9):
        transforms(image=image.clone(), segmentation=seg.clone())
print(f"[Dataset004_Hippocampus] nnU-Net v2.8.1 augmentation: {(time.perf_counter() - start) / 5 * 1000:.1f} ms per batch of 9")
PY
    else
        theirs="8.88 - - -"
        echo "nnU-Net not installed (run with --install); using its recorded 8.88 s per iteration"
    fi
    python3 - "$ours" "$bf16" "$theirs" "$augment_ms" <<'PY'
import sys
ours, bf16, theirs = (float(a.split()[0]) for a in sys.argv[1:4])
print(f"[Dataset004_Hippocampus] ratio nn-tools / nnU-Net: fp32 {ours / theirs:.3f}, bf16 {bf16 / theirs:.3f}; "
      f"bf16 speed-up over fp32 {ours / bf16:.2f}x; augmentation share of our iteration: {float(sys.argv[4]) / 1000 / ours:.3f}")
PY
fi

if [[ $brain != 0 ]]; then
    raw=$(scripts/bench-data.sh brain)
    plans=$(dirname "$raw")/nnUNetPlans.json
    name=$(basename "$raw")
    python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['configurations']['3d_fullres']; print(f'[$name] 3d_fullres patch {c[\"patch_size\"]}, batch {c[\"batch_size\"]} (nn-plan)')" "$plans"
    target/release/nn-resample -q -j 2 --plans "$plans" -c 3d_fullres -i "$raw" -o "$scratch/brain_pre"
    ours=$(per_iteration "$brain_iterations" "$plans" "$scratch/brain_pre" "$raw/dataset.json")
    iteration_row "[$name] nn-train" "$ours"
    bf16=$(per_iteration "$brain_iterations" "$plans" "$scratch/brain_pre" "$raw/dataset.json" --precision bf16)
    iteration_row "[$name] nn-train --precision bf16" "$bf16"
    rm -rf "$scratch/brain_pre" "$scratch/run"
    if [[ $have_nnunet == 1 ]]; then
        nnunet_preprocess "$venv" "$scratch/brain_nnunet" "$raw" "$plans"
        short=$(nnunet_steps "$((10#${name:7:3}))" 1)
        long=$(nnunet_steps "$((10#${name:7:3}))" $((brain_iterations + 1)))
        # its script prints the mean over the iterations: the total of the longer run less the shorter's
        theirs=$(python3 -c "import sys; s, l = sys.argv[1].split(), sys.argv[2].split(); print(f'{((1 + $brain_iterations) * float(l[0]) - float(s[0])) / $brain_iterations:.3f}', *l[1:])" "$short" "$long")
        iteration_row "[$name] nnU-Net v2.8.1" "$theirs"
        python3 - "$ours" "$bf16" "$theirs" <<PY
import sys
ours, bf16, theirs = (a.split() for a in sys.argv[1:4])
print(f"[$name] ratio nn-tools / nnU-Net: time per iteration fp32 {float(ours[0]) / float(theirs[0]):.3f}, "
      f"bf16 {float(bf16[0]) / float(theirs[0]):.3f}; peak PSS (tree) fp32 {int(ours[3]) / int(theirs[3]):.3f}, "
      f"bf16 {int(bf16[3]) / int(theirs[3]):.3f}; peak RSS fp32 {int(ours[2]) / int(theirs[2]):.3f}; "
      f"bf16 speed-up over fp32 {float(ours[0]) / float(bf16[0]):.2f}x")
PY
    else
        echo "[$name] nnU-Net not installed (run with --install): no comparison"
    fi
fi
