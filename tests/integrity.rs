//! Integrity failures of nn-fingerprint, each on a corrupted copy of real Hippocampus cases: one line
//! per problem naming the file, exit code 2, no panic, and no output file.

use nntools_io::{read_image, read_label_map, write_like};
use nntools_tests::{run, shared, stderr};
use std::path::{Path, PathBuf};
use std::process::Output;

const CASES: [&str; 3] = ["hippocampus_001", "hippocampus_003", "hippocampus_004"];

/// A raw dataset of three real cases in a temporary folder.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Option<Self> {
        let source = shared()?.join("data/Dataset004_Hippocampus");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Dataset004_Hippocampus");
        for sub in ["imagesTr", "labelsTr"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for case in CASES {
            for file in [format!("imagesTr/{case}_0000.nii.gz"), format!("labelsTr/{case}.nii.gz")] {
                std::fs::copy(source.join(&file), root.join(&file)).unwrap();
            }
        }
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(source.join("dataset.json")).unwrap()).unwrap();
        json["numTraining"] = CASES.len().into();
        std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
        Some(Self { _dir: dir, root })
    }

    fn image(&self, case: &str) -> PathBuf {
        self.root.join(format!("imagesTr/{case}_0000.nii.gz"))
    }

    fn label(&self, case: &str) -> PathBuf {
        self.root.join(format!("labelsTr/{case}.nii.gz"))
    }

    /// Runs nn-fingerprint with `-o` into the fixture and checks that a failure leaves no output.
    fn fingerprint(&self) -> Output {
        let out = self.root.join("fingerprint.json");
        let output = run("nn-fingerprint", &[&self.root, &"-o", &out]);
        assert!(!stderr(&output).contains("panicked"), "panic: {}", stderr(&output));
        assert_eq!(out.exists(), output.status.success(), "an output file exactly when it succeeds");
        let leftovers: Vec<_> = std::fs::read_dir(&self.root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".nntmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
        output
    }
}

/// Asserts exit code 2 and one error line naming `file` and containing `problem`.
fn assert_bad_input(output: &Output, file: &Path, problem: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "exit code; stderr: {err}");
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(
        err.lines().any(|l| l.starts_with("nn-fingerprint: error: ") && l.contains(&*name) && l.contains(problem)),
        "expected an error line naming {name} with {problem:?}, got:\n{err}"
    );
}

#[test]
fn intact_copy_passes() {
    let Some(f) = Fixture::new() else { return };
    let output = f.fingerprint();
    assert!(output.status.success(), "{}", stderr(&output));
    let verify = run("nn-fingerprint", &[&f.root, &"--verify-only"]);
    assert!(verify.status.success() && verify.stdout.is_empty(), "verify-only writes nothing");
}

#[test]
fn missing_channel_file() {
    let Some(f) = Fixture::new() else { return };
    std::fs::remove_file(f.image("hippocampus_003")).unwrap();
    // the case is still known from nothing else, so put a second channel's worth of evidence back:
    // dataset.json declaring two channels makes channel 0001 missing for every case
    let json = std::fs::read_to_string(f.root.join("dataset.json")).unwrap();
    std::fs::write(f.root.join("dataset.json"), json.replace(r#""0":"MRI""#, r#""0":"MRI","1":"T2""#)).unwrap();
    let output = f.fingerprint();
    assert_bad_input(&output, &f.root.join("imagesTr/hippocampus_001_0001.nii.gz"), "missing image file");
    // hippocampus_003 lost its only file, so it is no longer a case: numTraining no longer matches
    assert_bad_input(&output, &f.root.join("dataset.json"), "numTraining is 3 but 2");
}

#[test]
fn missing_label_file() {
    let Some(f) = Fixture::new() else { return };
    std::fs::remove_file(f.label("hippocampus_004")).unwrap();
    assert_bad_input(&f.fingerprint(), &f.label("hippocampus_004"), "missing label file");
}

#[test]
fn image_and_label_shapes_differ() {
    let Some(f) = Fixture::new() else { return };
    // hippocampus_001 is 35x51x35, hippocampus_003 is 35x52x34
    std::fs::copy(f.label("hippocampus_003"), f.label("hippocampus_001")).unwrap();
    assert_bad_input(&f.fingerprint(), &f.label("hippocampus_001"), "shape [35, 52, 34] differs");
}

#[test]
fn image_and_label_spacings_differ() {
    let Some(f) = Fixture::new() else { return };
    let label = read_label_map(&f.label("hippocampus_001")).unwrap();
    let mut header = label.stored.nifti_header.as_ref().unwrap().clone();
    header.pixdim[3] = 1.5;
    header.srow_z[2] = 1.5;
    write_like(&f.label("hippocampus_001"), label.data.mapv(|v| v as u8).view(), &header).unwrap();
    assert_bad_input(&f.fingerprint(), &f.label("hippocampus_001"), "spacing [1.5, 1.0, 1.0] differs");
}

#[test]
fn nan_and_infinite_voxels() {
    let Some(f) = Fixture::new() else { return };
    let mut image = read_image(&f.image("hippocampus_004")).unwrap();
    image.data[[3, 4, 5]] = f32::NAN;
    image.data[[6, 7, 8]] = f32::INFINITY;
    write_like(&f.image("hippocampus_004"), image.data.view(), image.stored.nifti_header.as_ref().unwrap()).unwrap();
    assert_bad_input(&f.fingerprint(), &f.image("hippocampus_004"), "2 voxel(s) are NaN or infinite");
}

#[test]
fn undeclared_label_values() {
    let Some(f) = Fixture::new() else { return };
    let label = read_label_map(&f.label("hippocampus_003")).unwrap();
    let mut data = label.data.mapv(|v| v as u8);
    data[[0, 0, 0]] = 7;
    write_like(&f.label("hippocampus_003"), data.view(), label.stored.nifti_header.as_ref().unwrap()).unwrap();
    assert_bad_input(&f.fingerprint(), &f.label("hippocampus_003"), "label values [7] are not declared");
}

#[test]
fn fractional_label_values() {
    let Some(f) = Fixture::new() else { return };
    let label = read_label_map(&f.label("hippocampus_003")).unwrap();
    let mut data = label.data.mapv(|v| v as f32);
    data[[1, 1, 1]] = 0.5;
    write_like(&f.label("hippocampus_003"), data.view(), label.stored.nifti_header.as_ref().unwrap()).unwrap();
    assert_bad_input(&f.fingerprint(), &f.label("hippocampus_003"), "non-integer value (0.5)");
}

#[test]
fn num_training_mismatch() {
    let Some(f) = Fixture::new() else { return };
    let json = std::fs::read_to_string(f.root.join("dataset.json")).unwrap();
    std::fs::write(f.root.join("dataset.json"), json.replace(r#""numTraining":3"#, r#""numTraining":4"#)).unwrap();
    assert_bad_input(&f.fingerprint(), &f.root.join("dataset.json"), "numTraining is 4 but 3");
}

#[test]
fn truncated_gzip_is_an_error_not_a_panic() {
    let Some(f) = Fixture::new() else { return };
    let bytes = std::fs::read(f.image("hippocampus_001")).unwrap();
    std::fs::write(f.image("hippocampus_001"), &bytes[..bytes.len() / 2]).unwrap();
    assert_bad_input(&f.fingerprint(), &f.image("hippocampus_001"), "corrupt or truncated gzip stream");
}

#[test]
fn unreadable_file_is_reported() {
    let Some(f) = Fixture::new() else { return };
    std::fs::write(f.label("hippocampus_001"), b"this is not a NIfTI file").unwrap();
    assert_bad_input(&f.fingerprint(), &f.label("hippocampus_001"), "truncated NIfTI header");
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let Some(f) = Fixture::new() else { return };
    std::fs::remove_file(f.label("hippocampus_004")).unwrap();
    std::fs::copy(f.label("hippocampus_003"), f.label("hippocampus_001")).unwrap();
    let output = f.fingerprint();
    assert_bad_input(&output, &f.label("hippocampus_004"), "missing label file");
    assert_bad_input(&output, &f.label("hippocampus_001"), "shape");
}

#[test]
fn origin_mismatch_is_only_a_warning() {
    let Some(f) = Fixture::new() else { return };
    let label = read_label_map(&f.label("hippocampus_001")).unwrap();
    let mut header = label.stored.nifti_header.as_ref().unwrap().clone();
    header.srow_x[3] += 5.0;
    header.quatern_x += 5.0;
    write_like(&f.label("hippocampus_001"), label.data.mapv(|v| v as u8).view(), &header).unwrap();
    let output = f.fingerprint();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("warning") && stderr(&output).contains("origin"), "{}", stderr(&output));
}
