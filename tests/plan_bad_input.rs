//! nn-plan on broken inputs: one error line naming the file, exit code 2, no output file.

use nntools_tests::{run, stderr};
use serde_json::{Value, json};
use std::path::Path;

fn fingerprint() -> Value {
    let stats = json!({"max": 10.0, "mean": 5.0, "median": 5.0, "min": 0.0,
                       "percentile_00_5": 0.1, "percentile_99_5": 9.9, "std": 2.0});
    json!({
        "foreground_intensity_properties_per_channel": {"0": stats},
        "median_relative_size_after_cropping": 1.0,
        "shapes_after_crop": [[30, 40, 50], [32, 40, 48]],
        "spacings": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    })
}

fn dataset_json() -> Value {
    json!({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1}, "numTraining": 2,
           "file_ending": ".nii.gz"})
}

/// Runs nn-plan on the given documents and returns (exit code, stderr, whether -o was written).
fn plan(dir: &Path, fingerprint: &Value, dataset: &Value) -> (Option<i32>, String, bool) {
    let (f, d, out) = (dir.join("fingerprint.json"), dir.join("dataset.json"), dir.join("plans.json"));
    std::fs::write(&f, fingerprint.to_string()).unwrap();
    std::fs::write(&d, dataset.to_string()).unwrap();
    let _ = std::fs::remove_file(&out);
    let output = run("nn-plan", &[&"--fingerprint", &f, &"--dataset", &d, &"-o", &out]);
    (output.status.code(), stderr(&output), out.exists())
}

fn assert_rejected(dir: &Path, fingerprint: &Value, dataset: &Value, file: &str, problem: &str) {
    let (code, err, written) = plan(dir, fingerprint, dataset);
    assert_eq!(code, Some(2), "{err}");
    assert!(!written, "no output on failure");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(file) && err.contains(problem), "expected {file} and {problem:?} in: {err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn valid_inputs_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err, written) = plan(dir.path(), &fingerprint(), &dataset_json());
    assert_eq!(code, Some(0), "{err}");
    assert!(written);
}

#[test]
fn broken_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut missing = fingerprint();
    missing.as_object_mut().unwrap().remove("spacings");
    assert_rejected(d, &missing, &dataset_json(), "fingerprint.json", "missing field `spacings`");

    let mut lengths = fingerprint();
    lengths["spacings"] = json!([[1.0, 1.0, 1.0]]);
    assert_rejected(d, &lengths, &dataset_json(), "fingerprint.json", "1 spacings but 2 shapes_after_crop");

    let mut zero = fingerprint();
    zero["spacings"][1] = json!([1.0, 0.0, 1.0]);
    assert_rejected(d, &zero, &dataset_json(), "fingerprint.json", "spacing of case 1 is not positive");

    let mut negative = fingerprint();
    negative["spacings"][0] = json!([-1.0, 1.0, 1.0]);
    assert_rejected(d, &negative, &dataset_json(), "fingerprint.json", "not positive");

    let mut two_d = fingerprint();
    two_d["spacings"][0] = json!([1.0, 1.0]);
    assert_rejected(d, &two_d, &dataset_json(), "fingerprint.json", "invalid JSON");

    let mut channels = dataset_json();
    channels["channel_names"] = json!({"0": "T1", "1": "T2"});
    assert_rejected(d, &fingerprint(), &channels, "fingerprint.json", "dataset.json declares 2");
}

#[test]
fn broken_dataset_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut no_labels = dataset_json();
    no_labels["labels"] = json!({"background": 0});
    assert_rejected(dir.path(), &fingerprint(), &no_labels, "dataset.json", "no foreground label");
    let (_, err, _) = plan(dir.path(), &fingerprint(), &no_labels);
    assert!(!err.contains("fingerprint.json"), "the fingerprint is not at fault: {err}");
    let mut no_ending = dataset_json();
    no_ending.as_object_mut().unwrap().remove("file_ending");
    assert_rejected(dir.path(), &fingerprint(), &no_ending, "dataset.json", "file_ending");
}

#[test]
fn non_positive_gpu_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (f, d) = (dir.path().join("f.json"), dir.path().join("dataset.json"));
    std::fs::write(&f, fingerprint().to_string()).unwrap();
    std::fs::write(&d, dataset_json().to_string()).unwrap();
    let output = run("nn-plan", &[&"--fingerprint", &f, &"--dataset", &d, &"--gpu-memory-gb", &"0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("GPU memory must be positive"));
}
