//! Comparisons with nnU-Net's own outputs, shared by the reference tests of every image format: its
//! dataset fingerprint, its plans and its preprocessed cases.

use crate::{assert_json_matches, read_json, relative_difference, run, stderr};
use ndarray::{Array4, ArrayD, Ix4};
use ndarray_npy::{NpzReader, ReadNpyExt};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Asserts that our fingerprint equals nnU-Net's dataset_fingerprint.json: shapes exactly, spacings,
/// foreground intensity statistics to 1e-5 relative (nnU-Net's sampling, float32 summation order) and
/// the median relative size after cropping to 1e-3.
pub fn assert_fingerprint_matches(ours: &Value, reference: &Value, dataset: &str) {
    assert_eq!(ours["shapes_after_crop"], reference["shapes_after_crop"], "{dataset}: shapes_after_crop");
    let spacings = |v: &Value| -> Vec<Vec<f64>> { serde_json::from_value(v["spacings"].clone()).unwrap() };
    let (our_spacings, reference_spacings) = (spacings(ours), spacings(reference));
    assert_eq!(our_spacings.len(), reference_spacings.len());
    for (case, (a, b)) in our_spacings.iter().zip(&reference_spacings).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!(relative_difference(*x, *y) <= 1e-5, "{dataset}: spacing of case {case}: {a:?} vs {b:?}");
        }
    }
    let size = |v: &Value| v["median_relative_size_after_cropping"].as_f64().unwrap();
    assert!((size(ours) - size(reference)).abs() <= 1e-3, "{dataset}: median relative size");

    let channels = reference["foreground_intensity_properties_per_channel"].as_object().unwrap();
    for (channel, stats) in channels {
        for (key, expected) in stats.as_object().unwrap() {
            let ours = ours["foreground_intensity_properties_per_channel"][channel][key].as_f64();
            let (ours, expected) = (ours.unwrap_or(f64::NAN), expected.as_f64().unwrap());
            assert!(
                relative_difference(ours, expected) <= 1e-5,
                "{dataset}: channel {channel} {key}: ours {ours}, nnU-Net {expected}"
            );
        }
    }
}

/// Asserts that our plans equal nnU-Net's nnUNetPlans.json: every key nnU-Net writes, every value
/// (numbers to 1e-6 relative), and the same configurations.
pub fn assert_plans_match(ours: &Value, reference: &Value, dataset: &str) {
    assert_json_matches(ours, reference, 1e-6, dataset);
    let names = |v: &Value| v["configurations"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(ours), names(reference), "{dataset}: the same configurations");
}

/// The cases of a folder of nnU-Net's preprocessed cases (`CASE.npz`), sorted.
pub fn preprocessed_cases(folder: &Path) -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".npz").map(str::to_owned))
        .collect();
    cases.sort();
    cases
}

/// Whether a file of a raw dataset belongs to `case`: its image `CASE_XXXX.ENDING`, its label map
/// `CASE.ENDING`, or a Tiff3DIO spacing sidecar `CASE.json`.
fn belongs_to(name: &str, case: &str) -> bool {
    let stem = nntools_io::split_image_ending(name).map(|(stem, _)| stem).or_else(|| name.strip_suffix(".json"));
    let Some(rest) = stem.and_then(|stem| stem.strip_prefix(case)) else { return false };
    rest.is_empty() || rest.strip_prefix('_').is_some_and(|c| c.len() == 4 && c.bytes().all(|b| b.is_ascii_digit()))
}

/// A raw dataset holding only `cases` (links), so that a test preprocesses just those.
pub fn raw_subset(raw: &Path, cases: &[String], dir: &Path) -> PathBuf {
    let subset = dir.join("raw");
    for sub in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(subset.join(sub)).unwrap();
        for entry in std::fs::read_dir(raw.join(sub)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if cases.iter().any(|case| belongs_to(&name, case)) {
                std::os::unix::fs::symlink(entry.path(), subset.join(sub).join(&name)).unwrap();
            }
        }
    }
    std::fs::copy(raw.join("dataset.json"), subset.join("dataset.json")).unwrap();
    subset
}

fn read_npy<T: ndarray_npy::ReadableElement>(path: &Path) -> Array4<T> {
    Array4::<T>::read_npy(std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Runs nn-resample with `plans` for `configuration` on the cases of `reference_cases` (nnU-Net's
/// `nnUNetPlans_CONFIG` folder of `CASE.npz` + `CASE.json`) taken from `raw`, and asserts that every case
/// equals nnU-Net's: data to 1e-3 of its standard deviation at worst and 1e-5 on average, labels exactly
/// (99.9% where resampled), and the cropping properties and class location counts exactly. Returns the
/// folder of our outputs (inside `dir`) for further checks.
pub fn assert_preprocessed_matches(
    plans: &Path,
    configuration: &str,
    raw: &Path,
    reference_cases: &Path,
    dir: &Path,
    what: &str,
) -> PathBuf {
    let cases = preprocessed_cases(reference_cases);
    assert!(!cases.is_empty(), "{what}: no reference cases in {}", reference_cases.display());
    let raw = raw_subset(raw, &cases, dir);
    let out = dir.join("out");
    let output = run("nn-resample", &[&"--plans", &plans, &"-c", &configuration, &"-i", &raw, &"-o", &out, &"-q"]);
    assert!(output.status.success(), "{what}: {}", stderr(&output));

    for case in &cases {
        let what = format!("{what} {configuration} {case}");
        let mut npz =
            NpzReader::new(std::fs::File::open(reference_cases.join(format!("{case}.npz"))).unwrap()).unwrap();
        let ref_data: Array4<f32> = npz
            .by_name::<ndarray::OwnedRepr<f32>, ndarray::IxDyn>("data")
            .unwrap()
            .into_dimensionality::<Ix4>()
            .unwrap();
        let ref_seg: ArrayD<i8> = npz.by_name("seg").unwrap();
        let data = read_npy::<f32>(&out.join(format!("{case}.npy")));
        let seg = read_npy::<i8>(&out.join(format!("{case}_seg.npy")));
        assert_eq!(data.shape(), ref_data.shape(), "{what}: data shape");
        assert_eq!(seg.shape(), ref_seg.shape(), "{what}: seg shape");

        let n = ref_data.len() as f64;
        let mean = ref_data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let std = (ref_data.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
        let diffs: Vec<f64> = data.iter().zip(&ref_data).map(|(a, b)| f64::from((a - b).abs())).collect();
        let max = diffs.iter().copied().fold(0.0, f64::max);
        let mean_diff = diffs.iter().sum::<f64>() / n;
        assert!(max <= 1e-3 * std, "{what}: max |diff| {max} vs std {std}");
        assert!(mean_diff <= 1e-5 * std, "{what}: mean |diff| {mean_diff} vs std {std}");

        let ours = read_json(&out.join(format!("{case}.json")));
        let theirs = read_json(&reference_cases.join(format!("{case}.json")));
        for key in [
            "shape_before_cropping",
            "bbox_used_for_cropping",
            "shape_after_cropping_and_before_resampling",
            "class_locations_count",
        ] {
            assert_eq!(ours[key], theirs[key], "{what}: {key}");
        }
        let equal = seg.iter().zip(ref_seg.iter()).filter(|(a, b)| a == b).count() as f64 / seg.len() as f64;
        let resampled = theirs["shape_after_cropping_and_before_resampling"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&ref_data.shape()[1..])
            .any(|(a, &b)| a.as_u64() != Some(b as u64));
        let required = if resampled { 0.999 } else { 1.0 };
        assert!(equal >= required, "{what}: labels equal on {equal}");
    }
    out
}
