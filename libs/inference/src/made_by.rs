//! What made a case's prediction, recorded beside it in `CASE.made_by.json` once its outputs are written,
//! so that `nn-infer --continue` skips only the cases made by the same models, folds and options.
//! nnU-Net's `--continue_prediction` (nnunetv2/inference/predict_from_raw_data.py:
//! `nnUNetPredictor._manage_input_and_output_lists` with `overwrite=False`) only checks that the outputs
//! exist, which keeps predictions made by other models or options.
//!
//! The record names files by content (SHA-256), never by path, so that two runs of the same models on
//! the same data in different folders write the same bytes.

use crate::ModelFolder;
use nntools_io::{Error, Result, write_json};
use nntools_layout::predictions;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// One model folder as used: its plans and each fold's weights, by content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ModelIdentity {
    plans_sha256: String,
    /// `(fold folder, weights SHA-256)` of each fold used, in order.
    folds: Vec<(String, String)>,
}

impl ModelIdentity {
    pub(crate) fn of(folder: &ModelFolder) -> Result<Self> {
        let folds = folder
            .weights
            .iter()
            .map(|weights| {
                let path = weights.path();
                let fold = path.parent().and_then(Path::file_name).unwrap_or_default().to_string_lossy();
                Ok((fold.into_owned(), sha256_of(path)?))
            })
            .collect::<Result<_>>()?;
        Ok(Self { plans_sha256: sha256_of(&folder.dir.plans())?, folds })
    }
}

/// The previous stage of a cascade as used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum PreviousStageIdentity {
    /// Its model, which predicted the case first.
    Model(ModelIdentity),
    /// Its prediction of the case, given (by content).
    Predictions { sha256: String },
}

/// What a run predicts with: the same for every case, but for the given previous-stage predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MadeBy {
    pub(crate) models: Vec<ModelIdentity>,
    pub(crate) previous_stage: Option<PreviousStageIdentity>,
    pub(crate) checkpoint: String,
    pub(crate) tta: bool,
    pub(crate) step: f64,
    /// `--precision` as it resolved on the device: bf16 and fp32 labels differ on a few voxels.
    pub(crate) precision: String,
    pub(crate) save_probabilities: bool,
}

/// `CASE.made_by.json`: how the case was made and the byte size of each output file, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CaseRecord {
    made_by: MadeBy,
    outputs: Vec<(String, u64)>,
}

pub(crate) fn sha256_of(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, &e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The files a case's prediction consists of in `dir`.
fn output_names(id: &str, ending: &str, save_probabilities: bool) -> Vec<String> {
    let mut names = vec![format!("{id}{ending}")];
    if save_probabilities {
        for path in [predictions::probabilities(Path::new(""), id), predictions::properties(Path::new(""), id)] {
            names.push(path.to_string_lossy().into_owned());
        }
    }
    names
}

/// Whether the case's outputs in `dir` are all there, as large as recorded, and made as `made_by` says.
pub(crate) fn is_current(dir: &Path, id: &str, ending: &str, made_by: &MadeBy) -> bool {
    let Ok(text) = std::fs::read_to_string(predictions::made_by(dir, id)) else { return false };
    let Ok(record) = serde_json::from_str::<CaseRecord>(&text) else { return false };
    let names: Vec<&str> = record.outputs.iter().map(|(name, _)| name.as_str()).collect();
    record.made_by == *made_by
        && names == output_names(id, ending, made_by.save_probabilities)
        && record.outputs.iter().all(|(name, bytes)| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == *bytes))
}

/// Removes the case's record before its outputs are rewritten, so that a run killed in between leaves
/// no record vouching for outputs it did not make.
pub(crate) fn forget(dir: &Path, id: &str) -> Result<()> {
    let path = predictions::made_by(dir, id);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, &e)),
        _ => Ok(()),
    }
}

/// Records how the case's outputs, just written to `dir`, were made.
pub(crate) fn record(dir: &Path, id: &str, ending: &str, made_by: MadeBy) -> Result<()> {
    let outputs = output_names(id, ending, made_by.save_probabilities)
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, &e))?;
            Ok((name, meta.len()))
        })
        .collect::<Result<_>>()?;
    write_json(&predictions::made_by(dir, id), &CaseRecord { made_by, outputs })
}
