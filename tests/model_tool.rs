//! nn-model on nnU-Net's own layout: `info` on the shared reference model as nn-train's safetensors
//! and as nnU-Net's trainer folder, a zip laid out as nnU-Net's exporter
//! (nnunetv2/model_sharing/model_export.py: `export_pretrained_model`) lays it out installed and
//! predicted with, and `export` of the installed folder back to the same layout.

use nntools_io::read_label_map;
use nntools_tests::{json_stdout, run, shared, stderr};
use std::io::Write;
use std::path::{Path, PathBuf};

const TRAINER: &str = "Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres";

/// The shared model's PlainConvUNet (3d_fullres plans, 1 channel, 3 classes): 68 parameter tensors
/// holding 5,603,177 values, as `sum(p.numel() for p in network.parameters())` counts them on the
/// network nnunetv2's `get_network_from_plans` builds (the .pth's 188 state_dict keys repeat them).
const PARAMETERS: u64 = 5_603_177;

/// The files of a trainer folder as nnU-Net's exporter puts them in a zip, in its order: per fold
/// the checkpoint, progress.png and validation/summary.json, then plans, fingerprint, dataset.json.
const EXPORTED_FILES: [&str; 6] = [
    "fold_0/checkpoint_final.pth",
    "fold_0/progress.png",
    "fold_0/validation/summary.json",
    "plans.json",
    "dataset_fingerprint.json",
    "dataset.json",
];

/// Two of the reference cases (the smallest of each kind), enough to compare labels without a long run.
const CASES: [&str; 2] = ["hippocampus_017", "aniso_hippocampus_001"];

fn reference(shared: &Path) -> PathBuf {
    shared.join("reference/infer")
}

fn expected_info() -> serde_json::Value {
    serde_json::json!({
        "dataset_name": "Dataset004_Hippocampus",
        "plans_name": "nnUNetPlans",
        "configuration": "3d_fullres",
        "trainer_name": "nnUNetTrainer",
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "folds": [0],
        "parameters": PARAMETERS,
        "input_channels": 1,
        "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
    })
}

#[test]
fn info_describes_safetensors_and_pth_models_alike() {
    let Some(shared) = shared() else { return };
    let infer = reference(&shared);
    let trainer_folder = infer.join("nnunet_results").join(TRAINER);
    for model in [
        infer.join("model"),
        infer.join("model/fold_0/checkpoint_final.safetensors"),
        trainer_folder.clone(),
        trainer_folder.join("fold_0/checkpoint_final.pth"),
    ] {
        let info = json_stdout(&run("nn-model", &[&"info", &model]));
        assert_eq!(info, expected_info(), "{}", model.display());
    }
    // folds in either format make one model: fold_0 as nn-train's safetensors, fold_1 as nnU-Net's .pth
    let dir = tempfile::tempdir().unwrap();
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(mixed.join("fold_0")).unwrap();
    std::fs::create_dir_all(mixed.join("fold_1")).unwrap();
    for file in ["plans.json", "dataset.json", "fold_0/checkpoint_final.safetensors", "fold_0/checkpoint_final.json"] {
        std::fs::copy(infer.join("model").join(file), mixed.join(file)).unwrap();
    }
    let pth = "checkpoint_final.pth";
    std::fs::copy(trainer_folder.join("fold_0").join(pth), mixed.join("fold_1").join(pth)).unwrap();
    let mut expected = expected_info();
    expected["folds"] = serde_json::json!([0, 1]);
    assert_eq!(json_stdout(&run("nn-model", &[&"info", &mixed])), expected);

    let missing = run("nn-model", &[&"info", &trainer_folder, &"--checkpoint", &"best"]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("checkpoint_best.pth"), "{}", stderr(&missing));
}

/// Writes a zip of `files` (entry name, contents), deflated, as Python's `zipfile` writes it.
fn write_zip(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, contents) in files {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(contents).unwrap();
    }
    zip.finish().unwrap();
}

/// A model zip built from the shared reference trainer folder exactly as nnU-Net's exporter lays it
/// out; progress.png and validation/summary.json, which the reference folder lacks, are small stand-ins.
fn nnunet_zip(shared: &Path, path: &Path) -> Vec<(String, Vec<u8>)> {
    let source = reference(shared).join("nnunet_results").join(TRAINER);
    let files: Vec<(String, Vec<u8>)> = EXPORTED_FILES
        .iter()
        .map(|file| {
            let contents = match *file {
                "fold_0/progress.png" => png_bytes(),
                "fold_0/validation/summary.json" => br#"{"foreground_mean": {"Dice": 0.89}}"#.to_vec(),
                _ => std::fs::read(source.join(file)).unwrap(),
            };
            (format!("{TRAINER}/{file}"), contents)
        })
        .collect();
    write_zip(path, &files);
    files
}

/// A 2x2 grey PNG.
fn png_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, 2, 2);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.write_header().unwrap().write_image_data(&[0, 64, 128, 255]).unwrap();
    bytes
}

/// Runs `nn-model install ZIP -o RESULTS` and checks it printed the one trainer folder.
fn install(zip: &Path, results: &Path) -> PathBuf {
    let output = run("nn-model", &[&"install", &zip, &"-o", &results]);
    assert!(output.status.success(), "install: {}", stderr(&output));
    let installed = results.join(TRAINER);
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{}\n", installed.display()));
    installed
}

/// Every file under `root`, relative, sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().to_owned());
            }
        }
    }
    found.sort();
    found
}

/// The CI acceptance without nnU-Net: a zip laid out as nnU-Net's exporter lays it out, installed by
/// nn-model, predicts with nn-infer exactly nnU-Net's labels (no TTA).
#[test]
fn nnunet_zip_installs_and_predicts_nnunet_labels() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("Dataset004_Hippocampus.zip");
    let files = nnunet_zip(&shared, &zip);
    let results = dir.path().join("nnUNet_results");
    let installed = install(&zip, &results);
    for (name, contents) in &files {
        assert_eq!(&std::fs::read(results.join(name)).unwrap(), contents, "{name}");
    }
    assert_eq!(files_under(&results).len(), files.len(), "nothing but the zip's files");

    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for case in CASES {
        let image = format!("{case}_0000.nii.gz");
        std::fs::copy(reference(&shared).join("images").join(&image), images.join(&image)).unwrap();
    }
    let predictions = dir.path().join("predictions");
    let output = run(
        "nn-infer",
        &[&"-m", &installed, &"-i", &images, &"-o", &predictions, &"--no-tta", &"--device", &"cpu", &"-q"],
    );
    assert!(output.status.success(), "nn-infer: {}", stderr(&output));
    for case in CASES {
        let name = format!("{case}.nii.gz");
        let ours = read_label_map(&predictions.join(&name)).unwrap();
        let nnunet = read_label_map(&reference(&shared).join("pred_notta").join(&name)).unwrap();
        assert_eq!(ours.data.shape(), nnunet.data.shape(), "{case}");
        let differing = ours.data.iter().zip(&nnunet.data).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{case}: voxels whose label differs from nnU-Net's");
    }
}

/// `nn-model export` of an installed nnU-Net trainer folder writes nnU-Net's layout (same entries, in
/// the exporter's order, deflated), and installing that zip elsewhere gives the same files; a second
/// install over the first is refused without --force.
#[test]
fn export_writes_nnunet_layout_and_reinstalls_identically() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let first_zip = dir.path().join("nnunet.zip");
    nnunet_zip(&shared, &first_zip);
    let first_root = dir.path().join("first");
    let installed = install(&first_zip, &first_root);

    let exported = dir.path().join("exported.zip");
    let output = run("nn-model", &[&"export", &installed, &"-o", &exported]);
    assert!(output.status.success(), "export: {}", stderr(&output));
    assert_eq!(stderr(&output), "", "the folder holds every file nnU-Net's exporter takes: no warning");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&exported).unwrap()).unwrap();
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    let expected: Vec<String> = EXPORTED_FILES.iter().map(|file| format!("{TRAINER}/{file}")).collect();
    assert_eq!(names, expected);
    for index in 0..archive.len() {
        assert_eq!(archive.by_index(index).unwrap().compression(), zip::CompressionMethod::Deflated);
    }

    let second_root = dir.path().join("second");
    install(&exported, &second_root);
    let files = files_under(&first_root);
    assert_eq!(files, files_under(&second_root));
    for file in &files {
        let (a, b) = (std::fs::read(first_root.join(file)).unwrap(), std::fs::read(second_root.join(file)).unwrap());
        assert!(a == b, "{} differs after export and re-install", file.display());
    }

    let again = run("nn-model", &[&"install", &exported, &"-o", &second_root]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    let refusal = format!("nn-model: error: {}: already exists (use --force", second_root.join(TRAINER).display());
    assert!(stderr(&again).starts_with(&refusal), "{}", stderr(&again));
    let forced = run("nn-model", &[&"install", &exported, &"-o", &second_root, &"--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(files_under(&second_root), files);

    // without the fingerprint (nnU-Net's predictor reads none) the zip is written, with a warning
    let trainer_folder = second_root.join(TRAINER);
    std::fs::remove_file(trainer_folder.join("dataset_fingerprint.json")).unwrap();
    let without = dir.path().join("without_fingerprint.zip");
    let output = run("nn-model", &[&"export", &trainer_folder, &"-o", &without]);
    assert!(output.status.success(), "export: {}", stderr(&output));
    let warning = format!("nn-model: warning: {}: missing", trainer_folder.join("dataset_fingerprint.json").display());
    assert!(stderr(&output).starts_with(&warning) && stderr(&output).lines().count() == 1, "{}", stderr(&output));
    let archive = zip::ZipArchive::new(std::fs::File::open(&without).unwrap()).unwrap();
    assert_eq!(archive.len(), EXPORTED_FILES.len() - 1);
    assert!(!archive.file_names().any(|name| name.ends_with("dataset_fingerprint.json")));
}

/// A run folder without the .pth checkpoints (nn-train's safetensors only) is refused naming the
/// missing file, and no zip is written.
#[test]
fn export_refuses_a_run_without_pth_checkpoints() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run_folder = dir.path().join("run");
    std::fs::create_dir_all(run_folder.join("fold_0")).unwrap();
    let model = reference(&shared).join("model");
    for file in ["plans.json", "dataset.json", "fold_0/checkpoint_final.safetensors", "fold_0/checkpoint_final.json"] {
        std::fs::copy(model.join(file), run_folder.join(file)).unwrap();
    }
    let fingerprint = reference(&shared).join("nnunet_results").join(TRAINER).join("dataset_fingerprint.json");
    std::fs::copy(fingerprint, run_folder.join("dataset_fingerprint.json")).unwrap();
    let zip = dir.path().join("model.zip");
    let output = run("nn-model", &[&"export", &run_folder, &"-o", &zip]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let missing = format!("nn-model: error: {}: missing", run_folder.join("fold_0/checkpoint_final.pth").display());
    assert!(stderr(&output).starts_with(&missing), "{}", stderr(&output));
    assert_eq!(stderr(&output).lines().count(), 1);
    assert!(!zip.exists());
}
