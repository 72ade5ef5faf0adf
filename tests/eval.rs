//! nn-eval against nnU-Net v2.8.1's own summary.json on ../shared/reference/eval (perturbed Hippocampus
//! predictions, some classes empty so that Dice is NaN), and its refusal of mismatched geometry.

use nntools_tests::{run, shared, stderr};
use serde_json::Value;
use std::path::Path;

/// summary.json with Python's `NaN` read as null.
fn read_summary(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap().replace("NaN", "null")).unwrap()
}

fn assert_same(ours: &Value, theirs: &Value, path: &str) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            // ours may add the surface metrics
            let ours: Vec<&String> = a.keys().filter(|k| !matches!(k.as_str(), "HD95" | "NSD")).collect();
            assert_eq!(ours, b.keys().collect::<Vec<_>>(), "{path}: keys");
            for (key, value) in b {
                assert_same(&a[key], value, &format!("{path}/{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same(x, y, &format!("{path}[{i}]"));
            }
        }
        // file paths: ours are as given on the command line, theirs relative to where nnU-Net ran
        (Value::String(a), Value::String(b)) => {
            assert_eq!(Path::new(a).file_name(), Path::new(b).file_name(), "{path}")
        }
        (Value::Null, Value::Null) => {}
        (a, b) => {
            let (x, y) = (a.as_f64().unwrap_or_else(|| panic!("{path}: {a} for {b}")), b.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-6, "{path}: {x} vs nnU-Net's {y}");
        }
    }
}

#[test]
fn summary_matches_nnunet() {
    let Some(shared) = shared() else { return };
    let eval = shared.join("reference/eval");
    let out = tempfile::tempdir().unwrap();
    let summary = out.path().join("summary.json");
    let output = run(
        "nn-eval",
        &[
            &"--ref",
            &eval.join("ref"),
            &"--pred",
            &eval.join("pred"),
            &"--dataset",
            &eval.join("dataset.json"),
            &"-o",
            &summary,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let ours = read_summary(&summary);
    let theirs = read_summary(&eval.join("summary.json"));
    assert_same(&ours, &theirs, "");
    let nan_cases = theirs["metric_per_case"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["metrics"]["1"]["Dice"].is_null() || c["metrics"]["2"]["Dice"].is_null())
        .count();
    assert!(nan_cases > 0, "the reference exercises NaN Dice");
    // surface metrics on by default: identical masks have HD95 0 and NSD 1, empty ones NaN
    for case in ours["metric_per_case"].as_array().unwrap() {
        for metrics in case["metrics"].as_object().unwrap().values() {
            let (dice, hd95, nsd) = (metrics["Dice"].as_f64(), metrics["HD95"].as_f64(), metrics["NSD"].as_f64());
            match dice {
                None => assert!(hd95.is_none() && nsd.is_none(), "{metrics}"),
                Some(1.0) => assert_eq!((hd95, nsd), (Some(0.0), Some(1.0)), "{metrics}"),
                Some(_) => assert!(nsd.is_some_and(|n| (0.0..=1.0).contains(&n)), "{metrics}"),
            }
        }
    }
}

#[test]
fn mismatched_geometry_and_missing_predictions_are_refused() {
    let Some(shared) = shared() else { return };
    let eval = shared.join("reference/eval");
    let dir = tempfile::tempdir().unwrap();
    let (reference, prediction) = (dir.path().join("ref"), dir.path().join("pred"));
    std::fs::create_dir_all(&reference).unwrap();
    std::fs::create_dir_all(&prediction).unwrap();
    for case in ["hippocampus_001", "hippocampus_003"] {
        std::fs::copy(eval.join(format!("ref/{case}.nii.gz")), reference.join(format!("{case}.nii.gz"))).unwrap();
    }
    // a prediction of another case: another shape
    std::fs::copy(eval.join("pred/hippocampus_004.nii.gz"), prediction.join("hippocampus_001.nii.gz")).unwrap();
    let summary = dir.path().join("summary.json");
    let args: [&dyn AsRef<std::ffi::OsStr>; 8] =
        [&"--ref", &reference, &"--pred", &prediction, &"--dataset", &eval.join("dataset.json"), &"-o", &summary];
    let output = run("nn-eval", &args);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("hippocampus_003") && message.contains("no prediction"), "{message}");
    std::fs::copy(eval.join("pred/hippocampus_003.nii.gz"), prediction.join("hippocampus_003.nii.gz")).unwrap();
    let output = run("nn-eval", &args);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("pred/hippocampus_001.nii.gz") && message.contains("ref/hippocampus_001.nii.gz"),
        "{message}"
    );
    assert!(!summary.exists(), "no summary on bad input");
}

/// nnU-Net's `nnUNetv2_determine_postprocessing` on these predictions (run once with nnU-Net 2.8.1):
/// the whole-foreground step is rejected, both per-class steps are kept, and the foreground Dice goes
/// from 0.6189949151695564 to 0.6531011120329899. `nn-ensemble select` must decide the same.
#[test]
fn select_decides_postprocessing_as_nnunet() {
    let Some(shared) = shared() else { return };
    let eval = shared.join("reference/eval");
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::copy(eval.join("dataset.json"), run_dir.join("dataset.json")).unwrap();
    std::fs::copy(shared.join("reference/Dataset004_Hippocampus/nnUNetPlans.json"), run_dir.join("plans.json"))
        .unwrap();
    let mut cases: Vec<String> = std::fs::read_dir(eval.join("pred"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".nii.gz").map(str::to_owned))
        .collect();
    cases.sort();
    // the predictions as the validation of a five-fold run, with one-hot probabilities
    for fold in 0..5 {
        let fold_cases: Vec<&String> = cases.iter().skip(fold).step_by(5).collect();
        let validation = run_dir.join(format!("fold_{fold}/validation"));
        std::fs::create_dir_all(&validation).unwrap();
        let settings =
            serde_json::json!({"configuration": "3d_fullres", "fold": fold.to_string(), "val_cases": fold_cases});
        std::fs::write(run_dir.join(format!("fold_{fold}/settings.json")), settings.to_string()).unwrap();
        for case in fold_cases {
            let source = eval.join("pred").join(format!("{case}.nii.gz"));
            std::fs::copy(&source, validation.join(format!("{case}.nii.gz"))).unwrap();
            let labels = nntools_io::read_label_map(&source).unwrap().data;
            let (z, y, x) = labels.dim();
            let one_hot =
                ndarray::Array4::from_shape_fn((3, z, y, x), |(c, z, y, x)| f32::from(labels[[z, y, x]] == c as i32));
            nntools_io::write_npz(&validation.join(format!("{case}.npz")), "probabilities", &one_hot).unwrap();
        }
    }
    let plan_path = dir.path().join("plan.json");
    let output = run("nn-ensemble", &[&"select", &"--runs", &run_dir, &"--ref", &eval.join("ref"), &"-o", &plan_path]);
    assert!(output.status.success(), "{}", stderr(&output));
    let plan = read_summary(&plan_path);
    assert_eq!(
        plan["postprocessing"],
        serde_json::json!([{"keep_largest_component_of": [1]}, {"keep_largest_component_of": [2]}])
    );
    let before = plan["foreground_dice_before_postprocessing"].as_f64().unwrap();
    let after = plan["foreground_dice_after_postprocessing"].as_f64().unwrap();
    assert!((before - 0.6189949151695564).abs() < 1e-12, "{before}");
    assert!((after - 0.6531011120329899).abs() < 1e-12, "{after}");
}

#[test]
fn overlays_are_drawn() {
    let Some(shared) = shared() else { return };
    let infer = shared.join("reference/infer");
    let dir = tempfile::tempdir().unwrap();
    let (reference, overlays) = (dir.path().join("ref"), dir.path().join("overlays"));
    std::fs::create_dir_all(&reference).unwrap();
    // the reference model's predictions against themselves, over their images
    std::fs::copy(infer.join("pred_tta/hippocampus_017.nii.gz"), reference.join("hippocampus_017.nii.gz")).unwrap();
    let output = run(
        "nn-eval",
        &[
            &"--ref",
            &reference,
            &"--pred",
            &reference,
            &"--dataset",
            &shared.join("reference/eval/dataset.json"),
            &"-o",
            &dir.path().join("s.json"),
            &"--overlays",
            &overlays,
            &"--images",
            &infer.join("images"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let png = std::fs::read(overlays.join("hippocampus_017.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n") && png.len() > 2_000);
}
