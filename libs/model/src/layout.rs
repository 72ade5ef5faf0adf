//! Where things go in a model zip and in `nnUNet_results`: `DATASET/TRAINER__PLANS__CONFIG/...`
//! (nnunetv2/utilities/file_path_utilities.py: `get_output_folder`), with the dataset-level files
//! nnU-Net's exporter adds (nnunetv2/model_sharing/model_export.py: `export_pretrained_model`:
//! `ensembles/ENSEMBLE/...`, `inference_information.json`/`.txt`).

use std::fmt;

/// A trainer folder, `DATASET/TRAINER__PLANS__CONFIG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainerFolder {
    pub dataset: String,
    pub trainer: String,
    pub plans: String,
    pub configuration: String,
}

impl fmt::Display for TrainerFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}__{}__{}", self.dataset, self.trainer, self.plans, self.configuration)
    }
}

/// Why `name` cannot be one component of a path inside `nnUNet_results`, if it cannot.
pub fn check_component(name: &str) -> Result<(), &'static str> {
    match name {
        "" => Err("is empty"),
        "." | ".." => Err("leaves its folder (`.` or `..`)"),
        _ if name.contains('/') || name.contains('\\') || name.contains('\0') => Err("holds a path separator or NUL"),
        _ => Ok(()),
    }
}

/// What a zip entry installs: the path of the unit it belongs to (relative to the results root; the
/// unit is moved into place whole), and whether that unit is a trainer folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub components: Vec<String>,
    /// How many leading components name the unit; 1 for an entry of the dataset folder itself (a
    /// folder entry `DATASET/`, which installs nothing of its own).
    pub unit_len: usize,
    pub trainer: bool,
}

/// Where the zip entry `name` (a folder when `is_dir`) belongs, or why it does not belong in a
/// model zip: zip-slip (`..`), absolute paths, and anything outside `DATASET/TRAINER__PLANS__CONFIG/`
/// and the dataset-level files nnU-Net's exporter writes.
pub fn placement(name: &str, is_dir: bool) -> Result<Placement, String> {
    if name.starts_with('/') || name.as_bytes().get(1) == Some(&b':') {
        return Err("is an absolute path".to_owned());
    }
    if name.contains('\\') {
        return Err("holds a backslash (not a zip path separator)".to_owned());
    }
    let relative = if is_dir { name.strip_suffix('/').unwrap_or(name) } else { name };
    let components: Vec<String> = relative.split('/').map(str::to_owned).collect();
    for component in &components {
        check_component(component).map_err(|problem| format!("has a path component that {problem}"))?;
    }
    let outside = || Err("is not inside a trainer folder DATASET/TRAINER__PLANS__CONFIG/".to_owned());
    let depth = components.len();
    let (unit_len, trainer) = match components.get(1).map(String::as_str) {
        None if is_dir => (1, false),
        Some(folder) if is_trainer_folder_name(folder) && (depth > 2 || is_dir) => (2, true),
        Some("ensembles") if depth == 2 && is_dir => (1, false),
        Some("ensembles") if depth > 3 || (depth == 3 && is_dir) => (3, false),
        Some("inference_information.json" | "inference_information.txt") if depth == 2 && !is_dir => (2, false),
        _ => return outside(),
    };
    Ok(Placement { components, unit_len, trainer })
}

/// `TRAINER__PLANS__CONFIG` (nnunetv2/utilities/file_path_utilities.py: `convert_trainer_plans_config_to_identifier`).
fn is_trainer_folder_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split("__").collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAINER: &str = "Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres";

    #[test]
    fn trainer_folder_files_are_placed_in_their_trainer_folder() {
        let placed = placement(&format!("{TRAINER}/fold_0/checkpoint_final.pth"), false).unwrap();
        assert_eq!((placed.unit_len, placed.trainer, placed.components.len()), (2, true, 4));
        assert_eq!(placement(&format!("{TRAINER}/"), true).unwrap().unit_len, 2);
        assert_eq!(placement("Dataset004_Hippocampus/", true).unwrap().unit_len, 1);
        let ensemble = placement("Dataset004_Hippocampus/ensembles/ensemble___a__b__c___0_1/summary.json", false);
        assert_eq!(ensemble.map(|p| (p.unit_len, p.trainer)), Ok((3, false)));
        let information = placement("Dataset004_Hippocampus/inference_information.json", false);
        assert_eq!(information.map(|p| (p.unit_len, p.trainer)), Ok((2, false)));
        // the dataset folder's name is plans.json's dataset_name, whatever it is (nnU-Net's own
        // installer and nnUNetv2_predict_from_modelfolder do not require DatasetXXX_NAME)
        assert_eq!(placement("Hippo/T__P__C/fold_0/checkpoint_final.pth", false).map(|p| p.trainer), Ok(true));
    }

    #[test]
    fn hostile_and_stray_names_are_refused() {
        for (name, is_dir, problem) in [
            ("../x", false, "leaves its folder"),
            (&format!("{TRAINER}/../../../x") as &str, false, "leaves its folder"),
            ("/etc/passwd", false, "absolute path"),
            ("C:/x", false, "absolute path"),
            (&format!("{TRAINER}\\x"), false, "backslash"),
            (&format!("{TRAINER}//x"), false, "is empty"),
            ("Dataset004_Hippocampus/notes.txt", false, "not inside a trainer folder"),
            ("Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans", true, "not inside a trainer folder"),
            (TRAINER, false, "not inside a trainer folder"),
            ("__MACOSX/x", false, "not inside a trainer folder"),
            ("__MACOSX/Dataset004_Hippocampus/a__b__c/x", false, "not inside a trainer folder"),
            ("README", false, "not inside a trainer folder"),
        ] {
            let refused = placement(name, is_dir).unwrap_err();
            assert!(refused.contains(problem), "{name}: {refused}");
        }
    }

    #[test]
    fn trainer_folders_print_as_nnunet_names_them() {
        let folder = TrainerFolder {
            dataset: "Dataset004_Hippocampus".into(),
            trainer: "nnUNetTrainer".into(),
            plans: "nnUNetPlans".into(),
            configuration: "3d_fullres".into(),
        };
        assert_eq!(folder.to_string(), TRAINER);
        assert!(check_component("a/b").is_err() && check_component("..").is_err() && check_component("x").is_ok());
    }
}
