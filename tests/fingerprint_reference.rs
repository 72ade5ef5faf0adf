//! nn-fingerprint against nnU-Net v2.8.1's dataset_fingerprint.json for every data set in ../shared.
//!
//! Foreground intensities are sampled with nnU-Net's own generator, so the statistics agree to float32
//! summation order (about 1e-7), far inside the 2% the sampling would otherwise allow; they are held
//! to 1e-5 here so that a change of sampling shows up.

use nntools_tests::reference::assert_fingerprint_matches;
use nntools_tests::{json_stdout, read_json, run, shared};

fn compare_with_reference(dataset: &str) {
    let Some(shared) = shared() else { return };
    let ours = json_stdout(&run("nn-fingerprint", &[&shared.join("data").join(dataset), &"-q"]));
    let reference = read_json(&shared.join("reference").join(dataset).join("dataset_fingerprint.json"));
    assert_fingerprint_matches(&ours, &reference, dataset);
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
