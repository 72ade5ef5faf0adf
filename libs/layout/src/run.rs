//! A training run folder, laid out as nnU-Net's trainer lays out its output folder
//! (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: `output_folder_base`, `output_folder`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Which cases a fold trains on: one cross-validation fold, or all cases (nnU-Net's `fold_all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    Index(usize),
    All,
}

/// The prefix of a fold's folder name (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py:
/// `self.output_folder = join(self.output_folder_base, f'fold_{fold}')`).
const FOLD_PREFIX: &str = "fold_";

impl Fold {
    /// The fold a folder name denotes (`fold_3`, `fold_all`); None for any other name.
    pub fn of_folder_name(name: &str) -> Option<Fold> {
        name.strip_prefix(FOLD_PREFIX)?.parse().ok()
    }
}

impl fmt::Display for Fold {
    /// The name nnU-Net gives the fold's folder: `fold_3`, `fold_all`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fold::Index(i) => write!(f, "{FOLD_PREFIX}{i}"),
            Fold::All => write!(f, "{FOLD_PREFIX}all"),
        }
    }
}

impl FromStr for Fold {
    type Err = &'static str;

    /// A fold as nnU-Net's command lines take it: a number or `all`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Fold::All),
            index => index.parse().map(Fold::Index).map_err(|_| "fold must be a number or `all`"),
        }
    }
}

/// The checkpoints nn-train writes, as nnU-Net names them (nnUNetTrainer.py: `checkpoint_best.pth`,
/// `checkpoint_latest.pth`, `checkpoint_final.pth`).
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

    /// The weights' file name, `checkpoint_NAME.safetensors`.
    pub fn weights_file(self) -> String {
        CheckpointName::from(self).file(SAFETENSORS)
    }
}

/// The endings of a checkpoint's files after its stem (`checkpoint_final`).
const SAFETENSORS: &str = ".safetensors";
const MOMENTUM: &str = ".momentum.safetensors";
const SIDECAR: &str = ".json";
const PTH: &str = ".pth";

/// A checkpoint as `--checkpoint` names it, like nnU-Net's `-chk`: `final`, `best`, `latest`, or the
/// file name of one in the fold folders (`checkpoint_final.pth`, `model.safetensors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointName {
    /// The file name without `.safetensors`/`.pth`.
    stem: String,
}

impl CheckpointName {
    fn file(&self, ending: &str) -> String {
        format!("{}{ending}", self.stem)
    }
}

impl From<Checkpoint> for CheckpointName {
    fn from(checkpoint: Checkpoint) -> Self {
        Self { stem: format!("checkpoint_{}", checkpoint.name()) }
    }
}

impl FromStr for CheckpointName {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "final" => return Ok(Checkpoint::Final.into()),
            "best" => return Ok(Checkpoint::Best.into()),
            "latest" => return Ok(Checkpoint::Latest.into()),
            _ => {}
        }
        let stem = s.strip_suffix(SAFETENSORS).or_else(|| s.strip_suffix(PTH));
        match stem {
            Some(stem) if !stem.is_empty() && !s.contains('/') => Ok(Self { stem: stem.to_owned() }),
            _ => Err("must be final, best, latest, or the file name of a .pth or .safetensors checkpoint"),
        }
    }
}

impl fmt::Display for CheckpointName {
    /// The name as the `.pth` file nnU-Net would look for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file(PTH))
    }
}

/// A fold's file of one checkpoint: the safetensors nn-train writes (with its JSON sidecar) or an
/// nnU-Net `.pth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsFile {
    Safetensors { weights: PathBuf, sidecar: PathBuf },
    Pth(PathBuf),
}

impl WeightsFile {
    /// The file holding the weights.
    pub fn path(&self) -> &Path {
        match self {
            WeightsFile::Safetensors { weights, .. } => weights,
            WeightsFile::Pth(path) => path,
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

    /// The fingerprint beside the plans, as nnU-Net copies it into its trainer folder (nnUNetTrainer.py:
    /// `on_train_start`).
    pub fn fingerprint(&self) -> PathBuf {
        self.0.join(crate::DATASET_FINGERPRINT_JSON)
    }

    pub fn fold(&self, fold: Fold) -> FoldDir {
        FoldDir(self.0.join(fold.to_string()))
    }

    /// Where a configuration with a next stage writes that stage's labels, as nnU-Net does:
    /// `RUN/predicted_next_stage/NEXT` (nnUNetTrainer.py: `perform_actual_validation`).
    pub fn next_stage_output(&self, next_stage: &str) -> PathBuf {
        self.0.join("predicted_next_stage").join(next_stage)
    }
}

impl AsRef<Path> for RunDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// The file in a next-stage output folder that marks fold `fold`'s labels complete (written after
/// them, removed while they are redone), so that scripts can tell a fold validated for the next stage.
pub fn next_stage_mark(next_stage_output: &Path, fold: usize) -> PathBuf {
    next_stage_output.join(format!("{}.json", Fold::Index(fold)))
}

/// Case `id`'s labels in a next-stage output folder: `CASE.npy` on the next stage's preprocessed grid,
/// where nnU-Net writes `CASE.b2nd` (nnUNetTrainer.py: `perform_actual_validation`).
pub fn next_stage_labels(next_stage_output: &Path, id: &str) -> PathBuf {
    next_stage_output.join(crate::preprocessed::data_file(id))
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
    pub fn weights(&self, checkpoint: Checkpoint) -> PathBuf {
        self.0.join(checkpoint.weights_file())
    }

    /// `checkpoint_NAME.momentum.safetensors`: SGD's momentum buffers.
    pub fn momentum(&self, checkpoint: Checkpoint) -> PathBuf {
        self.0.join(CheckpointName::from(checkpoint).file(MOMENTUM))
    }

    /// `checkpoint_NAME.pth`: the checkpoint as nnU-Net's trainer writes it (nnUNetTrainer.py:
    /// `save_checkpoint`), for nnU-Net to load.
    pub fn pth(&self, checkpoint: Checkpoint) -> PathBuf {
        self.0.join(CheckpointName::from(checkpoint).file(PTH))
    }

    /// `checkpoint_NAME.json`: the sidecar (epoch, EMA, configuration, mirroring axes), written last.
    pub fn sidecar(&self, checkpoint: Checkpoint) -> PathBuf {
        self.0.join(CheckpointName::from(checkpoint).file(SIDECAR))
    }

    /// Checkpoint `name`'s file in this fold, if there is one: where a checkpoint exists as both
    /// safetensors and `.pth` (nn-train writes both), the safetensors file, which reads faster.
    pub fn weights_file(&self, name: &CheckpointName) -> Option<WeightsFile> {
        let weights = self.0.join(name.file(SAFETENSORS));
        let pth = self.0.join(name.file(PTH));
        if weights.is_file() {
            Some(WeightsFile::Safetensors { weights, sidecar: self.0.join(name.file(SIDECAR)) })
        } else {
            pth.is_file().then_some(WeightsFile::Pth(pth))
        }
    }

    /// `validation/`: the fold's validation cases predicted with its final checkpoint.
    pub fn validation(&self) -> PathBuf {
        self.0.join("validation")
    }

    /// `validation/summary.json`: the validation predictions evaluated against the reference labels
    /// (nnUNetTrainer.py: `perform_actual_validation`).
    pub fn validation_summary(&self) -> PathBuf {
        self.validation().join("summary.json")
    }

    /// `augmented/`: the augmented samples `nn-train --dump-augmented` previews.
    pub fn augmented(&self) -> PathBuf {
        self.0.join("augmented")
    }
}

impl AsRef<Path> for FoldDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_named_as_nnunet_names_them() {
        assert_eq!(Fold::Index(3).to_string(), "fold_3");
        assert_eq!(Fold::All.to_string(), "fold_all");
        assert_eq!(Fold::of_folder_name("fold_12"), Some(Fold::Index(12)));
        assert_eq!(Fold::of_folder_name("fold_all"), Some(Fold::All));
        for other in ["fold_", "fold_x", "fold3", "validation", "fold_-1"] {
            assert_eq!(Fold::of_folder_name(other), None, "{other}");
        }
        assert_eq!("all".parse(), Ok(Fold::All));
        assert_eq!("0".parse(), Ok(Fold::Index(0)));
        assert_eq!("x".parse::<Fold>(), Err("fold must be a number or `all`"));
    }

    #[test]
    fn checkpoint_names_as_nnunet_chk() {
        let name = |s: &str| s.parse::<CheckpointName>();
        assert_eq!(name("best"), Ok(Checkpoint::Best.into()));
        assert_eq!(name("checkpoint_final.pth"), Ok(Checkpoint::Final.into()));
        assert_eq!(name("checkpoint_latest.safetensors"), Ok(Checkpoint::Latest.into()));
        assert_eq!(name("model.pth").map(|n| n.to_string()), Ok("model.pth".to_owned()));
        for bad in ["middle", ".pth", "a/b.pth", "checkpoint_final.ckpt"] {
            assert!(name(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let fold = FoldDir::new(dir.path());
        let final_ = CheckpointName::from(Checkpoint::Final);
        assert_eq!(fold.weights_file(&final_), None);
        std::fs::write(dir.path().join("checkpoint_final.pth"), b"").unwrap();
        assert_eq!(fold.weights_file(&final_), Some(WeightsFile::Pth(dir.path().join("checkpoint_final.pth"))));
        std::fs::write(dir.path().join("checkpoint_final.safetensors"), b"").unwrap();
        let chosen = fold.weights_file(&final_).unwrap();
        assert_eq!(chosen.path(), dir.path().join("checkpoint_final.safetensors"), "safetensors wins");
    }

    #[test]
    fn run_folder_paths() {
        let run = RunDir::new("runs/3d_lowres");
        assert_eq!(run.plans(), Path::new("runs/3d_lowres/plans.json"));
        assert_eq!(run.dataset_json(), Path::new("runs/3d_lowres/dataset.json"));
        assert_eq!(run.fingerprint(), Path::new("runs/3d_lowres/dataset_fingerprint.json"));
        let fold = run.fold(Fold::Index(2));
        assert_eq!(fold.path(), Path::new("runs/3d_lowres/fold_2"));
        assert_eq!(fold.settings(), Path::new("runs/3d_lowres/fold_2/settings.json"));
        assert_eq!(fold.log(), Path::new("runs/3d_lowres/fold_2/log.jsonl"));
        assert_eq!(fold.progress_plot(), Path::new("runs/3d_lowres/fold_2/progress.png"));
        assert_eq!(fold.validation(), Path::new("runs/3d_lowres/fold_2/validation"));
        assert_eq!(fold.validation_summary(), Path::new("runs/3d_lowres/fold_2/validation/summary.json"));
        assert_eq!(fold.augmented(), Path::new("runs/3d_lowres/fold_2/augmented"));
        assert_eq!(run.fold(Fold::All).path(), Path::new("runs/3d_lowres/fold_all"));
    }

    #[test]
    fn checkpoint_files() {
        let fold = FoldDir::new("f");
        assert_eq!(fold.weights(Checkpoint::Final), Path::new("f/checkpoint_final.safetensors"));
        assert_eq!(fold.momentum(Checkpoint::Latest), Path::new("f/checkpoint_latest.momentum.safetensors"));
        assert_eq!(fold.sidecar(Checkpoint::Best), Path::new("f/checkpoint_best.json"));
        assert_eq!(fold.pth(Checkpoint::Best), Path::new("f/checkpoint_best.pth"));
        assert_eq!(Checkpoint::Best.weights_file(), "checkpoint_best.safetensors");
    }

    #[test]
    fn next_stage_outputs_and_marks() {
        let output = RunDir::new("runs/3d_lowres").next_stage_output("3d_cascade_fullres");
        assert_eq!(output, Path::new("runs/3d_lowres/predicted_next_stage/3d_cascade_fullres"));
        assert_eq!(
            next_stage_mark(&output, 4),
            Path::new("runs/3d_lowres/predicted_next_stage/3d_cascade_fullres/fold_4.json")
        );
        assert_eq!(
            next_stage_labels(&output, "hippocampus_001"),
            Path::new("runs/3d_lowres/predicted_next_stage/3d_cascade_fullres/hippocampus_001.npy")
        );
    }
}
