//! nnU-Net v1 / Medical Segmentation Decathlon tasks in v2's layout, as nnU-Net's
//! `convert_MSD_dataset` and `convert_raw_dataset_from_old_nnunet_format` do: `modality` becomes
//! `channel_names`, `labels` are inverted to name → value, the `training` and `test` lists give the
//! cases, 4-D images are split into one file per channel (a v1 task whose images already carry
//! `_XXXX` files has them copied), and the descriptive keys are kept.

use crate::layout::{Plan, collect_all, write_raw_dataset};
use crate::{Images, Options, SourceCase};
use nntools_dataset::Descriptor;
use nntools_io::split_image_ending;
use nntools_io::{Error, Result, read_json};
use nntools_layout::DATASET_JSON;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// Keys of a v1 dataset.json that v2 keeps as they are.
const DESCRIPTIVE_KEYS: [&str; 5] = ["name", "description", "reference", "licence", "release"];

/// Converts the v1 task folder `task` into the v2 raw dataset `out`; returns the check's warnings.
pub fn convert_v1(task: &Path, out: &Path, options: Options) -> Result<Vec<String>> {
    let json_path = task.join(DATASET_JSON);
    let json: Value = read_json(&json_path)?;
    let descriptor = Descriptor::from_json(&json).map_err(|problem| Error::bad_input(&json_path, problem))?;
    let object = json.as_object().expect("a parsed descriptor is an object");
    let not_v1 = || {
        Error::bad_input(
            &json_path,
            "no \"training\" list of {\"image\", \"label\"}: not an nnU-Net v1 / MSD dataset.json",
        )
    };
    let training = object.get("training").and_then(Value::as_array).ok_or_else(not_v1)?;
    let channels = descriptor.channel_names.len();
    let training = collect_all(training.iter().map(|entry| {
        let field = |key| entry.get(key).and_then(Value::as_str);
        let (Some(image), Some(label)) = (field("image"), field("label")) else {
            return Err(not_v1());
        };
        let (id, images) = case_images(task, &json_path, image, channels)?;
        Ok(SourceCase { id, images, label: Some(task.join(label)) })
    }))?;
    let test_entries = match object.get("test") {
        None => &Vec::new(),
        Some(list) => list.as_array().ok_or_else(|| Error::bad_input(&json_path, "\"test\" is not a list"))?,
    };
    let test = collect_all(test_entries.iter().map(|entry| {
        let image = entry
            .as_str()
            .or_else(|| entry.get("image").and_then(Value::as_str))
            .ok_or_else(|| Error::bad_input(&json_path, "every \"test\" entry must be an image path"))?;
        let (id, images) = case_images(task, &json_path, image, channels)?;
        Ok(SourceCase { id, images, label: None })
    }))?;
    for (cases, list) in [(&training, "training"), (&test, "test")] {
        let mut seen = BTreeSet::new();
        if let Some(case) = cases.iter().find(|c| !seen.insert(&c.id)) {
            return Err(Error::bad_input(&json_path, format!("case {} is listed twice in \"{list}\"", case.id)));
        }
    }
    if descriptor.is_region_based() {
        return Err(Error::bad_input(&json_path, "region-based labels have no v1 form"));
    }
    let labels = descriptor.labels.iter().map(|l| (l.name.clone(), l.values[0])).collect();
    let extra: Map<String, Value> =
        DESCRIPTIVE_KEYS.iter().filter_map(|&k| object.get(k).map(|v| (k.to_owned(), v.clone()))).collect();
    let plan = Plan {
        channel_names: descriptor.channel_names,
        labels: Some(labels),
        training,
        test,
        extra,
        labels_origin: json_path,
    };
    write_raw_dataset(&plan, out, options)
}

/// The case id and image files of a `training` or `test` entry (`./imagesTr/CASE.nii.gz`): that file
/// (3-D, or 4-D with the channels), or else the `CASE_XXXX` files of nnU-Net v1's own layout.
fn case_images(task: &Path, json_path: &Path, entry: &str, channels: usize) -> Result<(String, Images)> {
    let path = task.join(entry);
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let (id, ending) = split_image_ending(&name)
        .ok_or_else(|| Error::bad_input(json_path, format!("{entry:?} is not an image file (.nii.gz, .nii, ...)")))?;
    if path.is_file() {
        return Ok((id.to_owned(), Images::Stacked(path)));
    }
    let channel_files: Vec<_> = (0..channels).map(|c| path.with_file_name(format!("{id}_{c:04}{ending}"))).collect();
    if channel_files.iter().all(|p| p.is_file()) {
        return Ok((id.to_owned(), Images::Channels(channel_files)));
    }
    Err(Error::bad_input(&path, format!("missing (and so is {})", channel_files[0].display())))
}
