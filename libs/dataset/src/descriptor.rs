//! The contents of `dataset.json`, normalised to nnU-Net v2's meaning whichever form was written.

use nntools_io::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// One entry of `labels`: a plain label (one value) or a region (several values, region-based training).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub values: Vec<i64>,
}

/// `dataset.json`, in nnU-Net v2's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    /// Channel names in channel order (`_0000`, `_0001`, ...); the name selects the normalisation.
    pub channel_names: Vec<String>,
    /// Labels in the order written, background and regions included, the ignore label excluded.
    pub labels: Vec<Label>,
    pub ignore_label: Option<i64>,
    pub regions_class_order: Option<Vec<i64>>,
    pub num_training: usize,
    pub file_ending: String,
    /// v1 only: the `training` list's image entries (without channel suffix), relative to the dataset.
    pub v1_training_images: Option<Vec<String>>,
    /// v2 only: the optional explicit `dataset` map, case id → (image paths, label path).
    pub explicit_cases: Option<Vec<(String, Vec<String>, String)>>,
    /// nnU-Net's reader class chosen by hand (`overwrite_image_reader_writer`).
    pub overwrite_image_reader_writer: Option<String>,
}

impl Descriptor {
    /// Reads `dataset.json`; every problem with it is bad input naming the file.
    pub fn read(path: &Path) -> Result<Self> {
        let json: Value = nntools_io::read_json(path)?;
        Self::from_json(&json).map_err(|problem| Error::bad_input(path, problem))
    }

    /// Parses either form; the v1/MSD form is recognised by `modality` or int-keyed `labels`.
    pub fn from_json(json: &Value) -> std::result::Result<Self, String> {
        let object = json.as_object().ok_or("dataset.json is not a JSON object")?;
        let channels = object
            .get("channel_names")
            .or_else(|| object.get("modality"))
            .ok_or("missing key \"channel_names\" (or v1 \"modality\")")?;
        let channel_names = parse_channels(channels)?;
        let labels_value = object.get("labels").ok_or("missing key \"labels\"")?;
        let labels_object = labels_value.as_object().ok_or("\"labels\" is not an object")?;
        let v1_labels = !labels_object.is_empty() && labels_object.keys().all(|k| k.parse::<i64>().is_ok());
        let (labels, ignore_label) =
            if v1_labels { (parse_v1_labels(labels_object)?, None) } else { parse_v2_labels(labels_object)? };
        check_labels(&labels, ignore_label)?;

        let num_training = object
            .get("numTraining")
            .ok_or("missing key \"numTraining\"")?
            .as_u64()
            .ok_or("\"numTraining\" is not a non-negative integer")? as usize;
        let file_ending = match object.get("file_ending") {
            Some(v) => v.as_str().ok_or("\"file_ending\" is not a string")?.to_owned(),
            None if v1_labels => ".nii.gz".to_owned(),
            None => return Err("missing key \"file_ending\"".into()),
        };
        if !file_ending.starts_with('.') {
            return Err(format!("\"file_ending\" must start with a dot, got {file_ending:?}"));
        }
        let regions_class_order = object
            .get("regions_class_order")
            .map(|v| parse_int_list(v).ok_or("\"regions_class_order\" is not a list of integers"))
            .transpose()?;
        let is_region_based = labels.iter().any(|l| l.values.len() > 1);
        if is_region_based && regions_class_order.is_none() {
            return Err("region-based \"labels\" need \"regions_class_order\"".into());
        }
        let v1_training_images = match object.get("training") {
            Some(list) if v1_labels || object.contains_key("modality") => Some(parse_v1_training(list)?),
            _ => None,
        };
        let explicit_cases = object.get("dataset").map(parse_explicit_cases).transpose()?;
        let overwrite_image_reader_writer = match object.get("overwrite_image_reader_writer") {
            Some(v) => Some(v.as_str().ok_or("\"overwrite_image_reader_writer\" is not a string")?.to_owned()),
            None => None,
        };
        Ok(Self {
            channel_names,
            labels,
            ignore_label,
            regions_class_order,
            num_training,
            file_ending,
            v1_training_images,
            explicit_cases,
            overwrite_image_reader_writer,
        })
    }

    /// Sorted unique label values over all labels and regions (the ignore label excluded), as nnU-Net's
    /// `LabelManager.all_labels`.
    pub fn all_labels(&self) -> Vec<i64> {
        let mut all: Vec<i64> = self.labels.iter().flat_map(|l| l.values.iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The labels other than the background, ascending (nnU-Net's `foreground_labels`).
    pub fn foreground_labels(&self) -> Vec<i64> {
        self.all_labels().into_iter().filter(|&l| l != 0).collect()
    }

    /// The entries of `labels` other than the background, in the order written: the foreground labels,
    /// or for a region-based dataset the regions (nnU-Net's `foreground_regions`).
    pub fn foreground_entries(&self) -> impl Iterator<Item = &Label> {
        self.labels.iter().filter(|l| l.values.iter().any(|&v| v != 0))
    }

    /// The values a label map may contain: all labels plus the ignore label.
    pub fn allowed_label_values(&self) -> Vec<i64> {
        let mut allowed = self.all_labels();
        allowed.extend(self.ignore_label);
        allowed
    }

    pub fn is_region_based(&self) -> bool {
        self.labels.iter().any(|l| l.values.len() > 1)
    }
}

fn parse_channels(value: &Value) -> std::result::Result<Vec<String>, String> {
    let object = value.as_object().ok_or("\"channel_names\" is not an object")?;
    let mut indexed = Vec::with_capacity(object.len());
    for (key, name) in object {
        let index: usize = key.parse().map_err(|_| format!("channel key {key:?} is not an integer"))?;
        let name = name.as_str().ok_or_else(|| format!("channel {key} name is not a string"))?;
        indexed.push((index, name.to_owned()));
    }
    indexed.sort();
    if indexed.is_empty() || indexed.iter().enumerate().any(|(i, (index, _))| i != *index) {
        return Err("\"channel_names\" must number its channels 0, 1, 2, ... without gaps".into());
    }
    Ok(indexed.into_iter().map(|(_, name)| name).collect())
}

fn parse_int_list(value: &Value) -> Option<Vec<i64>> {
    match value {
        Value::Number(n) => Some(vec![n.as_i64()?]),
        Value::Array(items) => items.iter().map(Value::as_i64).collect(),
        _ => None,
    }
}

fn parse_v2_labels(object: &Map<String, Value>) -> std::result::Result<(Vec<Label>, Option<i64>), String> {
    let mut labels = Vec::with_capacity(object.len());
    let mut ignore = None;
    for (name, value) in object {
        let values = parse_int_list(value)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("label {name:?} must be an integer or a list of integers"))?;
        if name == "ignore" {
            if values.len() != 1 {
                return Err("the \"ignore\" label must be a single integer".into());
            }
            ignore = Some(values[0]);
        } else {
            labels.push(Label { name: name.clone(), values });
        }
    }
    Ok((labels, ignore))
}

fn parse_v1_labels(object: &Map<String, Value>) -> std::result::Result<Vec<Label>, String> {
    let mut labels = Vec::with_capacity(object.len());
    for (key, name) in object {
        let value: i64 = key.parse().map_err(|_| format!("label key {key:?} is not an integer"))?;
        let name = name.as_str().ok_or_else(|| format!("label {key} name is not a string"))?;
        labels.push(Label { name: name.to_owned(), values: vec![value] });
    }
    labels.sort_by_key(|l| l.values[0]);
    Ok(labels)
}

/// The distinct values of a label map that `allowed` (e.g. `Descriptor::allowed_label_values`) does
/// not hold, in ascending order. One pass with a table for the common small values, so it costs no more
/// than reading the map.
pub fn undeclared_labels<'a>(values: impl IntoIterator<Item = &'a i32>, allowed: &[i64]) -> Vec<i32> {
    let mut seen_small = [false; 256];
    let mut seen_other = std::collections::BTreeSet::new();
    for &v in values {
        match u8::try_from(v) {
            Ok(small) => seen_small[usize::from(small)] = true,
            Err(_) => {
                seen_other.insert(v);
            }
        }
    }
    (0..256)
        .filter(|&v| seen_small[v as usize])
        .chain(seen_other)
        .filter(|v| !allowed.contains(&i64::from(*v)))
        .collect()
}

/// nnU-Net's rules: background is 0, plain labels are consecutive, the ignore label comes right after.
pub fn check_labels(labels: &[Label], ignore: Option<i64>) -> std::result::Result<(), String> {
    match labels.iter().find(|l| l.name == "background") {
        Some(l) if l.values == [0] => {}
        Some(_) => return Err("label \"background\" must be 0".into()),
        None => return Err("\"labels\" must contain \"background\": 0".into()),
    }
    let mut all: Vec<i64> = labels.iter().flat_map(|l| l.values.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    // checked first, as nnU-Net does (nnunetv2/utilities/label_handling/label_handling.py: LabelManager
    // asserts it before verify_dataset_integrity.py checks the values are consecutive): an ignore label
    // placed between the others leaves a gap that is its doing, not the other labels'
    if let Some(ignore) = ignore {
        let expected = all.last().map_or(0, |max| max + 1);
        if ignore != expected {
            return Err(format!(
                "the ignore label must have the highest label value, max(labels) + 1 = {expected}, got \"ignore\": {ignore} (labels {all:?})"
            ));
        }
    }
    if all.iter().enumerate().any(|(i, &v)| v != i as i64) {
        return Err(format!("label values must be consecutive from 0, got {all:?}"));
    }
    Ok(())
}

fn parse_v1_training(list: &Value) -> std::result::Result<Vec<String>, String> {
    let entries = list.as_array().ok_or("\"training\" is not a list")?;
    entries
        .iter()
        .map(|entry| match (entry.get("image").and_then(Value::as_str), entry.get("label").and_then(Value::as_str)) {
            (Some(image), Some(_)) => Ok(image.to_owned()),
            _ => Err(format!("\"training\" entry {entry} needs \"image\" and \"label\" strings")),
        })
        .collect()
}

fn parse_explicit_cases(value: &Value) -> std::result::Result<Vec<(String, Vec<String>, String)>, String> {
    let object = value.as_object().ok_or("\"dataset\" is not an object")?;
    let mut cases = Vec::with_capacity(object.len());
    for (case, entry) in object {
        // a case name becomes output file names (CASE.npy, CASE.nii.gz), which must stay in their folder
        if case.is_empty() || case == "." || case == ".." || case.contains(['/', '\\', '\0']) {
            return Err(format!("\"dataset\" entry {case:?} is not a file name (it would escape the output folder)"));
        }
        let bad = || format!("\"dataset\" entry {case:?} needs \"images\" (list of strings) and \"label\" (string)");
        let images = entry
            .get("images")
            .and_then(Value::as_array)
            .and_then(|list| list.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
            .ok_or_else(bad)?;
        let label = entry.get("label").and_then(Value::as_str).ok_or_else(bad)?.to_owned();
        cases.push((case.clone(), images, label));
    }
    cases.sort();
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn case_names_that_escape_the_output_folder_are_refused() {
        for name in ["../evil", "a/b", "..", ""] {
            let json = json!({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}, "numTraining": 1, "file_ending": ".nii.gz",
                "dataset": {name: {"images": ["x.nii.gz"], "label": "y.nii.gz"}}});
            let error = Descriptor::from_json(&json).unwrap_err();
            assert!(error.contains("would escape the output folder"), "{name}: {error}");
        }
        let json = json!({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}, "numTraining": 1, "file_ending": ".nii.gz",
            "dataset": {"Fall ü 1": {"images": ["x.nii.gz"], "label": "y.nii.gz"}}});
        assert!(Descriptor::from_json(&json).is_ok(), "spaces and unicode are fine");
    }

    #[test]
    fn reads_v2_form() {
        let d = Descriptor::from_json(&json!({
            "channel_names": {"1": "ADC", "0": "T2"},
            "labels": {"background": 0, "PZ": 1, "TZ": 2},
            "numTraining": 32, "file_ending": ".nii.gz"
        }))
        .unwrap();
        assert_eq!(d.channel_names, ["T2", "ADC"]);
        assert_eq!(d.all_labels(), [0, 1, 2]);
        assert_eq!(d.num_training, 32);
        assert!(!d.is_region_based());
    }

    #[test]
    fn reads_v1_msd_form() {
        let d = Descriptor::from_json(&json!({
            "modality": {"0": "CT"},
            "labels": {"0": "background", "2": "tumour", "1": "liver"},
            "numTraining": 1,
            "training": [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}]
        }))
        .unwrap();
        assert_eq!(d.file_ending, ".nii.gz");
        assert_eq!(d.labels[1], Label { name: "liver".into(), values: vec![1] });
        assert_eq!(d.v1_training_images.unwrap(), ["./imagesTr/liver_0.nii.gz"]);
    }

    #[test]
    fn regions_and_ignore_label() {
        let d = Descriptor::from_json(&json!({
            "channel_names": {"0": "FLAIR"},
            "labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": 3, "ignore": 4},
            "regions_class_order": [1, 2, 3], "numTraining": 1, "file_ending": ".nii.gz"
        }))
        .unwrap();
        assert!(d.is_region_based());
        // the regions are the network's output channels in dataset.json's order, as in nnU-Net
        let names: Vec<&str> = d.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["background", "whole", "core", "enh"]);
        assert_eq!(d.all_labels(), [0, 1, 2, 3]);
        assert_eq!(d.allowed_label_values(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn rejects_broken_descriptors() {
        let base = json!({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1},
                          "numTraining": 1, "file_ending": ".nii.gz"});
        let broken = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut v = base.clone();
            edit(v.as_object_mut().unwrap());
            Descriptor::from_json(&v).unwrap_err()
        };
        assert!(
            broken(&|o| {
                o.remove("labels");
            })
            .contains("\"labels\"")
        );
        assert!(
            broken(&|o| {
                o.insert("labels".into(), json!({"background": 0, "a": 2}));
            })
            .contains("consecutive")
        );
        assert!(
            broken(&|o| {
                o.insert("labels".into(), json!({"a": 1}));
            })
            .contains("background")
        );
        assert!(
            broken(&|o| {
                o.insert("numTraining".into(), json!("3"));
            })
            .contains("numTraining")
        );
        assert!(
            broken(&|o| {
                o.insert("channel_names".into(), json!({"1": "CT"}));
            })
            .contains("gaps")
        );
        assert!(
            broken(&|o| {
                o.insert("labels".into(), json!({"background": 0, "a": 1, "ignore": 5}));
            })
            .contains("the ignore label must have the highest label value, max(labels) + 1 = 2, got \"ignore\": 5")
        );
        // between the other labels: the ignore rule, not a gap in the labels, is what is broken
        assert!(
            broken(&|o| {
                o.insert("labels".into(), json!({"background": 0, "ignore": 1, "a": 2}));
            })
            .ends_with("the ignore label must have the highest label value, max(labels) + 1 = 3, got \"ignore\": 1 (labels [0, 2])")
        );
        // right after a gap: the gap is
        assert!(
            broken(&|o| {
                o.insert("labels".into(), json!({"background": 0, "a": 2, "ignore": 3}));
            })
            .ends_with("label values must be consecutive from 0, got [0, 2]")
        );
    }
}
