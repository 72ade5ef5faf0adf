//! nn-plan against plans that nnU-Net v2.8.1's planners produced on hand-made fingerprints
//! (tests/fixtures/nnunet_plans, see its README): anisotropy on the first and the last axis, a dataset
//! that needs 3d_lowres and the cascade, a 2D-only dataset, mixed CT/MRI channels, a tiny dataset
//! (batch cap), every ResEnc preset and a non-default GPU memory target. These need no ../shared.

use nntools_tests::{assert_json_matches, json_stdout, read_json, run, workspace};

/// Plans files in a fixture folder and the nn-plan flags that should reproduce each.
const PLANNERS: [(&str, &[&str]); 5] = [
    ("nnUNetPlans.json", &[]),
    ("nnUNetPlans_gpu4.json", &["--gpu-memory-gb", "4"]),
    ("nnUNetResEncUNetMPlans.json", &["--planner", "resenc-m"]),
    ("nnUNetResEncUNetLPlans.json", &["--planner", "resenc-l"]),
    ("nnUNetResEncUNetXLPlans.json", &["--planner", "resenc-xl"]),
];

fn check_scenario(scenario: &str) -> usize {
    let dir = workspace().join("tests/fixtures/nnunet_plans").join(scenario);
    assert!(dir.is_dir(), "{} is missing", dir.display());
    let mut checked = 0;
    for (file, flags) in PLANNERS {
        let expected_path = dir.join(file);
        if !expected_path.is_file() {
            continue;
        }
        let fingerprint = dir.join("dataset_fingerprint.json");
        let dataset = dir.join("dataset.json");
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"--fingerprint", &fingerprint, &"--dataset", &dataset, &"-q"];
        args.extend(flags.iter().map(|f| f as &dyn AsRef<std::ffi::OsStr>));
        let ours = json_stdout(&run("nn-plan", &args));
        let mut expected = read_json(&expected_path);
        // the dataset name comes from the folder; nnU-Net's came from its scratch dataset id
        expected["dataset_name"] = ours["dataset_name"].clone();
        assert_json_matches(&ours, &expected, 1e-6, &format!("{scenario}/{file}"));
        let names =
            |v: &serde_json::Value| v["configurations"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&ours), names(&expected), "{scenario}/{file}: configurations");
        checked += 1;
    }
    checked
}

fn scenarios() -> Vec<String> {
    let root = workspace().join("tests/fixtures/nnunet_plans");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("dataset_fingerprint.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_fixture_plan_matches_nnunet() {
    let scenarios = scenarios();
    assert_eq!(scenarios.len(), 8, "fixtures: {scenarios:?}");
    let checked: usize = scenarios.iter().map(|s| check_scenario(s)).sum();
    assert_eq!(checked, 19, "plans files compared");
}

#[test]
fn cascade_is_planned_for_large_ct() {
    let dir = workspace().join("tests/fixtures/nnunet_plans/ct_lowres_cascade");
    let plans = json_stdout(&run(
        "nn-plan",
        &[&"--fingerprint", &dir.join("dataset_fingerprint.json"), &"--dataset", &dir.join("dataset.json")],
    ));
    let configurations = &plans["configurations"];
    assert_eq!(configurations["3d_lowres"]["next_stage"], "3d_cascade_fullres");
    assert_eq!(configurations["3d_cascade_fullres"]["inherits_from"], "3d_fullres");
    assert_eq!(configurations["3d_cascade_fullres"]["previous_stage"], "3d_lowres");
    assert_eq!(configurations["3d_fullres"]["batch_dice"], true, "fullres uses batch dice when lowres exists");
    assert_eq!(configurations["3d_lowres"]["batch_dice"], false);
    let lowres: Vec<f64> = serde_json::from_value(configurations["3d_lowres"]["spacing"].clone()).unwrap();
    let fullres: Vec<f64> = serde_json::from_value(configurations["3d_fullres"]["spacing"].clone()).unwrap();
    assert!(lowres.iter().zip(&fullres).all(|(l, f)| l >= f), "lowres is coarser");
}

#[test]
fn natural_2d_images_get_only_a_2d_configuration() {
    let dir = workspace().join("tests/fixtures/nnunet_plans/natural_2d");
    let plans = json_stdout(&run(
        "nn-plan",
        &[&"--fingerprint", &dir.join("dataset_fingerprint.json"), &"--dataset", &dir.join("dataset.json")],
    ));
    let names: Vec<&String> = plans["configurations"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["2d"]);
}
