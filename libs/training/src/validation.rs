//! nnU-Net's final validation (nnunet-spec 6.7): a fold's validation cases predicted with its final
//! checkpoint (mirroring, step 0.5) from their preprocessed arrays, and exported to their input
//! geometry as `fold_F/validation/CASE<ending>` with probabilities (`CASE.npz`), which model selection
//! and ensembling (`nn-ensemble select`) read.

use ndarray::Array4;
use ndarray_npy::ReadNpyExt;
use nntools_inference::{export, write_prediction, ModelFolder, Options, Predictor};
use nntools_io::{new_header, read_json, Error, Geometry, Result};
use nntools_preprocessing::Properties;
use std::path::Path;
use tch::Device;

/// Predicts the validation cases of fold `fold` of the run in `run_dir` from the preprocessed folder.
pub fn validate_fold(run_dir: &Path, fold: usize, data_dir: &Path, case_ids: &[String], device: Device) -> Result<()> {
    let options = Options { folds: Some(vec![fold.to_string()]), checkpoint: "final".into(), tta: true, step: 0.5, device };
    let folder = ModelFolder::open(run_dir, &options)?;
    if folder.recipe.configuration.previous_stage.is_some() {
        return Err(Error::bad_input(run_dir, "validating a cascade stage needs the previous stage's predictions; not supported yet"));
    }
    let predictor = Predictor::load(&folder, &options)?;
    let out = run_dir.join(format!("fold_{fold}")).join("validation");
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, &e))?;
    nntools_io::remove_stale_temporaries(&out)?;
    for id in case_ids {
        let data_path = data_dir.join(format!("{id}.npy"));
        let file = std::fs::File::open(&data_path).map_err(|e| Error::io(&data_path, &e))?;
        let data = Array4::<f32>::read_npy(file).map_err(|e| Error::bad_input(&data_path, e))?;
        let properties: Properties = read_json(&data_dir.join(format!("{id}.json")))?;
        let logits = predictor.logits(&data, None, &mut || {});
        let exported = export(&logits, &properties, &folder.recipe, &folder.labelling, true);
        let geometry = Geometry { spacing: properties.spacing, origin: properties.sitk_stuff.origin, direction: properties.sitk_stuff.direction };
        let shape = exported.labels.shape();
        let header = new_header(&geometry, [shape[0], shape[1], shape[2]]);
        write_prediction(&out, id, &folder.descriptor.file_ending, &exported.labels, exported.probabilities.as_ref(), &properties, &header)?;
    }
    Ok(())
}
