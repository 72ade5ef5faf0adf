//! A training run folder, laid out as nnU-Net's trainer lays out its output folder
//! (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: `output_folder_base`, `output_folder`).

use std::fmt;
use std::path::{Path, PathBuf};

/// Which cases a fold trains on: one cross-validation fold, or all cases (nnU-Net's `fold_all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    Index(usize),
    All,
}

impl fmt::Display for Fold {
    /// The name nnU-Net gives the fold's folder: `fold_3`, `fold_all`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fold::Index(i) => write!(f, "fold_{i}"),
            Fold::All => f.write_str("fold_all"),
        }
    }
}

/// The checkpoints nn-train writes, as nnU-Net names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    Best,
    Latest,
    Final,
}

impl Checkpoint {
    pub fn name(self) -> &'static str {
        match self {
            Checkpoint::Best => "best",
            Checkpoint::Latest => "latest",
            Checkpoint::Final => "final",
        }
    }
}

/// A run folder: `RUN/plans.json`, `RUN/dataset.json`, `RUN/fold_F/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn plans(&self) -> PathBuf {
        self.0.join(crate::PLANS_JSON)
    }

    pub fn dataset_json(&self) -> PathBuf {
        self.0.join(crate::DATASET_JSON)
    }

    pub fn fold(&self, fold: Fold) -> FoldDir {
        FoldDir(self.0.join(fold.to_string()))
    }

    /// Where a configuration with a next stage writes that stage's labels, as nnU-Net does:
    /// `RUN/predicted_next_stage/NEXT` (nnUNetTrainer.perform_actual_validation).
    pub fn next_stage_output(&self, next_stage: &str) -> PathBuf {
        self.0.join("predicted_next_stage").join(next_stage)
    }
}

/// The file in a next-stage output folder that marks fold `fold`'s labels complete (written after
/// them, removed while they are redone), so that scripts can tell a fold validated for the next stage.
pub fn next_stage_mark(next_stage_output: &Path, fold: usize) -> PathBuf {
    next_stage_output.join(format!("{}.json", Fold::Index(fold)))
}

/// One fold's folder: settings, log, curves, checkpoints and validation predictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldDir(pub PathBuf);

impl FoldDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn settings(&self) -> PathBuf {
        self.0.join("settings.json")
    }

    pub fn log(&self) -> PathBuf {
        self.0.join("log.jsonl")
    }

    pub fn progress_plot(&self) -> PathBuf {
        self.0.join("progress.png")
    }

    /// `checkpoint_NAME.safetensors`: the weights, with nnU-Net's state_dict names.
    pub fn weights(&self, checkpoint: &str) -> PathBuf {
        self.0.join(format!("checkpoint_{checkpoint}.safetensors"))
    }

    /// `checkpoint_NAME.momentum.safetensors`: SGD's momentum buffers.
    pub fn momentum(&self, checkpoint: &str) -> PathBuf {
        self.0.join(format!("checkpoint_{checkpoint}.momentum.safetensors"))
    }

    /// `checkpoint_NAME.json`: the sidecar (epoch, EMA, configuration, mirroring axes), written last.
    pub fn sidecar(&self, checkpoint: &str) -> PathBuf {
        self.0.join(format!("checkpoint_{checkpoint}.json"))
    }

    /// `validation/`: the fold's validation cases predicted with its final checkpoint.
    pub fn validation(&self) -> PathBuf {
        self.0.join("validation")
    }

    /// `augmented/`: the augmented samples `nn-train --dump-augmented` previews.
    pub fn augmented(&self) -> PathBuf {
        self.0.join("augmented")
    }
}
