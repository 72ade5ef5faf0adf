//! nn-fingerprint against nnU-Net v2.8.1's dataset_fingerprint.json for every data set in ../shared.
//!
//! Foreground intensities are sampled with nnU-Net's own generator, so the statistics agree to float32
//! summation order (about 1e-7), far inside the 2% the sampling would otherwise allow; they are held
//! to 1e-5 here so that a change of sampling shows up.

use nntools_tests::{json_stdout, relative_difference, run, shared};
use serde_json::Value;

fn compare_with_reference(dataset: &str) {
    let Some(shared) = shared() else { return };
    let ours = json_stdout(&run("nn-fingerprint", &[&shared.join("data").join(dataset), &"-q"]));
    let path = shared.join("reference").join(dataset).join("dataset_fingerprint.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();

    assert_eq!(ours["shapes_after_crop"], reference["shapes_after_crop"], "{dataset}: shapes_after_crop");
    let spacings = |v: &Value| -> Vec<Vec<f64>> { serde_json::from_value(v["spacings"].clone()).unwrap() };
    let (our_spacings, reference_spacings) = (spacings(&ours), spacings(&reference));
    assert_eq!(our_spacings.len(), reference_spacings.len());
    for (case, (a, b)) in our_spacings.iter().zip(&reference_spacings).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!(relative_difference(*x, *y) <= 1e-5, "{dataset}: spacing of case {case}: {a:?} vs {b:?}");
        }
    }
    let size = |v: &Value| v["median_relative_size_after_cropping"].as_f64().unwrap();
    assert!((size(&ours) - size(&reference)).abs() <= 1e-3, "{dataset}: median relative size");

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

#[test]
fn hippocampus() {
    compare_with_reference("Dataset004_Hippocampus");
}

#[test]
fn hippocampus_anisotropic_spacings() {
    compare_with_reference("Dataset104_HippocampusAniso");
}

#[test]
fn brats_two_channels() {
    compare_with_reference("Dataset005_BraTS2013mini");
}

#[test]
fn ct_with_sform_only_headers() {
    compare_with_reference("Dataset006_TotalSegCTmini");
}

#[test]
fn fingerprint_reads_the_same_with_one_or_many_threads() {
    let Some(shared) = shared() else { return };
    let dataset = shared.join("data/Dataset104_HippocampusAniso");
    let one = run("nn-fingerprint", &[&dataset, &"-j", &"1"]);
    let two = run("nn-fingerprint", &[&dataset, &"-j", &"2"]);
    assert!(one.status.success());
    assert_eq!(one.stdout, two.stdout, "output must not depend on the thread count");
}
