#!/usr/bin/env bash
# Wall time and peak RSS to predict the 16 reference images (../shared/reference/infer) with the
# reference nnU-Net model on CPU, with and without mirroring TTA: nn-infer against nnU-Net v2.8.1's
# nnUNetv2_predict_from_modelfolder in the same run. Usage: scripts/bench-infer.sh [--install]
# nnU-Net is taken from NNUNET_VENV (default .bench-venv; --install creates it with
# scripts/install-nnunet.sh). Without it, nnU-Net's recorded figures are used (84.8 s with TTA, 20.8 s
# without, 1.13 GB peak RSS, measured on the 2-core development machine).
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

ours() { measure target/release/nn-infer -q --device cpu -m "$reference/model" -i "$reference/images" -o "$scratch/ours" "$@"; }
read -r ours_tta ours_tta_kb <<< "$(ours)"
read -r ours_plain ours_plain_kb <<< "$(ours --no-tta)"

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
            -i "$reference/images" -o "$scratch/theirs" --disable_progress_bar "$@"
    }
    read -r theirs_tta theirs_tta_kb <<< "$(theirs)"
    read -r theirs_plain theirs_plain_kb <<< "$(theirs --disable_tta)"
else
    echo "nnU-Net not installed (run with --install); using its recorded figures"
    theirs_tta=84.8 theirs_plain=20.8 theirs_tta_kb=1130000 theirs_plain_kb=1130000
fi
python3 - "$ours_tta" "$ours_tta_kb" "$theirs_tta" "$theirs_tta_kb" "$ours_plain" "$ours_plain_kb" "$theirs_plain" "$theirs_plain_kb" <<'PY'
import sys
v = [float(x) for x in sys.argv[1:]]
for label, (ot, om, tt, tm) in (("with TTA", v[0:4]), ("without TTA", v[4:8])):
    print(f"{label:12} nn-infer {ot:6.1f} s {om/1024:6.0f} MB | nnU-Net {tt:6.1f} s {tm/1024:6.0f} MB | "
          f"time ratio {ot/tt:.3f} ({tt/ot:.2f}x faster), RSS ratio {om/tm:.3f}")
PY
