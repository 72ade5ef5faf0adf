//! The whole pipeline through scripts/nnunet.sh on a small synthetic dataset (two configurations, two
//! folds, a tiny budget), and nn-ensemble's parts checked against independent computations: the
//! selection's scores against nn-eval on the same predictions, averaging against numpy-style means,
//! postprocessing on a hand-made label map.

use ndarray::{Array3, Array4, Axis};
use nntools_io::{read_label_map, read_npz, write_like};
use nntools_tests::{run, stderr, workspace};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap().replace("NaN", "null")).unwrap()
}

#[test]
fn nnunet_script_runs_and_resumes_and_ensembling_checks_out() {
    let data = tempfile::tempdir().unwrap();
    let raw = data.path().join("raw");
    // a raw dataset with test images
    let output = run(
        "nn-synth",
        &[
            &"-o",
            &raw,
            &"--cases",
            &"8",
            &"--test-cases",
            &"2",
            &"--min-size",
            &"20",
            &"--max-size",
            &"26",
            &"--seed",
            &"5",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let work = data.path().join("work");
    let script = workspace().join("scripts/nnunet.sh");
    let pipeline = |extra: &[&str]| {
        let mut command = Command::new(&script);
        command.arg(&raw).arg(&work).args([
            "--configs",
            "2d,3d_fullres",
            "--folds",
            "0-1",
            "--epochs",
            "1",
            "--iters",
            "2",
            "--val-iters",
            "1",
            "--device",
            "cpu",
        ]);
        command.args(extra).env("NN_TOOLS_BIN", nntools_tests::binaries_dir());
        command.output().unwrap()
    };
    let first = pipeline(&[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

    // the plan: three candidates, the best chosen
    let plan = read(&work.join("inference_plan.json"));
    let scores: Vec<(Vec<String>, f64)> = plan["cross_validation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (serde_json::from_value(s["configurations"].clone()).unwrap(), s["foreground_dice"].as_f64().unwrap()))
        .collect();
    assert_eq!(scores.len(), 3);
    let best = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
    let chosen: Vec<String> =
        plan["models"].as_array().unwrap().iter().map(|m| m["configuration"].as_str().unwrap().to_owned()).collect();
    assert_eq!(scores.iter().find(|s| s.1 == best).unwrap().0, chosen);
    assert!(plan["foreground_dice_after_postprocessing"].as_f64().unwrap() >= best);

    // the 3d_fullres score equals nn-eval's foreground Dice on its cross-validation predictions
    let cv = data.path().join("cv_3d_fullres");
    std::fs::create_dir_all(&cv).unwrap();
    for fold in 0..2 {
        for entry in std::fs::read_dir(work.join(format!("runs/3d_fullres/fold_{fold}/validation"))).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with(".nii.gz") {
                std::fs::copy(&path, cv.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let summary = data.path().join("summary.json");
    let output = run(
        "nn-eval",
        &[
            &"--ref",
            &raw.join("labelsTr"),
            &"--pred",
            &cv,
            &"--dataset",
            &raw.join("dataset.json"),
            &"-o",
            &summary,
            &"--no-surface",
            &"--chill",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let evaluated = read(&summary)["foreground_mean"]["Dice"].as_f64().unwrap();
    let selected = scores.iter().find(|s| s.0 == ["3d_fullres"]).unwrap().1;
    assert!((evaluated - selected).abs() < 1e-12, "nn-eval {evaluated} vs select {selected}");

    // test images predicted in their own geometry
    for entry in std::fs::read_dir(raw.join("imagesTs")).unwrap() {
        let image = entry.unwrap().path();
        let case = image.file_name().unwrap().to_string_lossy().replace("_0000.nii.gz", ".nii.gz");
        let predicted = read_label_map(&work.join("predictions").join(&case)).unwrap();
        assert_eq!(predicted.geometry, nntools_io::read_image(&image).unwrap().geometry, "{case}");
    }

    // a rerun does no work: every stage is current, every fold done
    let started = std::time::Instant::now();
    let again = pipeline(&[]);
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{log}");
    eprintln!("rerun of a finished pipeline: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(log.matches(": done").count(), 4, "{log}");
    // fingerprint, plans, resample x 2, select, predictions
    assert_eq!(log.matches(": current").count(), 6, "{log}");
    for tool in ["nn-fingerprint", "nn-plan", "nn-resample", "nn-train", "nn-ensemble select", "nn-infer"] {
        let ran = log.lines().any(|l| l.starts_with(&format!("== {tool}")) && !l.ends_with(": current"));
        assert!(!ran, "{tool} ran again:\n{log}");
    }

    // scripts/Makefile works on the same layout: nothing to do after the script's run, and touching a
    // raw image without changing it redoes the fingerprint only, whose file keeps its mtime
    let make = |dry_run: bool| {
        let bin = nntools_tests::binaries_dir();
        let mut command = Command::new("make");
        command.args(["-f"]).arg(workspace().join("scripts/Makefile"));
        command
            .arg(format!("RAW={}", raw.display()))
            .arg(format!("WORK={}", work.display()))
            .arg(format!("BIN={}", bin.display()));
        command.args(["CONFIGS=2d 3d_fullres", "FOLDS=0 1"]);
        if dry_run {
            command.arg("-n");
        }
        command.output()
    };
    match make(true) {
        Err(e) => eprintln!("skipped the Makefile checks: no make ({e})"),
        Ok(dry) => {
            let stdout = String::from_utf8_lossy(&dry.stdout);
            assert!(dry.status.success(), "{}", stderr(&dry));
            assert!(!stdout.contains("nn-"), "make -n after a completed run:\n{stdout}");
            let fingerprint = work.join("dataset_fingerprint.json");
            let mtime = |path: &Path| std::fs::metadata(path).unwrap().modified().unwrap();
            let before = mtime(&fingerprint);
            let image = std::fs::read_dir(raw.join("imagesTr")).unwrap().next().unwrap().unwrap().path();
            std::fs::File::options()
                .write(true)
                .open(&image)
                .unwrap()
                .set_modified(std::time::SystemTime::now())
                .unwrap();
            let remade = make(false).unwrap();
            let stdout = String::from_utf8_lossy(&remade.stdout);
            assert!(remade.status.success(), "{}", stderr(&remade));
            assert!(stdout.contains("nn-fingerprint"), "{stdout}");
            for tool in ["nn-plan", "nn-resample", "nn-train", "nn-ensemble", "nn-infer"] {
                assert!(!stdout.contains(tool), "{tool} reran after touching {}:\n{stdout}", image.display());
            }
            assert_eq!(mtime(&fingerprint), before, "the unchanged fingerprint keeps its mtime");
        }
    }
    // and so does the script
    let touched = pipeline(&[]);
    let log = String::from_utf8_lossy(&touched.stderr);
    assert!(touched.status.success(), "{log}");
    assert!(log.contains("== nn-fingerprint"), "{log}");
    assert_eq!(log.matches(": current").count(), 5, "{log}");

    // averaging two folders: labels are the argmax of the mean probabilities
    let folders = ["2d", "3d_fullres"].map(|c| work.join(format!("runs/{c}/fold_0/validation")));
    let averaged = data.path().join("averaged");
    let output = run(
        "nn-ensemble",
        &[&"average", &"-i", &folders[0], &folders[1], &"-o", &averaged, &"--dataset", &raw.join("dataset.json")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let case = std::fs::read_dir(&folders[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "npz"))
        .unwrap();
    let id = case.file_stem().unwrap().to_string_lossy().into_owned();
    let p: Vec<Array4<f32>> =
        folders.iter().map(|f| read_npz(&f.join(format!("{id}.npz")), "probabilities").unwrap()).collect();
    let mean = (&p[0] + &p[1]) / 2.0;
    let labels = read_label_map(&averaged.join(format!("{id}.nii.gz"))).unwrap().data;
    for ((z, y, x), &label) in labels.indexed_iter() {
        let lane = mean.index_axis(Axis(1), z).index_axis(Axis(1), y).index_axis(Axis(1), x).to_vec();
        let best = lane.iter().enumerate().fold(0, |b, (c, &v)| if v > lane[b] { c } else { b });
        assert_eq!(label as usize, best, "{id} at {:?}", (z, y, x));
    }
}

/// nnU-Net's cascade through the script: five small cases planned for 10 MB of GPU memory get
/// 3d_lowres and 3d_cascade_fullres; all five lowres folds write the cascade's input (a fold trained
/// earlier without it is only validated again), the cascade trains on it, the selection weighs both,
/// the test image is predicted through both stages, and a rerun, by the script or by make, does nothing.
#[test]
fn the_script_runs_the_cascade() {
    let data = tempfile::tempdir().unwrap();
    let raw = data.path().join("raw");
    let synth =
        ["--cases", "5", "--test-cases", "1", "--isotropic", "--min-size", "32", "--max-size", "40", "--seed", "5"];
    let output = Command::new(nntools_tests::binary("nn-synth")).arg("-o").arg(&raw).args(synth).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let work = data.path().join("work");
    let script = |configs: &str, folds: &str| {
        let mut command = Command::new(workspace().join("scripts/nnunet.sh"));
        command.arg(&raw).arg(&work).args(["--gpu-memory-gb", "0.01", "--configs", configs, "--folds", folds]);
        command.args(["--epochs", "1", "--iters", "1", "--val-iters", "1", "--device", "cpu"]);
        command.env("NN_TOOLS_BIN", nntools_tests::binaries_dir()).output().unwrap()
    };
    let pipeline = || script("3d_lowres,3d_cascade_fullres", "0-4");
    let lowres_alone = script("3d_lowres", "0");
    assert!(lowres_alone.status.success(), "{}", String::from_utf8_lossy(&lowres_alone.stderr));
    let first = pipeline();
    let log = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{log}");
    assert!(log.contains("== nn-train -c 3d_lowres --fold 0 --validate-only"), "{log}");
    let previous = work.join("runs/3d_lowres/predicted_next_stage/3d_cascade_fullres");
    let mut written: Vec<String> =
        std::fs::read_dir(&previous).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    written.sort();
    let cases = (0..5).map(|i| format!("synth_00{i}.npy"));
    let marks = (0..5).map(|f| format!("fold_{f}.json"));
    assert_eq!(written, marks.chain(cases).collect::<Vec<_>>(), "every case's lowres labels, every fold's mark");
    let plan = read(&work.join("inference_plan.json"));
    let candidates: Vec<Value> =
        plan["cross_validation"].as_array().unwrap().iter().map(|s| s["configurations"].clone()).collect();
    assert_eq!(
        candidates,
        [
            serde_json::json!(["3d_lowres"]),
            serde_json::json!(["3d_cascade_fullres"]),
            serde_json::json!(["3d_lowres", "3d_cascade_fullres"])
        ]
    );
    let image = raw.join("imagesTs/synth_005_0000.nii.gz");
    let predicted = read_label_map(&work.join("predictions/synth_005.nii.gz")).unwrap();
    assert_eq!(predicted.geometry, nntools_io::read_image(&image).unwrap().geometry);

    let again = pipeline();
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{log}");
    assert_eq!(log.matches(": done").count(), 10, "{log}");
    assert!(!log.contains("== nn-train"), "{log}");
    let bin = nntools_tests::binaries_dir();
    let make = Command::new("make")
        .arg("-n")
        .arg("-f")
        .arg(workspace().join("scripts/Makefile"))
        .args([format!("RAW={}", raw.display()), format!("WORK={}", work.display()), format!("BIN={}", bin.display())])
        .args(["CONFIGS=3d_lowres 3d_cascade_fullres", "FOLDS=0 1 2 3 4"])
        .output();
    match make {
        Err(e) => eprintln!("skipped the Makefile check: no make ({e})"),
        Ok(dry) => {
            assert!(dry.status.success(), "{}", stderr(&dry));
            let stdout = String::from_utf8_lossy(&dry.stdout);
            assert!(!stdout.contains("nn-"), "make -n after the script's run:\n{stdout}");
        }
    }
}

/// Images too small to pool (6 x 6 x 6 crops of Dataset004 cases: every axis under twice nnU-Net's
/// smallest feature map of 4) get one-stage networks, which nnU-Net plans and then cannot build; here
/// both configurations train (one deep-supervision head), the cross-validation chooses, and the test
/// images are predicted in their own shape.
#[test]
fn images_too_small_to_pool_plan_one_stage_and_run_through() {
    let Some(shared) = nntools_tests::shared() else { return };
    let source = shared.join("data/Dataset004_Hippocampus");
    let data = tempfile::tempdir().unwrap();
    let raw = data.path().join("raw/Dataset901_Tiny");
    for folder in ["imagesTr", "labelsTr", "imagesTs"] {
        std::fs::create_dir_all(raw.join(folder)).unwrap();
    }
    let descriptor = std::fs::read_to_string(source.join("dataset.json"))
        .unwrap()
        .replace("\"numTraining\": 260", "\"numTraining\": 5");
    std::fs::write(raw.join("dataset.json"), descriptor).unwrap();
    let crop = ndarray::s![10..16, 20..26, 12..18];
    for case in ["001", "003", "004", "006", "007"] {
        let image = nntools_io::read_image(&source.join(format!("imagesTr/hippocampus_{case}_0000.nii.gz"))).unwrap();
        let label = read_label_map(&source.join(format!("labelsTr/hippocampus_{case}.nii.gz"))).unwrap();
        let cropped = image.data.slice(crop);
        nntools_io::write_new(&raw.join(format!("imagesTr/tiny_{case}_0000.nii.gz")), cropped, &image.geometry)
            .unwrap();
        let labels = label.data.slice(crop).mapv(|l| l as u8);
        nntools_io::write_new(&raw.join(format!("labelsTr/tiny_{case}.nii.gz")), labels.view(), &image.geometry)
            .unwrap();
    }
    std::fs::copy(raw.join("imagesTr/tiny_007_0000.nii.gz"), raw.join("imagesTs/test_007_0000.nii.gz")).unwrap();
    let work = data.path().join("work");
    let output = Command::new(workspace().join("scripts/nnunet.sh"))
        .arg(&raw)
        .arg(&work)
        .args(["--folds", "0-1", "--epochs", "1", "--iters", "2", "--val-iters", "1", "--device", "cpu"])
        .env("NN_TOOLS_BIN", nntools_tests::binaries_dir())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let plans = read(&work.join("plans.json"));
    for configuration in ["2d", "3d_fullres"] {
        let arch = &plans["configurations"][configuration]["architecture"]["arch_kwargs"];
        assert_eq!(arch["n_stages"], 1, "{configuration}: {arch}");
        assert!(work.join(format!("runs/{configuration}/fold_1/checkpoint_final.safetensors")).is_file());
    }
    let predicted = read_label_map(&work.join("predictions/test_007.nii.gz")).unwrap();
    assert_eq!(predicted.data.shape(), [6, 6, 6]);
    assert!(predicted.data.iter().all(|&l| l <= 2), "labels outside the dataset's");
}

#[test]
fn postprocessing_keeps_the_largest_component() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    let mut labels = Array3::<u8>::zeros((6, 6, 6));
    labels.slice_mut(ndarray::s![0..3, 0..3, 0..3]).fill(1);
    labels[[5, 5, 5]] = 1;
    labels[[5, 0, 5]] = 2;
    let geometry = nntools_io::Geometry {
        spacing: [1.0; 3],
        origin: [0.0; 3],
        direction: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    };
    write_like(&input.join("a.nii.gz"), labels.view(), &nntools_io::new_header(&geometry, [6, 6, 6])).unwrap();
    std::fs::write(input.join("dataset.json"), r#"{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 1, "file_ending": ".nii.gz"}"#).unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(&plan, r#"{"models": [{"run": "r", "configuration": "3d_fullres"}], "folds": [0], "postprocessing": [{"keep_largest_component_of": [1]}],
        "cross_validation": [], "foreground_dice_before_postprocessing": 0.5, "foreground_dice_after_postprocessing": 0.6,
        "class_dice_after_postprocessing": {}, "commands": []}"#).unwrap();
    let result = run("nn-ensemble", &[&"postprocess", &"-i", &input, &"-o", &output, &"--plan", &plan]);
    assert!(result.status.success(), "{}", stderr(&result));
    let processed = read_label_map(&output.join("a.nii.gz")).unwrap().data;
    assert_eq!(processed[[5, 5, 5]], 0, "the stray voxel of class 1 is removed");
    assert_eq!(processed[[5, 0, 5]], 2, "class 2 is untouched");
    assert_eq!(processed.iter().filter(|&&l| l == 1).count(), 27);
}
