//! The pipeline's work folder, as scripts/nnunet.sh, scripts/Makefile and the Slurm script lay it out:
//!
//! ```text
//! WORK/dataset_fingerprint.json, plans.json     nn-fingerprint, nn-plan
//! WORK/preprocessed/CONFIG/                     nn-resample
//! WORK/runs/CONFIG/                             nn-train (a run folder)
//! WORK/inference_plan.json                      nn-ensemble select
//! WORK/predictions_raw/, predictions/           nn-infer, then nn-ensemble postprocess
//! WORK/.stamps/STAGE                            when a stage last ran
//! ```
//!
//! Which configuration trains on which preprocessed folder is a rule of the pipeline, not of the
//! layout: nntools_planning::stages decides it.

use crate::preprocessed::PreprocessedDir;
use crate::run::RunDir;
use std::path::{Path, PathBuf};

/// A work folder: `WORK/plans.json`, `WORK/preprocessed/CONFIG`, `WORK/runs/CONFIG`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work(pub PathBuf);

impl Work {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn fingerprint(&self) -> PathBuf {
        self.0.join(crate::DATASET_FINGERPRINT_JSON)
    }

    pub fn plans(&self) -> PathBuf {
        self.0.join(crate::PLANS_JSON)
    }

    /// The preprocessed folder nn-resample writes for the configuration `data_configuration`.
    pub fn preprocessed(&self, data_configuration: &str) -> PreprocessedDir {
        PreprocessedDir::new(self.0.join("preprocessed").join(data_configuration))
    }

    /// The run folder of `configuration`'s folds.
    pub fn run(&self, configuration: &str) -> RunDir {
        RunDir::new(self.0.join("runs").join(configuration))
    }

    pub fn inference_plan(&self) -> PathBuf {
        self.0.join("inference_plan.json")
    }

    /// nn-infer's predictions of the test images, before postprocessing.
    pub fn predictions_raw(&self) -> PathBuf {
        self.0.join("predictions_raw")
    }

    /// The test images' predictions after the inference plan's postprocessing.
    pub fn predictions(&self) -> PathBuf {
        self.0.join("predictions")
    }

    /// `.stamps/STAGE`: touched when a stage last ran, for stages whose output keeps its mtime when
    /// its content comes out the same.
    pub fn stamp(&self, stage: &str) -> PathBuf {
        self.0.join(".stamps").join(stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_layout() {
        let work = Work::new("w");
        assert_eq!(work.plans(), Path::new("w/plans.json"));
        assert_eq!(work.fingerprint(), Path::new("w/dataset_fingerprint.json"));
        assert_eq!(work.preprocessed("3d_fullres").manifest(), Path::new("w/preprocessed/3d_fullres/manifest.json"));
        assert_eq!(work.run("2d").path(), Path::new("w/runs/2d"));
        assert_eq!(work.inference_plan(), Path::new("w/inference_plan.json"));
        assert_eq!(work.predictions_raw(), Path::new("w/predictions_raw"));
        assert_eq!(work.predictions(), Path::new("w/predictions"));
        assert_eq!(work.stamp("predict"), Path::new("w/.stamps/predict"));
    }
}
