//! nnU-Net's final validation
//! (`nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: nnUNetTrainer.perform_actual_validation`): a fold's validation
//! cases predicted with its final checkpoint (mirroring, step 0.5) from their preprocessed arrays, and exported to
//! their input geometry as `fold_F/validation/CASE<ending>` with probabilities (`CASE.npz`), which model selection
//! and ensembling (`nn-ensemble select`) read. For 3d_lowres the same predictions are also resampled to the cascade's
//! next stage (see [`Cascade`]). The predictions evaluated against the reference labels make
//! `fold_F/validation/summary.json`.

use crate::Cascade;
use crate::data::preprocessed_shape;
use ndarray::Array4;
use ndarray_npy::ReadNpyExt;
use nntools_dataset::Descriptor;
use nntools_evaluation::evaluate_folders;
use nntools_inference::{
    ModelFolder, Options, OutputFormat, Predictor, export, labels_for_next_stage, write_prediction,
};
use nntools_io::{Error, PixelType, Result, Stored, read_json, write_json};
use nntools_layout::preprocessed::PreprocessedDir;
use nntools_layout::run::{Checkpoint, Fold, FoldDir, RunDir, next_stage_labels, next_stage_mark};
use nntools_network::Precision;
use nntools_preprocessing::{Properties, read_label_map_npy, write_label_map_npy};
use std::path::{Path, PathBuf};
use tch::Device;

/// Predicts the validation cases of fold `fold` of the run in `run_dir` from the preprocessed folder
/// (with the previous stage's labels for a cascade stage; writing the next stage's for 3d_lowres).
/// `cascade` fits the configuration: `train` checked it.
pub(crate) fn validate_fold(
    run_dir: &RunDir,
    fold: usize,
    data_dir: &Path,
    case_ids: &[String],
    cascade: &Cascade,
    device: Device,
    precision: Precision,
) -> Result<()> {
    let options = Options {
        folds: Some(vec![Fold::Index(fold)]),
        checkpoint: Checkpoint::Final.into(),
        tta: true,
        step: 0.5,
        device,
        precision,
    };
    let folder = ModelFolder::open(run_dir.path(), &options)?;
    let configuration = &folder.recipe.configuration;
    let next_stage: Option<(&PathBuf, PathBuf)> = configuration
        .next_stage
        .as_ref()
        .zip(cascade.next_stage_data.as_ref())
        .map(|(name, data)| (data, run_dir.next_stage_output(name)));
    let predictor = Predictor::load(&folder, &options)?;
    let out = run_dir.fold(Fold::Index(fold)).validation();
    for dir in std::iter::once(&out).chain(next_stage.as_ref().map(|(_, out)| out)) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
        nntools_io::remove_stale_temporaries(dir)?;
    }
    let next_stage_mark = next_stage.as_ref().map(|(_, out)| next_stage_mark(out, fold));
    if let Some(mark) = &next_stage_mark {
        // until the fold's labels are all rewritten, they are not complete
        std::fs::remove_file(mark)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(|e| Error::io(mark, &e))?;
    }
    let preprocessed = PreprocessedDir::new(data_dir);
    for id in case_ids {
        let data_path = preprocessed.data(id);
        let file = std::fs::File::open(&data_path).map_err(|e| Error::io(&data_path, &e))?;
        let data = Array4::<f32>::read_npy(file).map_err(|e| Error::bad_input(&data_path, e))?;
        let properties: Properties = read_json(&preprocessed.properties(id))?;
        let previous_labels = cascade
            .previous_stage
            .as_ref()
            .map(|dir| {
                let path = next_stage_labels(dir, id);
                let labels = read_label_map_npy(&path)?;
                if labels.shape() != &data.shape()[1..] {
                    return Err(Error::bad_input(
                        &path,
                        format!("shape {:?}, but case {id} is {:?}", labels.shape(), &data.shape()[1..]),
                    ));
                }
                Ok(labels)
            })
            .transpose()?;
        let logits = predictor.logits(&data, previous_labels.as_ref(), &mut || {});
        if let Some((next_data, next_out)) = &next_stage {
            let shape = preprocessed_shape(next_data, id)?;
            let labels = labels_for_next_stage(&logits, &folder.recipe, &folder.labelling, shape).mapv(|l| l as i16);
            write_label_map_npy(&next_stage_labels(next_out, id), &labels)?;
        }
        let exported = export(&logits, &properties, &folder.recipe, &folder.labelling, true);
        let properties_path = preprocessed.properties(id);
        let (geometry, dimension) =
            properties.sitk_stuff.geometry(properties.spacing).map_err(|p| Error::bad_input(&properties_path, p))?;
        let output = OutputFormat {
            ending: folder.descriptor.file_ending.clone(),
            geometry,
            stored: Stored::new(dimension, PixelType::U8),
        };
        write_prediction(&out, id, &exported.labels, exported.probabilities.as_ref(), &properties, &output)?;
    }
    match next_stage_mark {
        Some(mark) => write_json(&mark, &serde_json::json!({"fold": fold, "cases": case_ids})),
        None => Ok(()),
    }
}

/// Writes `fold_F/validation/summary.json` as nnU-Net's final validation does
/// (nnunetv2/evaluation/evaluate_predictions.py: `compute_metrics_on_folder` with `chill=True`, no
/// surface metrics): the fold's validation predictions against the reference label maps in
/// `reference_dir`, the labels or regions of `descriptor`.
pub(crate) fn write_validation_summary(
    fold_dir: &FoldDir,
    reference_dir: &Path,
    descriptor: &Descriptor,
) -> Result<()> {
    let options = nntools_evaluation::Options { chill: true, ..Default::default() };
    let summary = evaluate_folders(reference_dir, &fold_dir.validation(), descriptor, &options)?;
    summary.write(&fold_dir.validation_summary())
}
