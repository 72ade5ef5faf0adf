//! nn-plan against nnU-Net v2.8.1's nnUNetPlans.json for every data set in ../shared/reference: the
//! whole file (every key nnU-Net writes, every value; spacings to 1e-6 relative), from nnU-Net's own
//! fingerprint and from ours piped in.

use nntools_tests::reference::assert_plans_match;
use nntools_tests::{assert_json_matches, json_stdout, read_json, run, shared};
use std::io::Write;
use std::process::{Command, Stdio};

fn compare_with_reference(dataset: &str) {
    let Some(shared) = shared() else { return };
    let reference_dir = shared.join("reference").join(dataset);
    let raw = shared.join("data").join(dataset);
    let ours = json_stdout(&run(
        "nn-plan",
        &[&"--fingerprint", &reference_dir.join("dataset_fingerprint.json"), &"--dataset", &raw.join("dataset.json")],
    ));
    let reference = read_json(&reference_dir.join("nnUNetPlans.json"));
    assert_plans_match(&ours, &reference, dataset);
}

#[test]
fn hippocampus() {
    compare_with_reference("Dataset004_Hippocampus");
}

#[test]
fn hippocampus_anisotropic() {
    compare_with_reference("Dataset104_HippocampusAniso");
}

#[test]
fn brats_two_channels() {
    compare_with_reference("Dataset005_BraTS2013mini");
}

#[test]
fn ct() {
    compare_with_reference("Dataset006_TotalSegCTmini");
}

#[test]
fn fingerprint_piped_into_plan() {
    let Some(shared) = shared() else { return };
    let raw = shared.join("data/Dataset104_HippocampusAniso");
    let fingerprint = run("nn-fingerprint", &[&raw]);
    assert!(fingerprint.status.success());
    let mut child = Command::new(nntools_tests::binary("nn-plan"))
        .args(["--fingerprint", "-", "--dataset"])
        .arg(&raw)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&fingerprint.stdout).unwrap();
    let plans = json_stdout(&child.wait_with_output().unwrap());
    let reference = read_json(&shared.join("reference/Dataset104_HippocampusAniso/nnUNetPlans.json"));
    assert_json_matches(&plans, &reference, 1e-6, "piped");
}
