//! A folder of predictions (nn-infer's output, a fold's `validation/`) and the `dataset.json` that
//! says what its labels mean.

use crate::DATASET_JSON;
use std::path::{Path, PathBuf};

/// The `dataset.json` describing a prediction folder: its own (nn-infer and nn-ensemble write one), or
/// that of the run folder two levels up for a training run's `fold_F/validation`. None if neither exists.
pub fn dataset_json_of(folder: &Path) -> Option<PathBuf> {
    [folder.join(DATASET_JSON), folder.join("../..").join(DATASET_JSON)].into_iter().find(|p| p.is_file())
}

/// The `dataset.json` beside a raw dataset's `labelsTr` (or `imagesTr`): the reference folder's parent.
pub fn raw_dataset_json_of(reference: &Path) -> PathBuf {
    reference.join("..").join(DATASET_JSON)
}
