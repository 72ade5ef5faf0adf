//! `nn-model info`: what a model folder or a single checkpoint holds.

use crate::folder::{CheckpointSummary, ModelFolder, fold_json};
use nntools_io::{Error, Result};
use nntools_layout::run::{CheckpointName, WeightsFile};
use nntools_planning::Plans;
use serde::Serialize;
use std::path::Path;

/// A model's description; the fields a lone safetensors file cannot tell (it carries no plans or
/// dataset.json) are null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// plans.json's `dataset_name`.
    pub dataset_name: Option<String>,
    /// plans.json's `plans_name`, the plans identifier.
    pub plans_name: Option<String>,
    pub configuration: String,
    /// nnU-Net's trainer class (null for nn-train's safetensors without the `.pth` beside them).
    pub trainer_name: Option<String>,
    /// The configuration's `architecture.network_class_name`.
    pub network_class_name: Option<String>,
    /// The folds holding the checkpoint: numbers, or `"all"`.
    pub folds: Vec<serde_json::Value>,
    /// The network's parameter count (each tensor once, nnU-Net's alias keys not counted).
    pub parameters: usize,
    pub input_channels: Option<usize>,
    /// dataset.json's `labels`.
    pub labels: Option<serde_json::Value>,
}

/// Describes a run or trainer folder (its folds' `checkpoint`) or a single `.pth`/`.safetensors`
/// file. A folder's folds must agree on trainer, configuration and parameter shapes.
pub fn model_info(path: &Path, checkpoint: &CheckpointName) -> Result<ModelInfo> {
    if path.is_dir() {
        let folder = ModelFolder::open(path, checkpoint)?;
        let mut summaries = folder.folds.iter().map(|(_, file)| CheckpointSummary::read(file));
        let first = summaries.next().expect("a model folder has a fold")?;
        for summary in summaries {
            let summary = summary?;
            let same = (&summary.trainer_name, &summary.configuration, &summary.parameters)
                == (&first.trainer_name, &first.configuration, &first.parameters);
            if !same {
                let problem =
                    format!("another model than {}'s (trainer, configuration or network)", first.path.display());
                return Err(Error::bad_input(&summary.path, problem));
            }
        }
        let folds = folder.folds.iter().map(|(fold, _)| fold_json(*fold)).collect();
        return describe(&first, folds, Some(&folder.plans), Some(&folder.dataset_json), &folder.run.plans());
    }
    let file = match path.extension().and_then(|e| e.to_str()) {
        Some("pth") => WeightsFile::Pth(path.to_owned()),
        Some("safetensors") => {
            WeightsFile::Safetensors { weights: path.to_owned(), sidecar: path.with_extension("json") }
        }
        _ => return Err(Error::bad_input(path, "expected a run folder, a .pth or a .safetensors file")),
    };
    let summary = CheckpointSummary::read(&file)?;
    let folds = summary.fold.iter().cloned().collect();
    if summary.plans.is_some() {
        return describe(&summary, folds, summary.plans.as_ref(), summary.dataset_json.as_ref(), path);
    }
    // nn-train's safetensors carry no plans: those of the run folder it lies in (RUN/fold_F/FILE)
    let run = path.parent().and_then(Path::parent).map(nntools_layout::run::RunDir::new);
    let read = |file: Option<std::path::PathBuf>| -> Result<Option<serde_json::Value>> {
        match file.filter(|f| f.is_file()) {
            Some(file) => nntools_io::read_json(&file).map(Some),
            None => Ok(None),
        }
    };
    let plans = read(run.as_ref().map(|r| r.plans()))?;
    let dataset_json = read(run.as_ref().map(|r| r.dataset_json()))?;
    let plans_path = run.map_or_else(|| path.to_owned(), |r| r.plans());
    describe(&summary, folds, plans.as_ref(), dataset_json.as_ref(), &plans_path)
}

fn describe(
    summary: &CheckpointSummary,
    folds: Vec<serde_json::Value>,
    plans: Option<&serde_json::Value>,
    dataset_json: Option<&serde_json::Value>,
    plans_path: &Path,
) -> Result<ModelInfo> {
    let plans = plans
        .map(|json| {
            serde_json::from_value::<Plans>(json.clone())
                .map_err(|e| Error::bad_input(plans_path, format!("invalid plans: {e}")))
        })
        .transpose()?;
    let network_class_name = plans
        .as_ref()
        .map(|plans| plans.configuration(&summary.configuration).map_err(|e| Error::bad_input(plans_path, e)))
        .transpose()?
        .map(|configuration| configuration.architecture.network_class_name);
    Ok(ModelInfo {
        dataset_name: plans.as_ref().map(|p| p.dataset_name.clone()),
        plans_name: plans.as_ref().map(|p| p.plans_name.clone()),
        configuration: summary.configuration.clone(),
        trainer_name: summary.trainer_name.clone(),
        network_class_name,
        folds,
        parameters: summary.parameter_count(),
        input_channels: summary.input_channels(),
        labels: dataset_json.and_then(|d| d.get("labels")).cloned(),
    })
}
