# Sourced by the benchmarks that run nnU-Net v2.8.1's own trainer.
# nnunet_preprocess VENV SCRATCH DATASET PLANS: lays out nnU-Net's raw, preprocessed and results folders
# in SCRATCH for ../shared's DATASET (Dataset004_Hippocampus, say), with PLANS as its nnUNetPlans.json
# and the reference fingerprint and splits, exports nnUNet_* for them (two loader and export
# processes, for two cores), and preprocesses 3d_fullres with nnUNetv2_preprocess.
nnunet_preprocess() {
    local venv=$1 scratch=$2 dataset=$3 plans=$4 shared
    shared=$(realpath ../shared)
    mkdir -p "$scratch/raw" "$scratch/nnpre/$dataset" "$scratch/res"
    ln -s "$shared/data/$dataset" "$scratch/raw/$dataset"
    cp "$shared/reference/$dataset/"{dataset_fingerprint.json,splits_final.json} "$shared/data/$dataset/dataset.json" "$scratch/nnpre/$dataset/"
    cp "$plans" "$scratch/nnpre/$dataset/nnUNetPlans.json"
    export nnUNet_raw="$scratch/raw" nnUNet_preprocessed="$scratch/nnpre" nnUNet_results="$scratch/res" nnUNet_n_proc_DA=2 nnUNet_def_n_proc=2
    local id=${dataset#Dataset}
    "$venv/bin/nnUNetv2_preprocess" -d "$((10#${id%%_*}))" -c 3d_fullres -np 2 > /dev/null 2>&1
}
