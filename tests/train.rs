//! nn-train end to end on CPU on a small synthetic dataset: it learns, its run folder is an nnU-Net
//! trainer folder, it resumes after SIGKILL with the same epoch counter, learning-rate schedule and log,
//! and it refuses bad requests.

use nntools_io::read_label_map;
use nntools_tests::{SyntheticDataset, bf16_refused, binary, run, stderr};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Prepared {
    data: SyntheticDataset,
    pre: PathBuf,
}

/// Small one-channel cases (patch 14 x 20 x 20), so that CPU training takes seconds per epoch.
fn prepare(cases: usize) -> Prepared {
    let data = SyntheticDataset::with(cases, 1, [20, 28]);
    let pre = data.dir.path().join("pre_3d_fullres");
    let output = data.resample("3d_fullres", &pre, &["-q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    Prepared { data, pre }
}

fn train_args(p: &Prepared, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--plans",
        p.data.plans.to_str().unwrap(),
        "-c",
        "3d_fullres",
        "--data",
        p.pre.to_str().unwrap(),
        "--dataset",
        p.data.raw.join("dataset.json").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A safetensors file's tensors as float32 values by name.
fn safetensors_values(path: &Path) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()))
        .collect()
}

/// A JSON file nnU-Net's way: `NaN` as Python writes it read as null.
fn read_python_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text.replace("NaN", "null")).unwrap()
}

/// The run folder of a finished `--fold 0` run is an nnU-Net trainer folder: the fingerprint beside the
/// plans copied in, each `.pth` checkpoint holding its safetensors' weights under nnU-Net's keys (alias
/// keys included) with the trainer, configuration and epoch, and validation/summary.json holding nn-eval's
/// evaluation of the validation predictions against labelsTr.
fn assert_nnunet_trainer_folder(p: &Prepared, out: &Path, epochs: i64, val_cases: &[String]) {
    let fingerprint = std::fs::read(p.data.plans.with_file_name("dataset_fingerprint.json")).unwrap();
    assert!(std::fs::read(out.join("dataset_fingerprint.json")).unwrap() == fingerprint, "fingerprint copied");
    let fold = out.join("fold_0");
    let best_epoch = read_python_json(&fold.join("checkpoint_best.json"))["epoch"].as_i64().unwrap();
    for (name, epoch) in [("final", epochs), ("best", best_epoch)] {
        let pth = fold.join(format!("checkpoint_{name}.pth"));
        let checkpoint = nntools_checkpoint::NnunetCheckpoint::read(&pth).unwrap();
        assert_eq!(checkpoint.trainer_name, "nnUNetTrainer", "{name}");
        assert_eq!(checkpoint.configuration, "3d_fullres", "{name}");
        assert_eq!(checkpoint.current_epoch, epoch, "{name}: epochs done");
        assert_eq!(checkpoint.inference_allowed_mirroring_axes, [0, 1, 2], "{name}");
        let weights: HashMap<&str, Vec<f32>> = checkpoint
            .network_weights
            .iter()
            .map(|(key, tensor)| (key.as_str(), tensor.to_f32().expect("float weights")))
            .collect();
        let safetensors = safetensors_values(&fold.join(format!("checkpoint_{name}.safetensors")));
        for (key, values) in &safetensors {
            assert!(weights.get(key.as_str()) == Some(values), "{name}: {key} equals the safetensors' bit for bit");
        }
        let aliases = weights.keys().filter(|k| !safetensors.contains_key(**k)).collect::<Vec<_>>();
        assert!(
            aliases.iter().any(|k| k.starts_with("decoder.encoder."))
                && aliases.iter().any(|k| k.contains(".all_modules.")),
            "{name}: nnU-Net's alias keys: {aliases:?}"
        );
    }
    let summary = read_python_json(&fold.join("validation/summary.json"));
    let cases = summary["metric_per_case"].as_array().unwrap();
    let mut evaluated: Vec<String> = cases
        .iter()
        .map(|c| {
            let reference = PathBuf::from(c["reference_file"].as_str().unwrap());
            assert_eq!(reference.parent(), Some(p.data.raw.join("labelsTr").as_path()), "against labelsTr");
            reference.file_name().unwrap().to_string_lossy().trim_end_matches(".nii.gz").to_owned()
        })
        .collect();
    evaluated.sort();
    let mut expected = val_cases.to_vec();
    expected.sort();
    assert_eq!(evaluated, expected, "one entry per validation case");
    let labels = p.data.raw.join("labelsTr");
    let eval = run("nn-eval", &[&"--ref", &labels, &"--pred", &fold.join("validation"), &"--chill", &"-o", &"-"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let nn_eval: Value = serde_json::from_str(&String::from_utf8_lossy(&eval.stdout).replace("NaN", "null")).unwrap();
    let dice = summary["foreground_mean"]["Dice"].as_f64().unwrap();
    assert_eq!(Some(dice), nn_eval["foreground_mean"]["Dice"].as_f64(), "nn-eval's mean Dice");
    assert!(dice > 0.7, "mean validation Dice {dice}");
}

fn log_lines(fold_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(fold_dir.join("log.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn learns_a_synthetic_dataset() {
    learns_a_synthetic_dataset_in("fp32");
}

#[test]
fn learns_a_synthetic_dataset_in_bf16() {
    learns_a_synthetic_dataset_in("bf16");
}

/// Trains fold 0 of a small synthetic dataset for 30 epochs at `precision` and checks that it learned it.
fn learns_a_synthetic_dataset_in(precision: &str) {
    let p = prepare(8);
    let out = p.data.dir.path().join("run");
    let args = train_args(
        &p,
        &out,
        &[
            "--fold",
            "0",
            "--epochs",
            "30",
            "--iters",
            "25",
            "--val-iters",
            "5",
            "--device",
            "cpu",
            "--precision",
            precision,
        ],
    );
    let output = Command::new(binary("nn-train")).args(&args).output().unwrap();
    if bf16_refused(&output) {
        return;
    }
    assert!(output.status.success(), "{}", stderr(&output));
    let log = log_lines(&out.join("fold_0"));
    assert_eq!(log.len(), 30);
    let last = log.last().unwrap();
    let ema = last["ema_pseudo_dice"].as_f64().unwrap();
    let dice: Vec<f64> = serde_json::from_value(last["pseudo_dice"].clone()).unwrap();
    assert!(ema > 0.8, "EMA pseudo Dice {ema}, last epoch {dice:?}");
    assert!(dice.iter().all(|&d| d > 0.8), "pseudo Dice per class {dice:?}");
    for name in [
        "checkpoint_final.safetensors",
        "checkpoint_best.safetensors",
        "checkpoint_final.pth",
        "checkpoint_best.pth",
        "settings.json",
    ] {
        assert!(out.join("fold_0").join(name).is_file(), "{name}");
    }
    assert!(!out.join("fold_0/checkpoint_latest.safetensors").exists(), "latest is removed at the end");
    let plot = std::fs::read(out.join("fold_0/progress.png")).unwrap();
    assert!(plot.starts_with(b"\x89PNG\r\n") && plot.len() > 10_000, "progress.png is drawn");
    assert!(out.join("plans.json").is_file() && out.join("dataset.json").is_file());
    assert!(p.pre.join("splits_final.json").is_file(), "a split file is made where none was given");

    // the final validation predicts the held-out cases in their input geometry, and they are segmented
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fold_0/settings.json")).unwrap()).unwrap();
    let val_cases: Vec<String> = serde_json::from_value(settings["val_cases"].clone()).unwrap();
    assert!(!val_cases.is_empty());
    assert_eq!(settings["precision"], precision);
    for case in &val_cases {
        let reference = read_label_map(&p.data.raw.join(format!("labelsTr/{case}.nii.gz"))).unwrap();
        let predicted = read_label_map(&out.join(format!("fold_0/validation/{case}.nii.gz"))).unwrap();
        assert_eq!(predicted.geometry, reference.geometry, "{case}");
        assert!(out.join(format!("fold_0/validation/{case}.npz")).is_file(), "{case}: probabilities");
        for label in 1..=2 {
            let (mut both, mut total) = (0, 0);
            for (&a, &b) in predicted.data.iter().zip(&reference.data) {
                both += usize::from(a == label && b == label);
                total += usize::from(a == label) + usize::from(b == label);
            }
            let dice = 2.0 * both as f64 / total as f64;
            assert!(dice > 0.7, "{case}: validation Dice of label {label} is {dice}");
        }
    }
    assert_nnunet_trainer_folder(&p, &out, 30, &val_cases);
}

#[test]
fn resumes_after_sigkill_with_the_same_schedule() {
    let p = prepare(6);
    let out = p.data.dir.path().join("run");
    let fold_dir = out.join("fold_1");
    let epochs = 6;
    let budget = ["--fold", "1", "--epochs", "6", "--iters", "4", "--val-iters", "2", "--device", "cpu"];
    let args = train_args(&p, &out, &budget);
    let mut child = Command::new(binary("nn-train")).args(&args).spawn().unwrap();
    let start = Instant::now();
    // kill once a checkpoint beyond the first epoch exists
    loop {
        let checkpoint: Option<Value> = std::fs::read_to_string(fold_dir.join("checkpoint_best.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if checkpoint.is_some_and(|c| c["epoch"].as_u64().unwrap() >= 2) || start.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let killed = !child.wait().unwrap().success();
    let before = log_lines(&fold_dir).len();
    let mut resumed_args = args.clone();
    resumed_args.push("--resume".into());
    // then the resumed runs killed too, at seeded moments (a kill may land mid-checkpoint)
    for delay in nntools_tests::kill_moments(5, 2, 500..3000) {
        let mut child = Command::new(binary("nn-train")).args(&resumed_args).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let output = Command::new(binary("nn-train")).args(&resumed_args).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let log = log_lines(&fold_dir);
    assert_eq!(log.len(), epochs, "every epoch logged once (killed: {killed}, {before} lines before resuming)");
    for (i, line) in log.iter().enumerate() {
        assert_eq!(line["epoch"].as_u64(), Some(i as u64));
        let lr = 0.01 * (1.0 - i as f64 / epochs as f64).powf(0.9);
        assert!((line["lr"].as_f64().unwrap() - lr).abs() < 1e-12, "epoch {i}: lr continues the poly schedule");
        assert!(line["train_loss"].as_f64().unwrap().is_finite());
    }
    let final_state: Value =
        serde_json::from_str(&std::fs::read_to_string(fold_dir.join("checkpoint_final.json")).unwrap()).unwrap();
    assert_eq!(final_state["epoch"].as_u64(), Some(epochs as u64));

    // resumed from an epoch boundary with the same batches and momentum, the run is the uninterrupted one
    let uninterrupted = p.data.dir.path().join("uninterrupted");
    let output = Command::new(binary("nn-train")).args(train_args(&p, &uninterrupted, &budget)).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let weights = |dir: &Path| std::fs::read(dir.join("fold_1/checkpoint_final.safetensors")).unwrap();
    assert!(weights(&out) == weights(&uninterrupted), "final weights equal bit for bit (killed: {killed})");
}

#[test]
fn starts_from_pretrained_weights() {
    let p = prepare(6);
    let budget = ["--fold", "0", "--epochs", "1", "--iters", "1", "--val-iters", "1", "--device", "cpu"];
    let source = p.data.dir.path().join("source");
    let without_augmentation = [&budget[..], &["--augment", "none"]].concat();
    let output =
        Command::new(binary("nn-train")).args(train_args(&p, &source, &without_augmentation)).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let pretrained = source.join("fold_0/checkpoint_final.safetensors");
    // without augmentation the checkpoint names nnU-Net's trainer without it, and no test-time mirroring
    // as that trainer writes it (None: nnU-Net's predictor fails on an empty tuple)
    let source_pth = source.join("fold_0/checkpoint_final.pth");
    let checkpoint = nntools_checkpoint::read_pth(&source_pth).unwrap();
    assert_eq!(checkpoint.get("trainer_name").and_then(|v| v.as_str()), Some("nnUNetTrainerNoDA"));
    assert_eq!(checkpoint.get("inference_allowed_mirroring_axes"), Some(&nntools_checkpoint::Value::None));
    let [fresh, tuned] = ["fresh", "tuned"].map(|name| p.data.dir.path().join(name));
    assert!(
        Command::new(binary("nn-train"))
            .args(train_args(&p, &fresh, &[&budget[..], &["--seed", "7"]].concat()))
            .status()
            .unwrap()
            .success()
    );
    let with_pretrained = [&budget[..], &["--seed", "7", "--pretrained", pretrained.to_str().unwrap()]].concat();
    let output = Command::new(binary("nn-train")).args(train_args(&p, &tuned, &with_pretrained)).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    // the same weights from the .pth: the same run, bit for bit
    let tuned_from_pth = p.data.dir.path().join("tuned_from_pth");
    let with_pth = [&budget[..], &["--seed", "7", "--pretrained", source_pth.to_str().unwrap()]].concat();
    let output = Command::new(binary("nn-train")).args(train_args(&p, &tuned_from_pth, &with_pth)).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let tensors = |dir: &Path| safetensors_values(&dir.join("fold_0/checkpoint_final.safetensors"));
    assert!(
        tensors(&tuned_from_pth) == tensors(&tuned),
        "pretrained from checkpoint_final.pth as from its safetensors"
    );
    let (source, fresh, tuned) = (tensors(&source), tensors(&fresh), tensors(&tuned));
    let distance = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let name = "encoder.stages.0.0.convs.0.conv.weight";
    // one SGD step (lr 0.01, gradients clipped to norm 12) moves a weight by far less than a new initialisation
    assert!(
        distance(&tuned[name], &source[name]) < 0.2 * distance(&fresh[name], &source[name]),
        "{name} starts from the pretrained weights"
    );

    let truncated = p.data.dir.path().join("truncated.safetensors");
    let source_bytes = std::fs::read(&pretrained).unwrap();
    std::fs::write(&truncated, &source_bytes[..source_bytes.len() / 2]).unwrap();
    let bad = [&budget[..], &["--pretrained", truncated.to_str().unwrap()]].concat();
    let output =
        Command::new(binary("nn-train")).args(train_args(&p, &p.data.dir.path().join("bad"), &bad)).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("truncated.safetensors"), "{}", stderr(&output));
}

/// Regions over the synthetic labels ({1, 2} and {2}, as BraTS's whole tumour and core) and an ignore
/// label on a slab of every label map: nn-train trains one sigmoid output per region with the ignored
/// voxels left out of the loss and the pseudo Dice, and validates by painting the regions in
/// `regions_class_order`.
#[test]
fn trains_regions_with_an_ignore_label() {
    let data = SyntheticDataset::with(6, 1, [20, 28]);
    let json_path = data.raw.join("dataset.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    json["labels"] = serde_json::json!({"background": 0, "whole": [1, 2], "core": 2, "ignore": 3});
    json["regions_class_order"] = serde_json::json!([1, 2]);
    std::fs::write(&json_path, json.to_string()).unwrap();
    for entry in std::fs::read_dir(data.raw.join("labelsTr")).unwrap() {
        let path = entry.unwrap().path();
        let mut image = read_label_map(&path).unwrap();
        image.data.index_axis_mut(ndarray::Axis(0), 0).fill(3);
        nntools_io::write_like(&path, image.data.mapv(|v| v as u8).view(), image.stored.nifti_header.as_ref().unwrap())
            .unwrap();
    }
    let pre = data.dir.path().join("pre");
    let output = data.resample("3d_fullres", &pre, &["-q"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let p = Prepared { data, pre };
    let out = p.data.dir.path().join("run");
    let args =
        train_args(&p, &out, &["--fold", "0", "--epochs", "6", "--iters", "8", "--val-iters", "2", "--device", "cpu"]);
    let output = Command::new(binary("nn-train")).args(&args).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let log = log_lines(&out.join("fold_0"));
    let losses: Vec<f64> = log.iter().map(|l| l["train_loss"].as_f64().unwrap()).collect();
    eprintln!("train losses {losses:?}, last pseudo Dice {}", log.last().unwrap()["pseudo_dice"]);
    for line in &log {
        let dice: Vec<f64> = serde_json::from_value(line["pseudo_dice"].clone()).unwrap();
        assert_eq!(dice.len(), 2, "one pseudo Dice per region");
    }
    assert!(losses.iter().all(|l| l.is_finite()) && losses[5] < losses[0], "{losses:?}");
    let whole = log.last().unwrap()["pseudo_dice"][0].as_f64().unwrap();
    assert!(whole > 0.5, "pseudo Dice of the whole region after 48 iterations: {whole}");
    // the augmentation preview shows the label map, not the region channels
    let preview = train_args(
        &p,
        &p.data.dir.path().join("preview"),
        &["--fold", "0", "--device", "cpu", "--dump-augmented", "3"],
    );
    let output = Command::new(binary("nn-train")).args(&preview).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let png = std::fs::read(p.data.dir.path().join("preview/fold_0/augmented/augmented_002.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fold_0/settings.json")).unwrap()).unwrap();
    for case in settings["val_cases"].as_array().unwrap() {
        let case = case.as_str().unwrap();
        let predicted = read_label_map(&out.join(format!("fold_0/validation/{case}.nii.gz"))).unwrap();
        assert!(predicted.data.iter().all(|&l| (0..=2).contains(&l)), "{case}: regions paint labels 1 and 2 only");
    }
}

#[test]
fn bad_requests_are_refused() {
    let p = prepare(3);
    let out = p.data.dir.path().join("run");
    for (extra, message) in [
        (vec!["--fold", "7", "--device", "cpu"], "fold 7 does not exist"),
        (vec!["--fold", "x", "--device", "cpu"], "fold must be a number"),
        (vec!["--fold", "0", "--device", "tpu"], "device must be"),
        // no machine that runs the tests has eight GPUs: a one-line refusal, not a panic
        (vec!["--fold", "0", "--device", "cuda:7"], "not available"),
    ] {
        let output = run(
            "nn-train",
            &train_args(&p, &out, &extra).iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect::<Vec<_>>(),
        );
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(message), "{extra:?}: {}", stderr(&output));
        assert_eq!(stderr(&output).lines().count(), 1, "{extra:?}: {}", stderr(&output));
    }
}

#[test]
fn sigterm_checkpoints_and_the_run_resumes() {
    let p = prepare(4);
    let out = p.data.dir.path().join("run");
    let fold_dir = out.join("fold_0");
    let args =
        train_args(&p, &out, &["--fold", "0", "--epochs", "4", "--iters", "6", "--val-iters", "2", "--device", "cpu"]);
    let child = Command::new(binary("nn-train")).args(&args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while log_lines(&fold_dir).is_empty() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        return; // it finished before the signal arrived: nothing to resume
    }
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("checkpoint_latest saved, continue with --resume"), "{}", stderr(&output));
    assert!(fold_dir.join("checkpoint_latest.safetensors").is_file());
    let mut resumed = args.clone();
    resumed.push("--resume".into());
    let output = Command::new(binary("nn-train")).args(&resumed).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let epochs: Vec<u64> = log_lines(&fold_dir).iter().map(|l| l["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [0, 1, 2, 3]);
    for part in [".safetensors", ".momentum.safetensors", ".json"] {
        let latest = fold_dir.join(format!("checkpoint_latest{part}"));
        assert!(!latest.exists(), "{} is left after the run finished", latest.display());
    }
}
