//! scripts/gpu-check.sh rehearsed on the CPU with a small synthetic dataset: the script that a lent GPU
//! machine runs once per session must not be the first to find its own mistakes. Packs, runs every
//! stage (preprocessing, calibration, training, evaluation, inference, the CPU comparison) and checks
//! the report.

use nntools_tests::{binaries_dir, run, stderr, workspace};
use serde_json::Value;
use std::process::Command;

#[test]
fn gpu_check_rehearses_on_the_cpu_and_reports_every_figure() {
    let scratch = tempfile::tempdir().unwrap();
    let raw = scratch.path().join("raw");
    let output =
        run("nn-synth", &[&"-o", &raw, &"--cases", &"10", &"--min-size", &"20", &"--max-size", &"24", &"--seed", &"3"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (stage, work, out) = (scratch.path().join("stage"), scratch.path().join("work"), scratch.path().join("out"));
    let script = |verb: &str, device: &str| {
        Command::new(workspace().join("scripts/gpu-check.sh"))
            .arg(verb)
            .env("GPU_CHECK_DATA", &raw)
            .env("GPU_CHECK_STAGE", &stage)
            .env("GPU_CHECK_WORK", &work)
            .env("NN_TOOLS_BIN", binaries_dir())
            .env("OUT", &out)
            .env("GPU_CHECK_DEVICE", device)
            .env("GPU_CHECK_ITERS", "2")
            .env("GPU_CHECK_TRAIN_SECONDS", "1")
            .env("GPU_CHECK_CPU_CASES", "1")
            .output()
            .unwrap()
    };
    let read_report =
        || -> Value { serde_json::from_str(&std::fs::read_to_string(out.join("gpu-check.json")).unwrap()).unwrap() };
    let unstaged = script("run", "cpu");
    assert_eq!(unstaged.status.code(), Some(2), "run before pack is refused");
    assert!(String::from_utf8_lossy(&unstaged.stderr).contains("not staged"));
    let packed = script("pack", "cpu");
    assert!(packed.status.success(), "{}", String::from_utf8_lossy(&packed.stderr));

    // a failing stage still leaves a report of what was measured, naming the stage: here a device this
    // machine does not have fails the calibration, after the preprocessing was timed
    let failed = script("run", "cuda:7");
    assert!(!failed.status.success());
    let report = read_report();
    assert!(report["failed_at"].as_str().unwrap().starts_with("calibration"), "{report}");
    assert!(report["preprocessing_s"].as_f64().unwrap() > 0.0);
    assert!(report["validation"].is_null() && report["epoch_s"].is_null());

    let output = script("run", "cpu");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_report();
    assert_eq!(report["device"], "cpu");
    assert!(report["failed_at"].is_null(), "{report}");
    assert_eq!(report["iterations_per_epoch"], 2);
    // as many epochs as the calibration epoch says fit into the budget, at least one
    let calibration = report["calibration_epoch_s"].as_f64().unwrap();
    assert_eq!(report["epochs_planned"].as_f64().unwrap(), (1.0 / calibration).floor().max(1.0));
    assert_eq!(report["epochs"], report["epochs_planned"]);
    assert!(report["epoch_s"]["first"].as_f64().unwrap() > 0.0);
    // 10 cases in 5 folds: fold 0 validates 2, and both are predicted again by nn-infer
    assert_eq!(report["validation"]["cases"], 2);
    assert_eq!(report["inference_tta"]["cases"], 2);
    assert!(report["inference_tta"]["cases_per_s"].as_f64().unwrap() > 0.0);
    let dice = report["validation"]["mean_dice"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&dice), "{dice}");
    // the same weights predicted twice on the CPU agree on every voxel
    assert_eq!(report["smoke_cpu_agreement"]["fraction"], 1.0);
    let agreement = &report["cpu_agreement"];
    assert_eq!(agreement["cases"], 1);
    assert!(agreement["voxels"].as_u64().unwrap() >= 20 * 20 * 20);
    assert_eq!(agreement["equal_voxels"], agreement["voxels"]);
    // no nvidia-smi here: no GPU samples
    assert_eq!(report["gpu"], serde_json::json!({}));
    assert!(out.join("gpu-check.log").is_file());
}
