//! Averaging the probabilities of several prediction folders (`nnunetv2/ensembling/ensemble.py: ensemble_folders`,
//! `average_probabilities`).

use ndarray::Array4;
use nntools_dataset::{Descriptor, Labelling};
use nntools_io::{Error, Result, read_json, read_label_map, read_npz, write_json, write_label_map, write_npz};
use nntools_layout::DATASET_JSON;
use nntools_layout::predictions::{self, dataset_json_of};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The dataset description of a prediction folder: its `dataset.json` (nn-infer writes one), or that
/// of the run two levels up for a training run's `fold_F/validation`.
pub fn folder_descriptor(folder: &Path) -> Result<Descriptor> {
    let found = dataset_json_of(folder)
        .ok_or_else(|| Error::bad_input(folder, "no dataset.json in the folder (or its run folder); pass --dataset"))?;
    Descriptor::read(&found)
}

fn case_ids(folder: &Path) -> Result<Vec<String>> {
    let mut ids: Vec<String> = std::fs::read_dir(folder)
        .map_err(|e| Error::io(folder, &e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| predictions::case_of_probabilities(&e.file_name().to_string_lossy()).map(str::to_owned))
        .filter(|id| !id.starts_with('.'))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Averages `CASE.npz` probabilities over `inputs` for every case of the first folder and writes the
/// label maps (geometry of the first folder's `CASE<ending>`) and, when asked, the probabilities.
pub fn average_folders(
    inputs: &[PathBuf],
    output: &Path,
    descriptor: &Descriptor,
    save_probabilities: bool,
) -> Result<usize> {
    let ids = case_ids(&inputs[0])?;
    if ids.is_empty() {
        return Err(Error::bad_input(&inputs[0], "no CASE.npz probabilities (predict with --save-probabilities)"));
    }
    let missing: Vec<String> = inputs[1..]
        .iter()
        .flat_map(|dir| ids.iter().map(move |id| predictions::probabilities(dir, id)))
        .filter(|p| !p.is_file())
        .map(|p| format!("{}: missing (every folder needs the same cases)", p.display()))
        .collect();
    if !missing.is_empty() {
        return Err(Error::bad_input_lines(missing));
    }
    let labelling = Labelling::of(descriptor).map_err(|p| Error::bad_input(&inputs[0], p))?;
    let ending = &descriptor.file_ending;
    nntools_io::create_output_folder(output)?;
    // what a killed run left half-written
    nntools_io::remove_stale_temporaries(output)?;
    ids.par_iter().try_for_each(|id| {
        let mut sum: Option<Array4<f32>> = None;
        for dir in inputs {
            let path = predictions::probabilities(dir, id);
            let probabilities: Array4<f32> = read_npz(&path, "probabilities")?;
            sum = Some(match sum {
                None => probabilities,
                Some(total) if total.shape() == probabilities.shape() => total + probabilities,
                Some(total) => {
                    return Err(Error::bad_input(
                        &path,
                        format!(
                            "shape {:?} differs from {:?} in {}",
                            probabilities.shape(),
                            total.shape(),
                            inputs[0].display()
                        ),
                    ));
                }
            });
        }
        let mean = sum.expect("at least one folder") / inputs.len() as f32;
        // the first folder's label map gives the geometry and the format
        let geometry_source = predictions::existing_label_map(&inputs[0], id, ending);
        let like = read_label_map(&geometry_source)?;
        let labels = labelling.labels(mean.view());
        let name = geometry_source.file_name().expect("a file");
        write_label_map(&output.join(name), labels.view(), &like.geometry, &like.stored)?;
        if save_probabilities {
            write_npz(&predictions::probabilities(output, id), "probabilities", &mean)?;
        }
        Ok(())
    })?;
    // keep the output self-describing for nn-ensemble postprocess and nn-eval
    let dataset_json = inputs[0].join(DATASET_JSON);
    if dataset_json.is_file() {
        write_json(&output.join(DATASET_JSON), &read_json::<serde_json::Value>(&dataset_json)?)?;
    }
    Ok(ids.len())
}
