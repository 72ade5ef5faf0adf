//! Every file and folder name nn-tools reads or writes, in one place (docs/formats.md describes them):
//! a change of layout is one edit here, and no crate spells a name of another's output.
//!
//! - [`run`]: a training run folder as nn-train writes it (nnU-Net's trainer output folder:
//!   `plans.json`, `dataset.json`, `fold_F/` with checkpoints, `validation/`, `predicted_next_stage/`).
//! - [`preprocessed`]: a preprocessed folder as nn-resample writes it (`CASE.npy`, `CASE_seg.npy`, ...).
//! - [`predictions`]: a folder of predictions and the `dataset.json` that describes it.
//! - [`work`]: the pipeline's work folder of scripts/nnunet.sh, scripts/Makefile and the Slurm script.

pub mod predictions;
pub mod preprocessed;
pub mod run;
pub mod work;

/// The dataset description nnU-Net keeps beside every raw dataset, run folder and prediction folder.
pub const DATASET_JSON: &str = "dataset.json";
/// The plans a run folder or a prediction folder was made with.
pub const PLANS_JSON: &str = "plans.json";
/// The dataset fingerprint the plans were made from, beside them and in a run folder.
pub const DATASET_FINGERPRINT_JSON: &str = "dataset_fingerprint.json";
