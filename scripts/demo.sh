#!/usr/bin/env bash
# Sets up if needed, then runs the pipeline on a synthetic dataset (seeded, so every run gives the
# same result): generate a raw dataset, check it, write its fingerprint, plan the experiment,
# preprocess every configuration, and train 3d_fullres fold 0 for a few short epochs.
# Usage: scripts/demo.sh [WORK_DIR]   (default: demo-out)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
work=${1:-demo-out}
bin=target/release
raw="$work/raw/Dataset900_Synth"
pre="$work/preprocessed/Dataset900_Synth"
mkdir -p "$pre"

echo "== nn-synth: 12 labelled + 4 test cases, 2 channels, 3 labels, anisotropic spacings -> $raw"
"$bin/nn-synth" -o "$raw" --cases 12 --test-cases 4 --channels 2 --labels 3 --seed 42 --force

echo "== nn-fingerprint -> $pre/dataset_fingerprint.json"
"$bin/nn-fingerprint" "$raw" -o "$pre/dataset_fingerprint.json"

echo "== nn-plan -> $pre/nnUNetPlans.json"
"$bin/nn-plan" --fingerprint "$pre/dataset_fingerprint.json" --dataset "$raw" -o "$pre/nnUNetPlans.json"

for configuration in $(python3 -c "import json,sys; print(' '.join(c for c, v in json.load(open(sys.argv[1]))['configurations'].items() if 'inherits_from' not in v))" "$pre/nnUNetPlans.json"); do
    echo "== nn-resample -c $configuration -> $pre/nnUNetPlans_$configuration"
    "$bin/nn-resample" --plans "$pre/nnUNetPlans.json" -c "$configuration" -i "$raw" -o "$pre/nnUNetPlans_$configuration"
done

echo "== nn-train 3d_fullres fold 0, 5 short epochs -> $work/runs/3d_fullres"
"$bin/nn-train" --plans "$pre/nnUNetPlans.json" -c 3d_fullres --data "$pre/nnUNetPlans_3d_fullres" \
    --dataset "$raw/dataset.json" --fold 0 -o "$work/runs/3d_fullres" --epochs 5 --iters 20 --val-iters 5

python3 - "$pre/dataset_fingerprint.json" "$pre/nnUNetPlans.json" <<'PY'
import json, statistics, sys
f = json.load(open(sys.argv[1]))
print(f"   {len(f['spacings'])} cases; median spacing (z, y, x):",
      [round(statistics.median(s[i] for s in f['spacings']), 3) for i in range(3)])
print("   median relative size after crop:", round(f["median_relative_size_after_cropping"], 3))
for channel, stats in f["foreground_intensity_properties_per_channel"].items():
    print(f"   channel {channel} foreground: mean {stats['mean']:.1f}, std {stats['std']:.1f}, "
          f"0.5-99.5% [{stats['percentile_00_5']:.1f}, {stats['percentile_99_5']:.1f}]")
plans = json.load(open(sys.argv[2]))
print("   transpose_forward:", plans["transpose_forward"])
for name, c in plans["configurations"].items():
    if "patch_size" in c:
        print(f"   {name}: patch {c['patch_size']}, batch {c['batch_size']}, spacing "
              f"{[round(s, 3) for s in c['spacing']]}, {c['architecture']['arch_kwargs']['n_stages']} stages")
PY
