//! nn-resample against nnU-Net v2.8.1's preprocessed cases in ../shared/reference (3d_fullres and 2d
//! of Dataset004, Dataset104 with anisotropic spacings, Dataset005 with two channels, Dataset006 CT).

use nntools_tests::reference::assert_preprocessed_matches;
use nntools_tests::shared;

fn compare(dataset: &str, configuration: &str) {
    let Some(shared) = shared() else { return };
    let reference = shared.join("reference").join(dataset);
    let dir = tempfile::tempdir().unwrap();
    assert_preprocessed_matches(
        &reference.join("nnUNetPlans.json"),
        configuration,
        &shared.join("data").join(dataset),
        &reference.join(format!("nnUNetPlans_{configuration}")),
        dir.path(),
        dataset,
    );
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
