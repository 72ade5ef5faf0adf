//! A folder of predictions (nn-infer's output, a fold's `validation/`) and the `dataset.json` that
//! says what its labels mean.

use crate::DATASET_JSON;
use std::path::{Path, PathBuf};

/// The extension of a case's probabilities in a prediction folder (`CASE.npz`, key `probabilities`).
pub const PROBABILITIES_EXTENSION: &str = "npz";

/// `CASE<ending>`: a case's label map, in the dataset's file ending.
pub fn label_map(folder: &Path, id: &str, ending: &str) -> PathBuf {
    folder.join(format!("{id}{ending}"))
}

/// A case's label map as found in `folder`: `CASE<ending>`, or where there is none, the case's label map
/// in another image format (nn-infer writes each prediction in its input's format); `CASE<ending>` when
/// there is none at all.
pub fn existing_label_map(folder: &Path, id: &str, ending: &str) -> PathBuf {
    let same = label_map(folder, id, ending);
    if same.is_file() {
        return same;
    }
    nntools_io::IMAGE_ENDINGS.iter().map(|e| label_map(folder, id, e)).find(|p| p.is_file()).unwrap_or(same)
}

/// `CASE.npz`: a case's class probabilities, float32, classes first (nn-infer --save-probabilities).
pub fn probabilities(folder: &Path, id: &str) -> PathBuf {
    folder.join(format!("{id}.{PROBABILITIES_EXTENSION}"))
}

/// `CASE.json`: the preprocessing properties saved with a case's probabilities, which export needs.
pub fn properties(folder: &Path, id: &str) -> PathBuf {
    folder.join(format!("{id}.json"))
}

/// `CASE.made_by.json`: what made a case's prediction (nn-infer writes it after the case's outputs, and
/// `--continue` compares it).
pub fn made_by(folder: &Path, id: &str) -> PathBuf {
    folder.join(format!("{id}.made_by.json"))
}

/// The case of a probabilities file name (`CASE.npz` -> `CASE`).
pub fn case_of_probabilities(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(PROBABILITIES_EXTENSION)?.strip_suffix('.')
}

/// The `dataset.json` describing a prediction folder: its own (nn-infer and nn-ensemble write one), or
/// that of the run folder two levels up for a training run's `fold_F/validation`. None if neither exists.
pub fn dataset_json_of(folder: &Path) -> Option<PathBuf> {
    [folder.join(DATASET_JSON), folder.join("../..").join(DATASET_JSON)].into_iter().find(|p| p.is_file())
}

/// The `dataset.json` beside a raw dataset's `labelsTr` (or `imagesTr`): the reference folder's parent.
pub fn raw_dataset_json_of(reference: &Path) -> PathBuf {
    reference.join("..").join(DATASET_JSON)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Fold, RunDir};

    #[test]
    fn a_folder_s_own_dataset_json_comes_before_its_run_s() {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir::new(root.path().join("run"));
        let validation = run.fold(Fold::Index(0)).validation();
        std::fs::create_dir_all(&validation).unwrap();
        assert_eq!(dataset_json_of(&validation), None);
        std::fs::write(run.dataset_json(), "{}").unwrap();
        assert_eq!(dataset_json_of(&validation), Some(validation.join("../../dataset.json")));
        std::fs::write(validation.join("dataset.json"), "{}").unwrap();
        assert_eq!(dataset_json_of(&validation), Some(validation.join("dataset.json")));
    }

    #[test]
    fn case_files_are_named_as_nnunet_names_them() {
        let folder = Path::new("pred");
        assert_eq!(label_map(folder, "hippocampus_017", ".nii.gz"), Path::new("pred/hippocampus_017.nii.gz"));
        assert_eq!(probabilities(folder, "hippocampus_017"), Path::new("pred/hippocampus_017.npz"));
        assert_eq!(properties(folder, "hippocampus_017"), Path::new("pred/hippocampus_017.json"));
        assert_eq!(case_of_probabilities("case.v2.npz"), Some("case.v2"));
        assert_eq!(case_of_probabilities("case.json"), None);
        assert_eq!(case_of_probabilities("casenpz"), None);
    }

    #[test]
    fn a_raw_dataset_s_dataset_json_is_beside_its_labels() {
        let labels = Path::new("raw/Dataset004_Hippocampus/labelsTr");
        assert_eq!(raw_dataset_json_of(labels), Path::new("raw/Dataset004_Hippocampus/labelsTr/../dataset.json"));
    }
}
