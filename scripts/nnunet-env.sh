# Sourced by the benchmarks that run nnU-Net v2.8.1's own trainer.
# nnunet_preprocess VENV SCRATCH DATASET PLANS: lays out nnU-Net's raw, preprocessed and results folders
# in SCRATCH for DATASET, with PLANS as its nnUNetPlans.json, exports nnUNet_* for them (two loader and
# export processes, for two cores), and preprocesses 3d_fullres with nnUNetv2_preprocess. DATASET is
# one of ../shared's (Dataset004_Hippocampus, say; the reference fingerprint and splits are used) or
# the path of a raw dataset folder whose parent holds its dataset_fingerprint.json (scripts/bench-data.sh's
# layout; nnU-Net makes its own splits, which needs at least 5 cases).
nnunet_preprocess() {
    local venv=$1 scratch=$2 dataset=$3 plans=$4 raw reference
    if [[ $dataset == */* ]]; then
        raw=$(realpath "$dataset")
        reference=$(dirname "$raw") dataset=$(basename "$raw")
    else
        raw=$(realpath ../shared/data/$dataset) reference=$(realpath ../shared/reference/$dataset)
    fi
    mkdir -p "$scratch/raw" "$scratch/nnpre/$dataset" "$scratch/res"
    ln -s "$raw" "$scratch/raw/$dataset"
    cp "$reference/dataset_fingerprint.json" "$raw/dataset.json" "$scratch/nnpre/$dataset/"
    if [[ -f $reference/splits_final.json ]]; then cp "$reference/splits_final.json" "$scratch/nnpre/$dataset/"; fi
    cp "$plans" "$scratch/nnpre/$dataset/nnUNetPlans.json"
    export nnUNet_raw="$scratch/raw" nnUNet_preprocessed="$scratch/nnpre" nnUNet_results="$scratch/res" nnUNet_n_proc_DA=2 nnUNet_def_n_proc=2
    local id=${dataset#Dataset}
    "$venv/bin/nnUNetv2_preprocess" -d "$((10#${id%%_*}))" -c 3d_fullres -np 2 > /dev/null 2>&1
}
