#!/usr/bin/env bash
# Wall time and peak memory to predict the 16 reference images (../shared/reference/infer) with the
# reference nnU-Net model on CPU, with and without mirroring TTA: nn-infer in fp32 (--precision auto, which
# is fp32 on CPU as in nnU-Net) and with --precision bf16, against nnU-Net v2.8.1's
# nnUNetv2_predict_from_modelfolder in the same run. Memory is the largest process's peak RSS and the
# peak PSS summed over the process tree (scripts/measure.sh; nnU-Net's export workers included).
# Then, for each of TTA / no TTA: the voxel agreement of our bf16 labels with our fp32 labels (all voxels
# and the worst case; scripts/bench-agreement.py), and the foreground mean Dice of each against nnU-Net's
# shared predictions (reference/infer/pred_tta, pred_notta; nn-eval --no-surface).
# Usage: scripts/bench-infer.sh [--install]   (runs=N: median of N runs each, default 1;
# BENCH_INFER_CASES=N: only the first N images, to rehearse)
# nnU-Net is taken from NNUNET_VENV (default .bench-venv; --install creates it with
# scripts/install-nnunet.sh). Without it, nnU-Net's recorded figures are used (84.8 s with TTA, 20.8 s
# without, 1.13 GB peak RSS, measured on the 2-core development machine).
# A brain-sized row is left out: the 128^3 patch network needs ~7.9 s per patch in fp32 on 2 cores, so
# two cases of the brain-sized set (8-16 patches each, without TTA) in fp32, bf16 and nnU-Net, plus a
# one-iteration model, take well over 5 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/measure.sh
venv=${NNUNET_VENV:-.bench-venv}
if [[ ${1:-} == --install ]]; then scripts/install-nnunet.sh "$venv"; shift; fi
reference=$(realpath ../shared/reference/infer)
scripts/setup.sh
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
runs=${runs:-1}
images=$reference/images chill=()
if [[ -n ${BENCH_INFER_CASES:-} ]]; then
    mkdir "$scratch/images"
    find "$reference/images" -name '*.nii.gz' | sort | head -n "$BENCH_INFER_CASES" | xargs -I{} ln -s {} "$scratch/images/"
    images=$scratch/images chill=(--chill)
fi

# ours OUTPUT_NAME FLAGS...: nn-infer into $scratch/OUTPUT_NAME
ours() {
    measure target/release/nn-infer -q --device cpu -m "$reference/model" -i "$images" -o "$scratch/$1" "${@:2}"
}
ours_tta=$(ours fp32_tta)
ours_plain=$(ours fp32_notta --no-tta)
bf16=0
if target/release/nn-infer --help | grep -q -- '--precision'; then
    bf16=1
    bf16_tta=$(ours bf16_tta --precision bf16)
    bf16_plain=$(ours bf16_notta --precision bf16 --no-tta)
else
    echo "nn-infer has no --precision yet: no bf16 rows"
fi

if [[ -x $venv/bin/nnUNetv2_predict_from_modelfolder ]]; then
    # nnU-Net reads a .pth checkpoint: rebuild one from the safetensors weights and the sidecar
    cp -r "$reference/model" "$scratch/model"
    "$venv/bin/python3" - "$scratch/model/fold_0" <<'PY'
import json, sys, torch
from safetensors.torch import load_file
fold = sys.argv[1]
info = json.load(open(f"{fold}/checkpoint_final.json"))
weights = load_file(f"{fold}/checkpoint_final.safetensors")
# a full state_dict also holds every tensor under its alias keys
for key, value in list(weights.items()):
    for part, index in ((".conv.", 0), (".norm.", 1)):
        if ".convs." in key and part in key:
            weights[key.replace(part, f".all_modules.{index}.")] = value
for key, value in list(weights.items()):
    if key.startswith("encoder."):
        weights["decoder." + key] = value
torch.save({"network_weights": weights,
            "trainer_name": info["trainer_name"],
            "init_args": {"configuration": info["configuration"]},
            "inference_allowed_mirroring_axes": tuple(info["inference_allowed_mirroring_axes"])},
           f"{fold}/checkpoint_final.pth")
PY
    theirs() {
        measure env nnUNet_raw="$scratch" nnUNet_preprocessed="$scratch" nnUNet_results="$scratch" \
            "$venv/bin/nnUNetv2_predict_from_modelfolder" -m "$scratch/model" -f 0 -device cpu \
            -i "$images" -o "$scratch/theirs" --disable_progress_bar "$@"
    }
    theirs_tta=$(theirs)
    theirs_plain=$(theirs --disable_tta)
else
    echo "nnU-Net not installed (run with --install); using its recorded figures"
    theirs_tta="84.8 1130000 -" theirs_plain="20.8 1130000 -"
fi

# foreground mean Dice of a folder of our labels against nnU-Net's shared predictions
dice() {
    target/release/nn-eval --no-surface "${chill[@]}" --ref "$reference/$2" --pred "$scratch/$1" \
        --dataset "$reference/model/dataset.json" -o - \
        | python3 -c "import json, sys; print(f\"{json.load(sys.stdin)['foreground_mean']['Dice']:.4f}\")"
}
for mode in tta notta; do
    if [[ $mode == tta ]]; then
        label="with TTA" fp32=$ours_tta bf16_row=${bf16_tta:-} theirs=$theirs_tta
    else
        label="without TTA" fp32=$ours_plain bf16_row=${bf16_plain:-} theirs=$theirs_plain
    fi
    row "[$label] nn-infer (fp32)" "$fp32"
    if [[ $bf16 == 1 ]]; then row "[$label] nn-infer --precision bf16" "$bf16_row"; fi
    row "[$label] nnUNetv2_predict_from_modelfolder" "$theirs"
    ratio "[$label, fp32]" "$fp32" "$theirs"
    if [[ $bf16 == 1 ]]; then ratio "[$label, bf16]" "$bf16_row" "$theirs"; fi
    fp32_dice=$(dice "fp32_$mode" "pred_$mode")
    if [[ $bf16 == 1 ]]; then
        python3 scripts/bench-agreement.py "[$label] bf16 vs fp32 (ours)" "$scratch/fp32_$mode" "$scratch/bf16_$mode"
        bf16_dice=$(dice "bf16_$mode" "pred_$mode")
        python3 -c "print(f'[$label] mean Dice against nnU-Net pred_$mode: fp32 $fp32_dice, bf16 $bf16_dice, change {$bf16_dice - $fp32_dice:+.4f}')"
    else
        echo "[$label] mean Dice against nnU-Net pred_$mode: fp32 $fp32_dice"
    fi
done
