//! Valid but extreme plans and options whose arrays cannot fit (issue 24's tiny target spacing, batch
//! of 100000 and sliding-window step of 1e-6): refused before anything is allocated, with one line
//! naming the file and the size (the step: the flag and why), exit 2, and no output; `--max-memory-gb`
//! sets the budget.

use super::{Scratch, one_iteration_training, prediction};
use nntools_tests::{binary, run, stderr};
use std::path::Path;

/// The scratch copy's plans with `edit` applied to its 3d_fullres configuration.
fn edit_plans(scratch: &Scratch, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let path = scratch.path("plans.json");
    let mut plans: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut plans["configurations"]["3d_fullres"]);
    std::fs::write(&path, serde_json::to_string(&plans).unwrap()).unwrap();
    path
}

/// Exit 2 with one line that holds every part of `expected`, and nothing at `output`.
fn assert_refused_before_work(what: &str, output: &std::process::Output, expected: &[&str], out: &Path) {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{what}: {message}");
    assert_eq!(message.lines().count(), 1, "{what}: {message}");
    assert!(expected.iter().all(|e| message.contains(e)), "{what}: {message}");
    assert!(!out.exists(), "{what}: {} was left behind", out.display());
}

#[test]
fn a_tiny_target_spacing_is_refused_before_resampling() {
    let scratch = Scratch::new();
    let plans = edit_plans(&scratch, |c| c["spacing"] = serde_json::json!([1e-3, 1e-3, 1e-3]));
    let out = scratch.path("pre_tiny_spacing");
    let output =
        run("nn-resample", &[&"--plans", &plans, &"-c", &"3d_fullres", &"-i", &scratch.path("raw"), &"-o", &out]);
    assert_refused_before_work("spacing 1e-3", &output, &["_0000.nii.gz: resampled from", "would need"], &out);

    // the valid plans within a budget too small for any case, and a budget that is no number of GB
    let plans = edit_plans(&scratch, |c| c["spacing"] = serde_json::json!([1.0, 1.0, 1.0]));
    for (budget, message) in [("0.000001", "more than the 0.0 GB allowed"), ("0", "must be a positive number")] {
        let output = run(
            "nn-resample",
            &[
                &"--plans",
                &plans,
                &"-c",
                &"3d_fullres",
                &"-i",
                &scratch.path("raw"),
                &"-o",
                &out,
                &"--max-memory-gb",
                &budget,
            ],
        );
        assert_refused_before_work(budget, &output, &[message], &out);
    }
}

#[test]
fn a_batch_that_cannot_fit_is_refused_before_the_run_folder_is_made() {
    let scratch = Scratch::new();
    edit_plans(&scratch, |c| c["batch_size"] = serde_json::json!(100000));
    let out = scratch.path("run_huge_batch");
    let training = one_iteration_training(&scratch, "0", &out, &[]);
    let output = std::process::Command::new(binary("nn-train")).args(training).output().unwrap();
    assert_refused_before_work(
        "batch 100000",
        &output,
        &["plans.json: 3d_fullres: a training batch of 100000 patches", "would need"],
        &out,
    );
}

#[test]
fn a_step_below_one_voxel_and_a_window_beyond_the_budget_are_refused_before_predicting() {
    let scratch = Scratch::new();
    let out = scratch.path("predictions");
    let infer = |extra: &[&str]| {
        let arguments = prediction(&scratch, &scratch.path("raw/imagesTs"), &out, extra);
        std::process::Command::new(binary("nn-infer")).args(arguments).output().unwrap()
    };
    // nnU-Net would predict some 10^5 to 10^18 tiles, most of them again at one position
    let output = infer(&["--step", "1e-6"]);
    assert_refused_before_work(
        "step 1e-6",
        &output,
        &["--step: 0.000001 moves the patch", "less than one voxel"],
        &out,
    );
    let output = infer(&["--max-memory-gb", "0.000001"]);
    assert_refused_before_work("a budget of 1 kB", &output, &["would need", "more than the 0.0 GB allowed"], &out);
}
