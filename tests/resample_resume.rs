//! nn-resample is resumable and crash safe: a run killed with SIGKILL at any moment, then rerun, leaves
//! byte for byte what an uninterrupted run leaves; current cases are skipped; changed inputs are redone.
//! Runs on a synthetic dataset, so it needs no ../shared.

use nntools_tests::{SyntheticDataset, binary, run, stderr};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn setup(cases: usize) -> SyntheticDataset {
    SyntheticDataset::new(cases)
}

fn resample(s: &SyntheticDataset, out: &Path, extra: &[&str]) -> std::process::Output {
    s.resample("3d_fullres", out, extra)
}

fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn killed_runs_resume_to_identical_outputs() {
    let s = setup(24);
    let clean = s.dir.path().join("clean");
    let output = resample(&s, &clean, &["-q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = contents(&clean);
    assert_eq!(expected.len(), 24 * 4 + 1, "4 files per case and the manifest");

    let resumed = s.dir.path().join("resumed");
    let mut partial_runs = 0;
    // kill at increasing moments: the first as soon as any file appears, later ones further in
    for round in 0..4 {
        let mut child = Command::new(binary("nn-resample"))
            .args(["--plans".as_ref(), s.plans.as_os_str(), "-c".as_ref(), "3d_fullres".as_ref()])
            .args([
                "-i".as_ref(),
                s.raw.as_os_str(),
                "-o".as_ref(),
                resumed.as_os_str(),
                "-q".as_ref(),
                "-j".as_ref(),
                "1".as_ref(),
            ])
            .spawn()
            .unwrap();
        let start = Instant::now();
        let wait = Duration::from_millis(20 * round);
        loop {
            let files = std::fs::read_dir(&resumed).map(|d| d.count()).unwrap_or(0);
            if (files > 0 && start.elapsed() >= wait) || start.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if !status.success() {
            partial_runs += 1;
        }
    }
    assert!(partial_runs > 0, "no run was interrupted; the dataset is too small to test this");
    let output = resample(&s, &resumed, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let got = contents(&resumed);
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "same files, no leftovers");
    for (name, bytes) in &expected {
        assert!(got[name] == *bytes, "{name} differs from the uninterrupted run");
    }
}

#[test]
fn current_cases_are_skipped_and_changed_inputs_redone() {
    let s = setup(4);
    let out = s.dir.path().join("out");
    assert!(resample(&s, &out, &[]).status.success());
    let again = resample(&s, &out, &[]);
    assert!(stderr(&again).contains("0 case(s) preprocessed, 4 already current"), "{}", stderr(&again));

    // rewriting one input (new mtime) makes that case stale, and only that one
    let image = s.raw.join("imagesTr/synth_002_0001.nii.gz");
    let bytes = std::fs::read(&image).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&image, bytes).unwrap();
    let after_touch = resample(&s, &out, &[]);
    assert!(stderr(&after_touch).contains("1 case(s) preprocessed, 3 already current"), "{}", stderr(&after_touch));

    // an array cut short (as a power loss can leave it) no longer matches the size CASE.json recorded
    let array = out.join("synth_001.npy");
    let bytes = std::fs::read(&array).unwrap();
    std::fs::write(&array, &bytes[..bytes.len() / 2]).unwrap();
    let after_truncation = resample(&s, &out, &[]);
    assert!(
        stderr(&after_truncation).contains("1 case(s) preprocessed, 3 already current"),
        "{}",
        stderr(&after_truncation)
    );
    assert_eq!(std::fs::read(&array).unwrap(), bytes);

    let forced = resample(&s, &out, &["--force"]);
    assert!(stderr(&forced).contains("4 case(s) preprocessed, 0 already current"), "{}", stderr(&forced));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["cases"].as_array().unwrap().len(), 4);
    assert_eq!(manifest["configuration"], "3d_fullres");
    assert_eq!(manifest["plans_sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn unlabelled_images_give_arrays_and_properties_only() {
    let s = setup(2);
    let images = s.dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for channel in ["0000", "0001"] {
        let name = format!("synth_000_{channel}.nii.gz");
        std::fs::copy(s.raw.join("imagesTr").join(&name), images.join(&name)).unwrap();
    }
    let out = s.dir.path().join("unlabelled");
    let args: [&dyn AsRef<std::ffi::OsStr>; 9] =
        [&"--plans", &s.plans, &"-c", &"3d_fullres", &"--images", &images, &"-o", &out, &"-q"];
    let output = run("nn-resample", &args);
    assert!(output.status.success(), "{}", stderr(&output));
    let names: Vec<String> = contents(&out).into_keys().collect();
    assert_eq!(names, ["manifest.json", "synth_000.json", "synth_000.npy"]);
    let labelled = s.dir.path().join("labelled");
    assert!(resample(&s, &labelled, &["-q"]).status.success());
    assert_eq!(
        std::fs::read(out.join("synth_000.npy")).unwrap(),
        std::fs::read(labelled.join("synth_000.npy")).unwrap(),
        "same image array with or without labels"
    );
}

#[test]
fn unknown_configuration_is_bad_input() {
    let s = setup(2);
    let output = resample(&s, &s.dir.path().join("x"), &[]);
    assert!(output.status.success());
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"--plans", &s.plans, &"-c", &"3d_lowres", &"-i", &s.raw, &"-o", &"unused"];
    args.push(&"-q");
    let bad = run("nn-resample", &args);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("no configuration \"3d_lowres\""), "{}", stderr(&bad));
    assert!(!Path::new("unused").exists());
}
