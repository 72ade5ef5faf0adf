//! nnU-Net's cascade end to end on CPU: a synthetic dataset planned for a small GPU gets 3d_lowres and
//! 3d_cascade_fullres; every 3d_lowres fold's validation writes its cases' labels on 3d_fullres's
//! grid, 3d_cascade_fullres trains and validates on them, and nn-infer predicts a test case through
//! both stages.

use nntools_io::read_label_map;
use nntools_preprocessing::read_label_map_npy;
use nntools_tests::{SyntheticDataset, binary, run, stderr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CASES: [&str; 4] = ["synth_000", "synth_001", "synth_002", "synth_003"];

struct Cascade {
    data: SyntheticDataset,
    lowres: PathBuf,
    fullres: PathBuf,
    splits: PathBuf,
}

/// Four small isotropic cases planned for 10 MB of GPU memory, so that the full-resolution patch
/// covers too little of the median image and nn-plan adds the cascade (patches of 16 x 14 x 14).
fn prepare() -> Cascade {
    let synth =
        ["--cases", "4", "--test-cases", "1", "--isotropic", "--min-size", "32", "--max-size", "40", "--seed", "5"];
    let data = SyntheticDataset::from_flags(&synth, &["--gpu-memory-gb", "0.01"]);
    let plans: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&data.plans).unwrap()).unwrap();
    assert_eq!(
        plans["configurations"]["3d_lowres"]["next_stage"], "3d_cascade_fullres",
        "the test needs a planned cascade"
    );
    let [lowres, fullres] = ["3d_lowres", "3d_fullres"].map(|c| data.dir.path().join(format!("pre_{c}")));
    for (configuration, out) in [("3d_lowres", &lowres), ("3d_fullres", &fullres)] {
        let output = data.resample(configuration, out, &["-q"]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    // two folds, so that two lowres runs cover every case
    let splits = data.dir.path().join("splits.json");
    let split = |train: &[&str], val: &[&str]| serde_json::json!({"train": train, "val": val});
    let folds = serde_json::json!([split(&CASES[..2], &CASES[2..]), split(&CASES[2..], &CASES[..2])]);
    std::fs::write(&splits, folds.to_string()).unwrap();
    Cascade { data, lowres, fullres, splits }
}

/// nn-train on one fold of `configuration` for a 2-iteration epoch, writing to `runs/CONFIGURATION`.
fn nn_train(c: &Cascade, configuration: &str, data: &Path, fold: &str) -> Command {
    let mut command = Command::new(binary("nn-train"));
    command
        .args([
            "--plans".as_ref(),
            c.data.plans.as_os_str(),
            "-c".as_ref(),
            configuration.as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
        ])
        .args([
            "--dataset".as_ref(),
            c.data.raw.join("dataset.json").as_os_str(),
            "--splits".as_ref(),
            c.splits.as_os_str(),
        ])
        .args(["--fold", fold, "--epochs", "1", "--iters", "2", "--val-iters", "1", "--device", "cpu", "-o"])
        .arg(c.data.dir.path().join("runs").join(configuration));
    command
}

fn train(c: &Cascade, configuration: &str, data: &Path, fold: &str, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    nn_train(c, configuration, data, fold).arg("-q").args(extra.iter().map(|a| a.as_ref())).output().unwrap()
}

#[test]
fn lowres_predictions_train_the_cascade_and_both_stages_predict() {
    let c = prepare();
    let runs = c.data.dir.path().join("runs");
    // a next-stage folder without the cases is refused before training, not at the validation after it
    let empty = c.data.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let early = train(&c, "3d_lowres", &c.lowres, "0", &[&"--next-stage-data", &empty]);
    assert_eq!(early.status.code(), Some(2), "{}", stderr(&early));
    assert!(stderr(&early).contains("synth_002.npy"), "{}", stderr(&early));
    assert!(!runs.join("3d_lowres/fold_0/log.jsonl").exists(), "no epoch ran");
    for fold in ["0", "1"] {
        let output = train(&c, "3d_lowres", &c.lowres, fold, &[&"--next-stage-data", &c.fullres]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    // every case once, on 3d_fullres's preprocessed grid, with the dataset's labels
    let previous = runs.join("3d_lowres/predicted_next_stage/3d_cascade_fullres");
    let mut written: Vec<String> =
        std::fs::read_dir(&previous).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    written.sort();
    let expected: Vec<String> = ["fold_0.json".to_owned(), "fold_1.json".to_owned()]
        .into_iter()
        .chain(CASES.map(|id| format!("{id}.npy")))
        .collect();
    assert_eq!(written, expected, "each fold's cases, then its mark");
    let mark: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(previous.join("fold_1.json")).unwrap()).unwrap();
    assert_eq!(mark, serde_json::json!({"fold": 1, "cases": &CASES[..2]}));
    for id in CASES {
        let labels = read_label_map_npy(&previous.join(format!("{id}.npy"))).unwrap();
        let reference = read_label_map_npy(&c.fullres.join(format!("{id}_seg.npy"))).unwrap();
        assert_eq!(labels.shape(), reference.shape(), "{id}");
        assert!(labels.iter().all(|&l| (0..=2).contains(&l)), "{id}: labels 0..=2 only");
    }
    // validated again without the next stage's data: it says what is not written, and keeps what was
    let summary = runs.join("3d_lowres/fold_0/validation/summary.json");
    std::fs::remove_file(&summary).expect("the final validation writes summary.json");
    let output = nn_train(&c, "3d_lowres", &c.lowres, "0").arg("--validate-only").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&summary).expect("--validate-only writes summary.json again");
    let cases = serde_json::from_str::<serde_json::Value>(&text.replace("NaN", "null")).unwrap()["metric_per_case"]
        .as_array()
        .map(Vec::len);
    assert_eq!(cases, Some(2), "fold 0's validation cases");
    let warning = stderr(&output);
    assert!(
        warning.starts_with("nn-train: warning: ")
            && warning.contains("fold 0 writes no labels for 3d_cascade_fullres"),
        "{warning}"
    );
    assert!(previous.join("fold_0.json").is_file() && previous.join("synth_002.npy").is_file());

    let without = train(&c, "3d_cascade_fullres", &c.fullres, "0", &[]);
    assert_eq!(without.status.code(), Some(2), "{}", stderr(&without));
    assert!(stderr(&without).contains("--prev-stage"), "{}", stderr(&without));
    // the lowres preprocessed folder holds CASE.npy too, but images of another grid, not labels
    let wrong = train(&c, "3d_cascade_fullres", &c.fullres, "0", &[&"--prev-stage", &c.lowres]);
    assert_eq!(wrong.status.code(), Some(2), "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("synth_000.npy"), "{}", stderr(&wrong));
    let needless = train(&c, "3d_fullres", &c.fullres, "0", &[&"--prev-stage", &previous]);
    assert_eq!(needless.status.code(), Some(2), "{}", stderr(&needless));

    let output = train(&c, "3d_cascade_fullres", &c.fullres, "0", &[&"--prev-stage", &previous]);
    assert!(output.status.success(), "{}", stderr(&output));
    let cascade = runs.join("3d_cascade_fullres");
    let weights = std::fs::read(cascade.join("fold_0/checkpoint_final.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&weights).unwrap();
    let first = weights.tensor("encoder.stages.0.0.convs.0.conv.weight").unwrap();
    assert_eq!(first.shape()[1], 3, "input: the image and the two foreground labels one-hot");
    for id in &CASES[2..] {
        let predicted = read_label_map(&cascade.join(format!("fold_0/validation/{id}.nii.gz"))).unwrap();
        let reference = read_label_map(&c.data.raw.join(format!("labelsTr/{id}.nii.gz"))).unwrap();
        assert_eq!(predicted.geometry, reference.geometry, "{id}: validated in its input geometry");
    }

    // predicted through both stages: by hand, and from an inference plan naming the cascade
    let images = c.data.raw.join("imagesTs");
    let [lowres_predictions, predictions, from_plan] =
        ["pred_lowres", "pred_cascade", "pred_plan"].map(|name| c.data.dir.path().join(name));
    let fast = [&"--no-tta" as &dyn AsRef<std::ffi::OsStr>, &"--device", &"cpu", &"-q"];
    let output = run(
        "nn-infer",
        &[
            &[
                &"-m" as &dyn AsRef<std::ffi::OsStr>,
                &runs.join("3d_lowres"),
                &"--folds",
                &"0",
                &"-i",
                &images,
                &"-o",
                &lowres_predictions,
            ],
            &fast[..],
        ]
        .concat(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let no_previous =
        run("nn-infer", &[&"-m", &cascade, &"-i", &images, &"-o", &predictions, &"--device", &"cpu", &"-q"]);
    assert_eq!(no_previous.status.code(), Some(2), "{}", stderr(&no_previous));
    let by_hand = [
        &"-m" as &dyn AsRef<std::ffi::OsStr>,
        &cascade,
        &"--prev-stage",
        &lowres_predictions,
        &"-i",
        &images,
        &"-o",
        &predictions,
    ];
    let output = run("nn-infer", &[&by_hand[..], &fast[..]].concat());
    assert!(output.status.success(), "{}", stderr(&output));

    let plan = c.data.dir.path().join("inference_plan.json");
    let labels = c.data.raw.join("labelsTr");
    let alone =
        run("nn-ensemble", &[&"select", &"--runs", &cascade, &"--ref", &labels, &"--folds", &"0", &"-o", &plan]);
    assert_eq!(alone.status.code(), Some(2), "{}", stderr(&alone));
    assert!(stderr(&alone).contains("give its 3d_lowres run"), "{}", stderr(&alone));
    let output = run(
        "nn-ensemble",
        &[&"select", &"--runs", &runs.join("3d_lowres"), &cascade, &"--ref", &labels, &"--folds", &"0", &"-o", &plan],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let mut chosen: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let listed = chosen["cross_validation"].as_array().unwrap().len();
    assert_eq!(listed, 3, "lowres, cascade, and both");
    for model in chosen["models"].as_array().unwrap() {
        let expected = if model["configuration"] == "3d_cascade_fullres" {
            serde_json::json!(runs.join("3d_lowres"))
        } else {
            serde_json::Value::Null
        };
        assert_eq!(model["previous_stage"], expected, "{model}");
    }
    // whichever won on this untrained pair, predict with the cascade alone
    chosen["models"] = serde_json::json!([{"run": cascade, "configuration": "3d_cascade_fullres", "previous_stage": runs.join("3d_lowres")}]);
    std::fs::write(&plan, chosen.to_string()).unwrap();
    let output = run(
        "nn-infer",
        &[&[&"--plan" as &dyn AsRef<std::ffi::OsStr>, &plan, &"-i", &images, &"-o", &from_plan], &fast[..]].concat(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let [by_hand, planned] =
        [&predictions, &from_plan].map(|dir| read_label_map(&dir.join("synth_004.nii.gz")).unwrap());
    assert_eq!(planned.geometry, by_hand.geometry);
    assert_eq!(planned.data, by_hand.data, "the plan predicts the previous stage first, as by hand");
    let left: Vec<_> = std::fs::read_dir(&from_plan)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "the previous stage's temporary folder is removed: {left:?}");
}
