//! nn-resample against nnU-Net v2.8.1's preprocessed cases in ../shared/reference (3d_fullres and 2d
//! of Dataset004, Dataset104 with anisotropic spacings, Dataset005 with two channels, Dataset006 CT).

use ndarray::{Array4, ArrayD, Ix4};
use ndarray_npy::{NpzReader, ReadNpyExt};
use nntools_tests::{read_json, run, shared, stderr};
use std::path::Path;

fn read_npy_f32(path: &Path) -> Array4<f32> {
    Array4::<f32>::read_npy(std::fs::File::open(path).unwrap()).unwrap()
}

fn read_npy_i8(path: &Path) -> Array4<i8> {
    Array4::<i8>::read_npy(std::fs::File::open(path).unwrap()).unwrap()
}

/// A raw dataset holding only the reference cases (links), so the test preprocesses just those.
fn raw_subset(raw: &Path, cases: &[String], dir: &Path) -> std::path::PathBuf {
    let subset = dir.join("raw");
    for sub in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(subset.join(sub)).unwrap();
        for entry in std::fs::read_dir(raw.join(sub)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if cases.iter().any(|c| name.starts_with(&format!("{c}_")) || name == format!("{c}.nii.gz")) {
                std::os::unix::fs::symlink(entry.path(), subset.join(sub).join(&name)).unwrap();
            }
        }
    }
    std::fs::copy(raw.join("dataset.json"), subset.join("dataset.json")).unwrap();
    subset
}

fn compare(dataset: &str, configuration: &str) {
    let Some(shared) = shared() else { return };
    let reference = shared.join("reference").join(dataset);
    let reference_cases = reference.join(format!("nnUNetPlans_{configuration}"));
    let mut cases: Vec<String> = std::fs::read_dir(&reference_cases)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".npz").map(str::to_owned))
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_subset(&shared.join("data").join(dataset), &cases, dir.path());
    let out = dir.path().join("out");
    let output = run(
        "nn-resample",
        &[&"--plans", &reference.join("nnUNetPlans.json"), &"-c", &configuration, &"-i", &raw, &"-o", &out, &"-q"],
    );
    assert!(output.status.success(), "{}", stderr(&output));

    for case in &cases {
        let what = format!("{dataset} {configuration} {case}");
        let mut npz =
            NpzReader::new(std::fs::File::open(reference_cases.join(format!("{case}.npz"))).unwrap()).unwrap();
        let ref_data: Array4<f32> = npz
            .by_name::<ndarray::OwnedRepr<f32>, ndarray::IxDyn>("data")
            .unwrap()
            .into_dimensionality::<Ix4>()
            .unwrap();
        let ref_seg: ArrayD<i8> = npz.by_name("seg").unwrap();
        let data = read_npy_f32(&out.join(format!("{case}.npy")));
        let seg = read_npy_i8(&out.join(format!("{case}_seg.npy")));
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
}

#[test]
fn hippocampus_3d_fullres() {
    compare("Dataset004_Hippocampus", "3d_fullres");
}

#[test]
fn hippocampus_2d() {
    compare("Dataset004_Hippocampus", "2d");
}

#[test]
fn anisotropic_3d_fullres_separate_z() {
    compare("Dataset104_HippocampusAniso", "3d_fullres");
}

#[test]
fn anisotropic_2d() {
    compare("Dataset104_HippocampusAniso", "2d");
}

#[test]
fn brats_two_channels_3d_fullres() {
    compare("Dataset005_BraTS2013mini", "3d_fullres");
}

#[test]
fn brats_two_channels_2d() {
    compare("Dataset005_BraTS2013mini", "2d");
}

#[test]
fn ct_normalisation_3d_fullres() {
    compare("Dataset006_TotalSegCTmini", "3d_fullres");
}

#[test]
fn ct_normalisation_2d() {
    compare("Dataset006_TotalSegCTmini", "2d");
}
