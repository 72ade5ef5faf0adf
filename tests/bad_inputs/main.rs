//! The bad-input corpus: every tool on every input it reads, spoilt one way at a time (see corpus.rs).
//! Each run must end with exit code 2 for bad input or 1 for a runtime failure (or 0 where nnU-Net
//! accepts the input, such as an empty label map), print an error line that names the spoilt file, not
//! panic, and leave no output and no temporary file behind. The tests gather every mismatch before
//! failing, and print how many tool x input runs they made.

mod corpus;
mod memory;
mod model_zips;

use nntools_tests::{binary, os_args as args, run, stderr};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A valid small dataset with everything the tools read: raw (2 channels, 2 labels, a test image),
/// fingerprint, plans, 3d_fullres preprocessed data and an (untrained) 3d_fullres run of fold 0.
struct Fixture {
    root: PathBuf,
    case: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let raw = root.join("raw");
        let ok = |output: std::process::Output| assert!(output.status.success(), "fixture: {}", stderr(&output));
        ok(run(
            "nn-synth",
            &[
                &"-o",
                &raw,
                &"--cases",
                &"6",
                &"--test-cases",
                &"1",
                &"--channels",
                &"2",
                &"--min-size",
                &"16",
                &"--max-size",
                &"20",
                &"--seed",
                &"3",
            ],
        ));
        ok(run("nn-fingerprint", &[&raw, &"-o", &root.join("fingerprint.json")]));
        ok(run(
            "nn-plan",
            &[&"--fingerprint", &root.join("fingerprint.json"), &"--dataset", &raw, &"-o", &root.join("plans.json")],
        ));
        ok(run(
            "nn-resample",
            &[&"--plans", &root.join("plans.json"), &"-c", &"3d_fullres", &"-i", &raw, &"-o", &root.join("pre"), &"-q"],
        ));
        ok(run(
            "nn-train",
            &[
                &"--plans",
                &root.join("plans.json"),
                &"-c",
                &"3d_fullres",
                &"--data",
                &root.join("pre"),
                &"--dataset",
                &raw.join("dataset.json"),
                &"--fold",
                &"0",
                &"-o",
                &root.join("run"),
                &"--epochs",
                &"0",
                &"--device",
                &"cpu",
                &"-q",
            ],
        ));
        let mut cases: Vec<String> = std::fs::read_dir(raw.join("labelsTr"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().replace(".nii.gz", ""))
            .collect();
        cases.sort();
        Fixture { root, case: cases.remove(0) }
    })
}

/// A fresh copy of the fixture to spoil.
struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("work");
        copy_tree(&fixture().root, &root);
        Self { _dir: dir, root }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative.replace("CASE", &fixture().case))
    }
}

/// Collects mismatches over many runs.
#[derive(Default)]
struct Report {
    runs: usize,
    failures: Vec<String>,
}

fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(".nntmp") {
            found.push(path);
        } else if path.is_dir() {
            found.extend(temporaries(&path));
        }
    }
    found
}

impl Report {
    /// Runs `tool args` and checks the outcome: `exit` 0 is success; otherwise the error must name
    /// `spoilt` and none of `outputs` may exist. No run may panic or leave a temporary file in `root`.
    /// Returns the run's stderr.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        what: &str,
        root: &Path,
        tool: &str,
        args: &[OsString],
        exit: i32,
        spoilt: &Path,
        outputs: &[PathBuf],
    ) -> String {
        self.runs += 1;
        let output = Command::new(binary(tool)).args(args).output().unwrap();
        let err = stderr(&output);
        let mut problems = Vec::new();
        if err.contains("panicked") {
            problems.push("panicked".to_owned());
        }
        if output.status.code() != Some(exit) {
            problems.push(format!("exit {:?}, expected {exit}", output.status.code()));
        }
        if exit != 0 {
            let name = spoilt.file_name().unwrap().to_string_lossy();
            let prefix = format!("{tool}: error: ");
            if !err.lines().any(|l| l.starts_with(&prefix) && l.contains(&*name)) {
                problems.push(format!("no error line naming {name}"));
            }
            for path in outputs.iter().filter(|p| p.exists()) {
                problems.push(format!("output {} left behind", path.display()));
            }
        }
        let left = temporaries(root);
        if !left.is_empty() {
            problems.push(format!("temporaries left: {left:?}"));
        }
        if !problems.is_empty() {
            let first = err.lines().find(|l| l.contains("error")).unwrap_or("").to_owned();
            self.failures.push(format!("{tool} on {what}: {}; stderr: {first}", problems.join(", ")));
        }
        err
    }

    /// As [`Report::check`] for bad input (exit 2), and stderr is the one line `TOOL: error: SPOILT: ...`:
    /// the file at fault is the one the message is about, not one it merely mentions.
    fn check_names_first(
        &mut self,
        what: &str,
        root: &Path,
        tool: &str,
        args: &[OsString],
        spoilt: &Path,
        outputs: &[PathBuf],
    ) {
        let err = self.check(what, root, tool, args, 2, spoilt, outputs);
        let prefix = format!("{tool}: error: {}: ", spoilt.display());
        if err.lines().count() != 1 || !err.starts_with(&prefix) {
            self.failures.push(format!("{tool} on {what}: expected one line starting {prefix:?}; stderr: {err}"));
        }
    }

    fn finish(self, name: &str) {
        eprintln!("{name}: {} tool x input runs, {} mismatches", self.runs, self.failures.len());
        assert!(self.failures.is_empty(), "{name}:\n{}", self.failures.join("\n"));
    }
}

type Spoil = fn(&Path);
/// A way to spoil a file, for the variants that are closures.
type Spoiler = Box<dyn Fn(&Path)>;

/// Spoilt raw datasets: nn-fingerprint and nn-resample read all of them, nn-dataset create the files.
#[test]
fn raw_datasets() {
    let image = "raw/imagesTr/CASE_0000.nii.gz";
    let second_channel = "raw/imagesTr/CASE_0001.nii.gz";
    let label = "raw/labelsTr/CASE.nii.gz";
    let json = "raw/dataset.json";
    // (what, file, spoil, exit of nn-fingerprint and nn-resample, exit of nn-dataset create or None)
    let variants: Vec<(&str, &str, Spoiler, i32, Option<i32>)> = vec![
        ("truncated gzip", image, Box::new(corpus::truncated_gzip as Spoil), 2, Some(2)),
        ("not gzip", image, Box::new(corpus::not_gzip_at_all as Spoil), 2, Some(2)),
        ("wrong magic", image, Box::new(corpus::wrong_magic as Spoil), 2, Some(2)),
        ("header claims more voxels", image, Box::new(corpus::more_voxels_than_data as Spoil), 2, Some(2)),
        ("2-D image", image, Box::new(corpus::two_dimensional as Spoil), 2, Some(2)),
        ("4-D image", image, Box::new(corpus::four_dimensional as Spoil), 2, Some(2)),
        ("NaN voxel", image, Box::new(corpus::nan_voxel as Spoil), 2, Some(2)),
        ("infinite voxel", second_channel, Box::new(corpus::infinite_voxel as Spoil), 2, Some(2)),
        ("missing channel file", second_channel, Box::new(corpus::remove as Spoil), 2, Some(2)),
        ("label shape differs", label, Box::new(corpus::one_slice_short as Spoil), 2, Some(2)),
        ("label spacing differs", label, Box::new(corpus::other_spacing as Spoil), 2, Some(2)),
        (
            "label direction differs (a warning in nnU-Net)",
            label,
            Box::new(corpus::other_direction as Spoil),
            0,
            Some(0),
        ),
        ("undeclared label", label, Box::new(corpus::undeclared_label as Spoil), 2, Some(2)),
        ("fractional labels", label, Box::new(corpus::fractional_labels as Spoil), 2, Some(2)),
        ("empty label map (accepted, as by nnU-Net)", label, Box::new(corpus::empty_labels as Spoil), 0, Some(0)),
        ("missing label", label, Box::new(corpus::remove as Spoil), 2, Some(2)),
        ("truncated dataset.json", json, Box::new(corpus::truncated_json as Spoil), 2, None),
        ("dataset.json without labels", json, Box::new(|p: &Path| corpus::without_key(p, "labels")), 2, None),
        (
            "dataset.json without channel_names",
            json,
            Box::new(|p: &Path| corpus::without_key(p, "channel_names")),
            2,
            None,
        ),
        (
            "dataset.json labels not integers",
            json,
            Box::new(|p: &Path| corpus::edit_json(p, |j| j["labels"]["background"] = "zero".into())),
            2,
            None,
        ),
        (
            "v1 dataset.json with a training entry lacking its label",
            json,
            Box::new(|p: &Path| {
                corpus::edit_json(p, |j| {
                    let cases: Vec<String> =
                        (0..j["numTraining"].as_u64().unwrap()).map(|i| format!("case_{i}")).collect();
                    *j = serde_json::json!({"modality": {"0": "MRI", "1": "MRI"}, "labels": {"0": "background", "1": "a", "2": "b"},
                "numTraining": cases.len(), "training": cases.iter().map(|c| serde_json::json!({"image": format!("./imagesTr/{c}.nii.gz")})).collect::<Vec<_>>()});
                })
            }),
            2,
            None,
        ),
        (
            "v1 dataset.json with a non-integer label value",
            json,
            Box::new(|p: &Path| {
                corpus::edit_json(p, |j| {
                    *j = serde_json::json!({"modality": {"0": "MRI", "1": "MRI"}, "labels": {"0": "background", "one": "a"}, "numTraining": j["numTraining"].clone()});
                })
            }),
            2,
            None,
        ),
    ];
    let mut report = Report::default();
    for (what, file, spoil, exit, create_exit) in &variants {
        let scratch = Scratch::new();
        let spoilt = scratch.path(file);
        spoil(&spoilt);
        let raw = scratch.path("raw");
        let out = scratch.path("out");
        let fingerprint = out.join("fingerprint.json");
        std::fs::create_dir_all(&out).unwrap();
        report.check(
            what,
            &scratch.root,
            "nn-fingerprint",
            &args(&[&raw, &"-o", &fingerprint]),
            *exit,
            &spoilt,
            std::slice::from_ref(&fingerprint),
        );
        let pre = out.join("pre");
        let case_outputs = ["npy", "json"].map(|e| pre.join(format!("{}.{e}", fixture().case))).to_vec();
        let mut outputs = case_outputs.clone();
        outputs.push(pre.join("manifest.json"));
        report.check(
            what,
            &scratch.root,
            "nn-resample",
            &args(&[&"--plans", &scratch.path("plans.json"), &"-c", &"3d_fullres", &"-i", &raw, &"-o", &pre, &"-q"]),
            *exit,
            &spoilt,
            &outputs,
        );
        if let Some(create_exit) = create_exit {
            let created = out.join("created");
            report.check(
                what,
                &scratch.root,
                "nn-dataset",
                &args(&[
                    &"create",
                    &"--images",
                    &raw.join("imagesTr"),
                    &"--labels",
                    &raw.join("labelsTr"),
                    &"--channel",
                    &"0=MRI",
                    &"--channel",
                    &"1=MRI",
                    &"--label",
                    &"0=background",
                    &"--label",
                    &"1=a",
                    &"--label",
                    &"2=b",
                    &"-o",
                    &created,
                ]),
                *create_exit,
                &spoilt,
                std::slice::from_ref(&created),
            );
        }
    }
    // numTraining is an integrity check of nn-fingerprint's; preprocessing takes the cases there are
    let scratch = Scratch::new();
    let spoilt = scratch.path(json);
    corpus::edit_json(&spoilt, |j| j["numTraining"] = 99.into());
    let fingerprint = scratch.path("fingerprint_out.json");
    report.check(
        "a wrong numTraining",
        &scratch.root,
        "nn-fingerprint",
        &args(&[&scratch.path("raw"), &"-o", &fingerprint]),
        2,
        &spoilt,
        &[fingerprint],
    );
    report.check(
        "a wrong numTraining",
        &scratch.root,
        "nn-resample",
        &args(&[
            &"--plans",
            &scratch.path("plans.json"),
            &"-c",
            &"3d_fullres",
            &"-i",
            &scratch.path("raw"),
            &"-o",
            &scratch.path("pre_new"),
            &"-q",
        ]),
        0,
        &spoilt,
        &[],
    );
    // stray files that are not images are ignored, as nnU-Net ignores them; an image without a label is not
    let scratch = Scratch::new();
    std::fs::write(scratch.path("raw/imagesTr/notes.txt"), "a note\n").unwrap();
    std::fs::write(scratch.path("raw/labelsTr/.DS_Store"), "").unwrap();
    let fingerprint = scratch.path("fingerprint_out.json");
    report.check(
        "stray non-image files",
        &scratch.root,
        "nn-fingerprint",
        &args(&[&scratch.path("raw"), &"-o", &fingerprint]),
        0,
        Path::new("-"),
        &[],
    );
    let extra = scratch.path("raw/imagesTr/extra_0000.nii.gz");
    std::fs::copy(scratch.path("raw/imagesTr/CASE_0000.nii.gz"), &extra).unwrap();
    corpus::edit_json(&scratch.path(json), |j| j["numTraining"] = 7.into());
    std::fs::copy(scratch.path("raw/imagesTr/CASE_0001.nii.gz"), scratch.path("raw/imagesTr/extra_0001.nii.gz"))
        .unwrap();
    std::fs::remove_file(&fingerprint).unwrap();
    report.check(
        "an image without a label",
        &scratch.root,
        "nn-fingerprint",
        &args(&[&scratch.path("raw"), &"-o", &fingerprint]),
        2,
        &scratch.path("raw/labelsTr/extra.nii.gz"),
        std::slice::from_ref(&fingerprint),
    );
    report.finish("raw datasets");
}

/// Spoilt images to predict (nn-infer) and spoilt predictions to evaluate (nn-eval).
#[test]
fn images_to_predict_and_label_maps_to_evaluate() {
    let image_spoils: [(&str, Spoil); 7] = [
        ("truncated gzip", corpus::truncated_gzip),
        ("not gzip", corpus::not_gzip_at_all),
        ("wrong magic", corpus::wrong_magic),
        ("header claims more voxels", corpus::more_voxels_than_data),
        ("2-D image", corpus::two_dimensional),
        ("4-D image", corpus::four_dimensional),
        ("NaN voxel", corpus::nan_voxel),
    ];
    let mut report = Report::default();
    for (what, spoil) in image_spoils {
        let scratch = Scratch::new();
        let test_images = scratch.path("raw/imagesTs");
        let spoilt = std::fs::read_dir(&test_images).unwrap().map(|e| e.unwrap().path()).min().unwrap();
        spoil(&spoilt);
        let predictions = scratch.path("predictions");
        report.check(
            what,
            &scratch.root,
            "nn-infer",
            &prediction(&scratch, &test_images, &predictions, &[]),
            2,
            &spoilt,
            std::slice::from_ref(&predictions),
        );
    }
    let label_spoils: [(&str, Spoil); 8] = [
        ("truncated gzip", corpus::truncated_gzip),
        ("wrong magic", corpus::wrong_magic),
        ("header claims more voxels", corpus::more_voxels_than_data),
        ("4-D label map", corpus::four_dimensional),
        ("shape differs from the reference", corpus::one_slice_short),
        ("spacing differs from the reference", corpus::other_spacing),
        ("undeclared label", corpus::undeclared_label),
        ("fractional labels", corpus::fractional_labels),
    ];
    for (what, spoil) in label_spoils {
        let scratch = Scratch::new();
        let predictions = scratch.path("pred");
        copy_tree(&scratch.path("raw/labelsTr"), &predictions);
        let spoilt = predictions.join(format!("{}.nii.gz", fixture().case));
        spoil(&spoilt);
        let summary = scratch.path("summary.json");
        report.check(
            what,
            &scratch.root,
            "nn-eval",
            &args(&[&"--ref", &scratch.path("raw/labelsTr"), &"--pred", &predictions, &"-o", &summary]),
            2,
            &spoilt,
            std::slice::from_ref(&summary),
        );
    }
    report.finish("images and label maps");
}

/// Spoilt plans (nn-resample, nn-train, nn-infer's model folder), preprocessed data (nn-train) and
/// checkpoints (nn-infer).
#[test]
fn plans_preprocessed_data_and_checkpoints() {
    let configuration = |j: &mut serde_json::Value| j["configurations"]["3d_fullres"].clone();
    let plan_spoils: Vec<(&str, Spoiler)> = vec![
        ("truncated plans", Box::new(corpus::truncated_json as Spoil)),
        ("plans without configurations", Box::new(|p: &Path| corpus::without_key(p, "configurations"))),
        (
            "a configuration without patch_size",
            Box::new(|p: &Path| {
                corpus::edit_json(p, |j| {
                    j["configurations"]["3d_fullres"].as_object_mut().unwrap().remove("patch_size");
                })
            }),
        ),
        (
            "a 3d patch_size with two entries",
            Box::new(move |p: &Path| {
                corpus::edit_json(p, |j| {
                    let mut c = configuration(j);
                    c["patch_size"] = serde_json::json!([16, 16]);
                    j["configurations"]["3d_fullres"] = c;
                })
            }),
        ),
        (
            "a spacing with two entries",
            Box::new(move |p: &Path| {
                corpus::edit_json(p, |j| {
                    let mut c = configuration(j);
                    c["spacing"] = serde_json::json!([1.0, 1.0]);
                    j["configurations"]["3d_fullres"] = c;
                })
            }),
        ),
        (
            "pool kernels inconsistent with the stages",
            Box::new(move |p: &Path| {
                corpus::edit_json(p, |j| {
                    let mut c = configuration(j);
                    c["architecture"]["arch_kwargs"]["strides"].as_array_mut().unwrap().pop();
                    j["configurations"]["3d_fullres"] = c;
                })
            }),
        ),
        // Issue 24: these panicked in every nn-resample worker and inside libtorch in nn-train.
        (
            "a transpose_forward with an axis twice",
            Box::new(|p: &Path| corpus::edit_json(p, |j| j["transpose_forward"] = serde_json::json!([0, 0, 1]))),
        ),
        (
            "a transpose_forward with axis 5",
            Box::new(|p: &Path| corpus::edit_json(p, |j| j["transpose_forward"] = serde_json::json!([0, 1, 5]))),
        ),
        (
            "a stage of no features",
            Box::new(move |p: &Path| {
                corpus::edit_json(p, |j| {
                    let mut c = configuration(j);
                    c["architecture"]["arch_kwargs"]["features_per_stage"][1] = serde_json::json!(0);
                    j["configurations"]["3d_fullres"] = c;
                })
            }),
        ),
        (
            "a stage of no convolutions",
            Box::new(move |p: &Path| {
                corpus::edit_json(p, |j| {
                    let mut c = configuration(j);
                    c["architecture"]["arch_kwargs"]["n_conv_per_stage"][0] = serde_json::json!(0);
                    j["configurations"]["3d_fullres"] = c;
                })
            }),
        ),
    ];
    let mut report = Report::default();
    for (what, spoil) in &plan_spoils {
        let scratch = Scratch::new();
        let plans = scratch.path("plans.json");
        spoil(&plans);
        let pre = scratch.path("pre_new");
        report.check(
            what,
            &scratch.root,
            "nn-resample",
            &args(&[&"--plans", &plans, &"-c", &"3d_fullres", &"-i", &scratch.path("raw"), &"-o", &pre, &"-q"]),
            2,
            &plans,
            &[pre.join("manifest.json")],
        );
        let run_dir = scratch.path("run_new");
        report.check(
            what,
            &scratch.root,
            "nn-train",
            &one_iteration_training(&scratch, "0", &run_dir, &[]),
            2,
            &plans,
            std::slice::from_ref(&run_dir),
        );
        let model_plans = scratch.path("run/plans.json");
        spoil(&model_plans);
        let predictions = scratch.path("predictions");
        report.check(
            what,
            &scratch.root,
            "nn-infer",
            &prediction(&scratch, &scratch.path("raw/imagesTs"), &predictions, &[]),
            2,
            &model_plans,
            std::slice::from_ref(&predictions),
        );
    }
    let scratch = Scratch::new();
    report.check(
        "an unknown configuration",
        &scratch.root,
        "nn-resample",
        &args(&[
            &"--plans",
            &scratch.path("plans.json"),
            &"-c",
            &"3d_nope",
            &"-i",
            &scratch.path("raw"),
            &"-o",
            &scratch.path("pre_new"),
            &"-q",
        ]),
        2,
        &scratch.path("plans.json"),
        &[scratch.path("pre_new")],
    );

    let data_spoils: [(&str, &str, Spoil); 4] = [
        ("a preprocessed case without its array", "pre/CASE.npy", corpus::remove),
        ("a truncated preprocessed array", "pre/CASE.npy", |p| {
            let bytes = std::fs::read(p).unwrap();
            std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
        }),
        ("a preprocessed segmentation that is not npy", "pre/CASE_seg.npy", corpus::not_gzip_at_all),
        ("a preprocessed case without its properties", "pre/CASE.json", corpus::remove),
    ];
    for (what, file, spoil) in data_spoils {
        let scratch = Scratch::new();
        let spoilt = scratch.path(file);
        spoil(&spoilt);
        let run_dir = scratch.path("run_new");
        report.check(
            what,
            &scratch.root,
            "nn-train",
            &one_iteration_training(&scratch, "all", &run_dir, &[]),
            2,
            &spoilt,
            &[run_dir.join("fold_all/checkpoint_final.json")],
        );
    }

    let checkpoint_spoils: [(&str, &str, Spoil); 8] = [
        ("a checkpoint of another configuration", "run/fold_0/checkpoint_final.json", |p| {
            corpus::edit_json(p, |j| j["configuration"] = "2d".into())
        }),
        ("a truncated checkpoint", "run/fold_0/checkpoint_final.safetensors", |p| {
            let bytes = std::fs::read(p).unwrap();
            std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
        }),
        ("a missing checkpoint", "run/fold_0/checkpoint_final.safetensors", |p| {
            corpus::remove(p);
            corpus::remove(&p.with_extension("pth"));
        }),
        ("a checkpoint with another network's weights", "run/fold_0/checkpoint_final.safetensors", |p| {
            std::fs::write(p, b"\x10\0\0\0\0\0\0\0{\"x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}")
                .unwrap();
        }),
        // nnU-Net's .pth, read where the fold has no safetensors: spoilt as the checkpoint reader's tests spoil it
        ("a truncated .pth", "run/fold_0/checkpoint_final.pth", |p| {
            only_pth(p);
            let bytes = std::fs::read(p).unwrap();
            std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
        }),
        ("a .pth whose pickle calls os.system", "run/fold_0/checkpoint_final.pth", |p| hostile_pth(p, "os_system.pth")),
        ("a .pth without a tensor's storage", "run/fold_0/checkpoint_final.pth", |p| {
            hostile_pth(p, "missing_storage.pth")
        }),
        ("a .pth with a tensor larger than its storage", "run/fold_0/checkpoint_final.pth", |p| {
            hostile_pth(p, "shape_beyond_storage.pth")
        }),
    ];
    for (what, file, spoil) in checkpoint_spoils {
        let scratch = Scratch::new();
        let spoilt = scratch.path(file);
        spoil(&spoilt);
        let predictions = scratch.path("predictions");
        // the sidecar and the weights are one checkpoint: an error naming either names it
        report.check(
            what,
            &scratch.root,
            "nn-infer",
            &prediction(&scratch, &scratch.path("raw/imagesTs"), &predictions, &["--folds", "0"]),
            2,
            Path::new("checkpoint_final"),
            std::slice::from_ref(&predictions),
        );
    }
    report.finish("plans, preprocessed data and checkpoints");
}

/// Leaves the fold's `.pth` as its only checkpoint (nn-infer reads safetensors where both exist).
fn only_pth(pth: &Path) {
    corpus::remove(&pth.with_extension("safetensors"));
    corpus::remove(&pth.with_extension("json"));
}

/// Replaces the fold's checkpoint by one of the checkpoint reader's hostile `.pth` fixtures.
fn hostile_pth(pth: &Path, fixture: &str) {
    only_pth(pth);
    let fixtures = nntools_tests::workspace().join("libs/checkpoint/tests/fixtures/read");
    std::fs::copy(fixtures.join(fixture), pth).unwrap();
}

/// nn-infer's arguments to predict `images` with `scratch`'s model into `out` on the CPU, quietly.
fn prediction(scratch: &Scratch, images: &Path, out: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut list = args(&[&"-m", &scratch.path("run"), &"-i", &images, &"-o", &out, &"--device", &"cpu", &"-q"]);
    list.extend(extra.iter().map(OsString::from));
    list
}

/// nn-train's arguments for a run of one iteration on the CPU on `scratch`'s plans, preprocessed data
/// and dataset.json: enough to reach every input it checks.
fn one_iteration_training(scratch: &Scratch, fold: &str, run: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut list = args(&[
        &"--plans",
        &scratch.path("plans.json"),
        &"-c",
        &"3d_fullres",
        &"--data",
        &scratch.path("pre"),
        &"--dataset",
        &scratch.path("raw/dataset.json"),
        &"--fold",
        &fold,
        &"-o",
        &run,
        &"--epochs",
        &"1",
        &"--iters",
        &"1",
        &"--val-iters",
        &"1",
        &"--device",
        &"cpu",
        &"-q",
    ]);
    list.extend(extra.iter().map(OsString::from));
    list
}

/// Every file under `dir` with its contents, to tell that a refused run changed nothing.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(contents(&path));
        } else {
            found.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    found.sort();
    found
}

/// nn-train --resume from a corrupt checkpoint of an interrupted run (`checkpoint_latest`): the error
/// is about the checkpoint's spoilt file, not the plans, and the run folder is left as it was.
#[test]
fn resume_from_a_corrupt_checkpoint() {
    let truncated: Spoil = |p| {
        let bytes = std::fs::read(p).unwrap();
        std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
    };
    let spoils: [(&str, &str, Spoil); 5] = [
        ("truncated weights", "checkpoint_latest.safetensors", truncated),
        ("weights that are text", "checkpoint_latest.safetensors", corpus::not_gzip_at_all),
        ("truncated momentum", "checkpoint_latest.momentum.safetensors", truncated),
        ("a truncated sidecar", "checkpoint_latest.json", corpus::truncated_json),
        ("a sidecar without its epoch", "checkpoint_latest.json", |p| corpus::without_key(p, "epoch")),
    ];
    let mut report = Report::default();
    for (what, file, spoil) in spoils {
        let scratch = Scratch::new();
        // the fixture's run stopped before its first epoch; interrupted there, it would have left
        // the same files under the name checkpoint_latest
        let fold = scratch.path("run/fold_0");
        for part in [".safetensors", ".momentum.safetensors", ".json"] {
            let name = |checkpoint: &str| fold.join(format!("checkpoint_{checkpoint}{part}"));
            std::fs::rename(name("final"), name("latest")).unwrap();
        }
        let spoilt = fold.join(file);
        spoil(&spoilt);
        let before = contents(&scratch.path("run"));
        report.check_names_first(
            what,
            &scratch.root,
            "nn-train",
            &one_iteration_training(&scratch, "0", &scratch.path("run"), &["--resume"]),
            &spoilt,
            &[fold.join("checkpoint_final.json"), fold.join("log.jsonl")],
        );
        if contents(&scratch.path("run")) != before {
            report.failures.push(format!("nn-train on {what}: the run folder changed"));
        }
    }
    report.finish("corrupt checkpoints");
}

/// nn-plan on a dataset.json that declares only the background: the error is about dataset.json, not
/// the fingerprint it was given with.
#[test]
fn plan_without_a_foreground_label() {
    let scratch = Scratch::new();
    let json = scratch.path("raw/dataset.json");
    corpus::edit_json(&json, |j| j["labels"] = serde_json::json!({"background": 0}));
    let plans = scratch.path("plans_new.json");
    let mut report = Report::default();
    report.check_names_first(
        "a dataset.json with only the background",
        &scratch.root,
        "nn-plan",
        &args(&[&"--fingerprint", &scratch.path("fingerprint.json"), &"--dataset", &json, &"-o", &plans]),
        &json,
        std::slice::from_ref(&plans),
    );
    report.finish("a plan without foreground");
}

/// `--part K/N` naming no part (K past N-1, negative, not numbers, N zero): exit 2 with one line about
/// `--part`, before anything is written.
#[test]
fn bad_part_values() {
    let scratch = Scratch::new();
    let flag = Path::new("--part");
    let mut report = Report::default();
    for part in ["3/2", "-1/2", "a/b", "0/0"] {
        let output = scratch.path("pre_part");
        report.check_names_first(
            &format!("--part {part}"),
            &scratch.root,
            "nn-resample",
            &args(&[
                &"--plans",
                &scratch.path("plans.json"),
                &"-c",
                &"3d_fullres",
                &"-i",
                &scratch.path("raw"),
                &"-o",
                &output,
                &"--part",
                &part,
            ]),
            flag,
            std::slice::from_ref(&output),
        );
        let predictions = scratch.path("predictions_part");
        report.check_names_first(
            &format!("--part {part}"),
            &scratch.root,
            "nn-infer",
            &args(&[
                &"-m",
                &scratch.path("run"),
                &"-i",
                &scratch.path("raw/imagesTs"),
                &"-o",
                &predictions,
                &"--device",
                &"cpu",
                &"--part",
                &part,
            ]),
            flag,
            std::slice::from_ref(&predictions),
        );
    }
    report.finish("bad --part values");
}

/// A tmpfs mounted for the test (read-only, or tiny and filled up), unmounted when dropped.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn new(options: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(dir.path()).output().ok()?;
        status.status.success().then_some(Self { dir })
    }

    /// A tiny tmpfs with no space left.
    fn full() -> Option<Self> {
        let mount = Self::new("size=64k")?;
        let mut filler = std::fs::File::create(mount.dir.path().join("filler")).unwrap();
        while std::io::Write::write_all(&mut filler, &[0u8; 4096]).is_ok() {}
        Some(mount)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Every tool writing into a read-only file system and into a full one: exit 1 (the machine failed,
/// not the input), an error naming the output, nothing left behind. Needs permission to mount a
/// tmpfs (root, as in CI); elsewhere the full disk is simulated by stdout on /dev/full.
#[test]
fn unwritable_and_full_outputs() {
    let scratch = Scratch::new();
    let mut report = Report::default();
    let (Some(read_only), Some(full)) = (Mount::new("ro,size=64k"), Mount::full()) else {
        eprintln!("no tmpfs mount allowed here: simulating a full disk with /dev/full only");
        for (tool, args) in [
            ("nn-fingerprint", args(&[&scratch.path("raw"), &"-o", &"-"])),
            (
                "nn-eval",
                args(&[&"--ref", &scratch.path("raw/labelsTr"), &"--pred", &scratch.path("raw/labelsTr"), &"-o", &"-"]),
            ),
        ] {
            let output = Command::new(binary(tool))
                .args(&args)
                .stdout(std::fs::File::options().write(true).open("/dev/full").unwrap())
                .output()
                .unwrap();
            assert_eq!(output.status.code(), Some(1), "{tool}: {}", stderr(&output));
            assert!(stderr(&output).contains("stdout"), "{tool}: {}", stderr(&output));
        }
        return;
    };
    for (medium, root) in [("a read-only file system", read_only.dir.path()), ("a full disk", full.dir.path())] {
        let out = |name: &str| root.join(name);
        let raw = scratch.path("raw");
        let runs: Vec<(&str, Vec<OsString>, PathBuf, Vec<PathBuf>)> = vec![
            (
                "nn-fingerprint",
                args(&[&raw, &"-o", &out("fingerprint.json")]),
                out("fingerprint.json"),
                vec![out("fingerprint.json")],
            ),
            (
                "nn-plan",
                args(&[
                    &"--fingerprint",
                    &scratch.path("fingerprint.json"),
                    &"--dataset",
                    &raw,
                    &"-o",
                    &out("plans.json"),
                ]),
                out("plans.json"),
                vec![out("plans.json")],
            ),
            (
                "nn-resample",
                args(&[
                    &"--plans",
                    &scratch.path("plans.json"),
                    &"-c",
                    &"3d_fullres",
                    &"-i",
                    &raw,
                    &"-o",
                    &out("pre"),
                    &"-q",
                ]),
                out("pre"),
                vec![out("pre/manifest.json")],
            ),
            (
                "nn-synth",
                args(&[&"-o", &out("synth"), &"--cases", &"2", &"--min-size", &"16", &"--max-size", &"16"]),
                out("synth"),
                vec![out("synth")],
            ),
            (
                "nn-dataset",
                args(&[
                    &"create",
                    &"--images",
                    &raw.join("imagesTr"),
                    &"--labels",
                    &raw.join("labelsTr"),
                    &"--channel",
                    &"0=MRI",
                    &"--channel",
                    &"1=MRI",
                    &"-o",
                    &out("created"),
                ]),
                out("created"),
                vec![out("created")],
            ),
            (
                "nn-train",
                one_iteration_training(&scratch, "0", &out("run"), &[]),
                out("run"),
                vec![out("run/fold_0/checkpoint_final.json")],
            ),
            (
                "nn-infer",
                prediction(&scratch, &raw.join("imagesTs"), &out("predictions"), &[]),
                out("predictions"),
                vec![out("predictions/plans.json")],
            ),
            (
                "nn-eval",
                args(&[&"--ref", &raw.join("labelsTr"), &"--pred", &raw.join("labelsTr"), &"-o", &out("summary.json")]),
                out("summary.json"),
                vec![out("summary.json")],
            ),
        ];
        for (tool, arguments, named, outputs) in runs {
            report.check(medium, root, tool, &arguments, 1, &named, &outputs);
        }
    }
    report.finish("unwritable and full outputs");
}

/// Case names with spaces and non-ASCII letters, and names as long as a file name may be (240
/// characters: `NAME_locations.npy` has 254 bytes, the temporary written before it must fit too), go
/// through fingerprint, preprocessing and evaluation and come out under the same names.
#[test]
fn case_names_with_spaces_unicode_and_the_longest_length_work() {
    let case = &fixture().case;
    let mut report = Report::default();
    let long = "c".repeat(240);
    for (what, name) in [("a case named with a space and an umlaut", "Fall ü 1"), ("a 240-character case name", &long)]
    {
        let scratch = Scratch::new();
        for (from, to) in [
            (format!("raw/imagesTr/{case}_0000.nii.gz"), format!("raw/imagesTr/{name}_0000.nii.gz")),
            (format!("raw/imagesTr/{case}_0001.nii.gz"), format!("raw/imagesTr/{name}_0001.nii.gz")),
            (format!("raw/labelsTr/{case}.nii.gz"), format!("raw/labelsTr/{name}.nii.gz")),
        ] {
            std::fs::rename(scratch.root.join(from), scratch.root.join(to)).unwrap();
        }
        let raw = scratch.path("raw");
        report.check(
            what,
            &scratch.root,
            "nn-fingerprint",
            &args(&[&raw, &"-o", &scratch.path("fp.json")]),
            0,
            Path::new("-"),
            &[],
        );
        let pre = scratch.path("pre_named");
        report.check(
            what,
            &scratch.root,
            "nn-resample",
            &args(&[&"--plans", &scratch.path("plans.json"), &"-c", &"3d_fullres", &"-i", &raw, &"-o", &pre, &"-q"]),
            0,
            Path::new("-"),
            &[],
        );
        let summary = scratch.path("summary.json");
        report.check(
            what,
            &scratch.root,
            "nn-eval",
            &args(&[&"--ref", &raw.join("labelsTr"), &"--pred", &raw.join("labelsTr"), &"-o", &summary]),
            0,
            Path::new("-"),
            &[],
        );
        assert!(pre.join(format!("{name}.npy")).is_file() && pre.join(format!("{name}_locations.npy")).is_file());
        assert!(std::fs::read_to_string(&summary).unwrap_or_default().contains(name), "{what}: summary.json");
    }
    report.finish("case names");
}

/// `-o` naming a symbolic link writes the file it points to, a FIFO is written into (a reader gets the
/// plans), and neither is replaced by a regular file; `-o` naming a folder is refused as bad input.
#[test]
fn outputs_through_links_and_fifos_and_a_folder_refused() {
    use std::os::unix::fs::FileTypeExt;
    let scratch = Scratch::new();
    let plan = |output: &Path| {
        run("nn-plan", &[&"-f", &scratch.path("fingerprint.json"), &"-d", &scratch.path("raw"), &"-o", &output])
    };
    let expected = std::fs::read_to_string(scratch.path("plans.json")).unwrap();

    let target = scratch.path("linked_plans.json");
    std::fs::write(&target, "old").unwrap();
    let link = scratch.path("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let output = plan(&link);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link is kept");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), expected, "the link's target holds the plans");

    let fifo = scratch.path("fifo.json");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let output = plan(&fifo);
    assert!(output.status.success(), "{}", stderr(&output));
    // checked first: were the FIFO replaced, its reader would wait for ever
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO is kept");
    assert_eq!(reader.join().unwrap(), expected, "the FIFO's reader gets the plans");

    let folder = scratch.path("raw");
    let output = plan(&folder);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(stderr(&output), format!("nn-plan: error: {}: is a folder, expected a file name\n", folder.display()));
}

/// The fixture's raw dataset rewritten in another format (`ending`): 3-D formats keep every voxel and
/// the geometry; 2-D formats (`.png`) take the middle slice of each case, rescaled to 8 bits.
fn converted(scratch: &Scratch, ending: &str) -> PathBuf {
    use nntools_io::{Geometry, PixelType, Stored, read_image, read_label_map, write_image, write_label_map};
    let from = scratch.path("raw");
    let to = scratch.path(&format!("raw{}", ending.replace('.', "_")));
    let planar = ending == ".png";
    for folder in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(to.join(folder)).unwrap();
        for entry in std::fs::read_dir(from.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().replace(".nii.gz", ending);
            let target = to.join(folder).join(name);
            let plane = Geometry::of_plane([1.0, 1.0], [0.0, 0.0], [1.0, 0.0, 0.0, 1.0]);
            if folder == "labelsTr" {
                let label = read_label_map(&path).unwrap();
                let mut data = label.data.mapv(|l| l as u16);
                if planar {
                    let middle = data.shape()[0] / 2;
                    data = data.slice(ndarray::s![middle..=middle, .., ..]).to_owned();
                    write_label_map(&target, data.view(), &plane, &Stored::new(2, PixelType::U8)).unwrap();
                } else {
                    write_label_map(&target, data.view(), &label.geometry, &Stored::new(3, PixelType::U8)).unwrap();
                }
            } else {
                let mut image = read_image(&path).unwrap();
                if planar {
                    let middle = image.data.shape()[0] / 2;
                    let slice = image.data.slice(ndarray::s![middle..=middle, .., ..]);
                    let (lo, hi) = slice.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                    let data = slice.mapv(|v| ((v - lo) / (hi - lo).max(1e-6) * 255.0).round());
                    image = nntools_io::Image { data, geometry: plane, stored: Stored::new(2, PixelType::U8) };
                }
                write_image(&target, &image).unwrap();
            }
        }
    }
    let json = std::fs::read_to_string(from.join("dataset.json")).unwrap();
    std::fs::write(to.join("dataset.json"), json.replace(".nii.gz", ending)).unwrap();
    to
}

/// Replaces `from` by `to` in a file's bytes (a header field), which must hold it.
fn edit_header(path: &Path, from: &str, to: &str) {
    let bytes = std::fs::read(path).unwrap();
    let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).unwrap_or_else(|| panic!("{from:?}"));
    let mut edited = bytes[..at].to_vec();
    edited.extend_from_slice(to.as_bytes());
    edited.extend_from_slice(&bytes[at + from.len()..]);
    std::fs::write(path, edited).unwrap();
}

/// An RGB PNG of `path`'s grey image (the grey values in all three channels).
fn make_rgb(path: &Path) {
    let image = nntools_io::read_image(path).unwrap();
    let (height, width) = (image.data.shape()[1], image.data.shape()[2]);
    let rgb: Vec<u8> = image.data.iter().flat_map(|&v| [v as u8; 3]).collect();
    let mut encoder = png::Encoder::new(std::fs::File::create(path).unwrap(), width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.write_header().unwrap().write_image_data(&rgb).unwrap();
}

/// Images and label maps in the other formats, spoilt the ways those formats can be: every stage that
/// reads raw data refuses them with one line naming the file, exit 2 and nothing written.
#[test]
fn other_formats() {
    fn truncate(path: &Path) {
        let bytes = std::fs::read(path).unwrap();
        std::fs::write(path, &bytes[..bytes.len() - 40]).unwrap();
    }
    let variants: Vec<(&str, &str, &str, Spoiler)> = vec![
        ("truncated .mha", ".mha", "imagesTr/CASE_0000.mha", Box::new(truncate)),
        (
            ".mha header promising more voxels",
            ".mha",
            "imagesTr/CASE_0001.mha",
            Box::new(|p: &Path| {
                let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
                let sizes = text.lines().find(|l| l.starts_with("DimSize = ")).unwrap().to_owned();
                edit_header(p, &sizes, &format!("{sizes}0"));
            }),
        ),
        (
            ".mhd whose data file is missing",
            ".mha",
            "labelsTr/CASE.mha",
            Box::new(|p: &Path| edit_header(p, "ElementDataFile = LOCAL", "ElementDataFile = CASE.zraw")),
        ),
        (
            "unsupported NRRD encoding",
            ".nrrd",
            "imagesTr/CASE_0000.nrrd",
            Box::new(|p: &Path| edit_header(p, "encoding: gzip", "encoding: bzip2")),
        ),
        (
            "unsupported NRRD pixel type",
            ".nrrd",
            "labelsTr/CASE.nrrd",
            Box::new(|p: &Path| edit_header(p, "type: unsigned char", "type: block")),
        ),
        ("truncated PNG", ".png", "imagesTr/CASE_0001.png", Box::new(truncate)),
        ("an RGB channel among grey ones", ".png", "imagesTr/CASE_0001.png", Box::new(make_rgb)),
        ("an RGB label map", ".png", "labelsTr/CASE.png", Box::new(make_rgb)),
        (
            "a label beyond the declared ones",
            ".png",
            "labelsTr/CASE.png",
            Box::new(|p: &Path| {
                let label = nntools_io::read_label_map(p).unwrap();
                let mut data = label.data.mapv(|l| l as u16);
                data[[0, 0, 0]] = 7;
                nntools_io::write_label_map(p, data.view(), &label.geometry, &label.stored).unwrap();
            }),
        ),
    ];
    let mut report = Report::default();
    for (what, ending, file, spoil) in variants {
        let scratch = Scratch::new();
        let raw = converted(&scratch, ending);
        let spoilt = raw.join(file.replace("CASE", &fixture().case));
        spoil(&spoilt);
        let fingerprint = scratch.path("format_fingerprint.json");
        report.check(
            what,
            &scratch.root,
            "nn-fingerprint",
            &args(&[&raw, &"-o", &fingerprint]),
            2,
            &spoilt,
            &[fingerprint],
        );
    }
    // the same conversions intact pass, so the refusals above are the spoils'
    let scratch = Scratch::new();
    for ending in [".mha", ".nrrd", ".png"] {
        let raw = converted(&scratch, ending);
        let output = run("nn-fingerprint", &[&raw, &"--verify-only"]);
        assert!(output.status.success(), "{ending}: {}", stderr(&output));
    }
    report.finish("other formats");
}

/// Runs `tool args` and checks it refuses bad input (exit 2) with exactly `message` on stderr.
fn assert_refused(tool: &str, args: &[&dyn AsRef<std::ffi::OsStr>], message: &str) {
    let output = run(tool, args);
    assert_eq!(
        (output.status.code(), stderr(&output).as_str()),
        (Some(2), format!("{tool}: error: {message}\n").as_str())
    );
}

/// `path`'s label map rewritten in `geometry` (same voxels).
fn with_geometry(path: &Path, geometry: nntools_io::Geometry) {
    let label = nntools_io::read_label_map(path).unwrap();
    let shape = label.data.shape();
    let header = nntools_io::new_header(&geometry, [shape[0], shape[1], shape[2]]);
    nntools_io::write_like(path, label.data.mapv(|v| v as u8).view(), &header).unwrap();
}

/// nn-eval names what differs between a prediction's geometry and its reference's, with both values
/// (prediction first), and nothing that matches.
#[test]
fn eval_names_the_geometry_that_differs() {
    let scratch = Scratch::new();
    let references = scratch.path("raw/labelsTr");
    let reference = scratch.path("raw/labelsTr/CASE.nii.gz");
    let truth = nntools_io::read_label_map(&reference).unwrap().geometry;
    let rotated = [0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    let moved = [truth.origin[0], truth.origin[1], truth.origin[2] + 5.0];
    let variants = [
        ("origin", nntools_io::Geometry { origin: moved, ..truth }, format!("origin {moved:?} vs {:?}", truth.origin)),
        (
            "direction",
            nntools_io::Geometry { direction: rotated, ..truth },
            format!("direction {rotated:?} vs {:?}", truth.direction),
        ),
    ];
    for (what, geometry, differences) in variants {
        let predictions = scratch.path(&format!("pred_{what}"));
        copy_tree(&references, &predictions);
        let spoilt = predictions.join(format!("{}.nii.gz", fixture().case));
        with_geometry(&spoilt, geometry);
        let summary = scratch.path("summary.json");
        assert_refused(
            "nn-eval",
            &[&"--ref", &references, &"--pred", &predictions, &"-o", &summary],
            &format!(
                "{}: differs from the reference {} (prediction vs reference): {differences}",
                spoilt.display(),
                reference.display()
            ),
        );
        assert!(!summary.exists(), "{what}: no summary");
    }
}

/// nn-infer given the images of a case by name: one too many, one after a gap, or one twice is named,
/// with the channels expected and found.
#[test]
fn infer_names_extra_missing_and_repeated_channel_files() {
    let scratch = Scratch::new();
    let images = scratch.path("raw/imagesTs");
    let first = std::fs::read_dir(&images).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    let id = name.strip_suffix("_0000.nii.gz").unwrap();
    let second = images.join(format!("{id}_0001.nii.gz"));
    let third = images.join(format!("{id}_0002.nii.gz"));
    std::fs::copy(&second, &third).unwrap();
    let predictions = scratch.path("predictions");
    let model = scratch.path("run");
    let infer = |inputs: &[&PathBuf], message: String| {
        let mut arguments = args(&[&"-m", &model, &"-i"]);
        arguments.extend(inputs.iter().map(|p| p.as_os_str().to_owned()));
        arguments.extend(args(&[&"-o", &predictions, &"--device", &"cpu", &"-q"]));
        let output = Command::new(binary("nn-infer")).args(&arguments).output().unwrap();
        assert_eq!((output.status.code(), stderr(&output)), (Some(2), format!("nn-infer: error: {message}\n")));
        assert!(!predictions.exists(), "no predictions");
    };
    infer(
        &[&first, &second, &third],
        format!("{}: case {id}: expected 2 channels (_0000, _0001), found _0000, _0001 and _0002", third.display()),
    );
    infer(
        &[&first, &third],
        format!("{}: case {id}: expected 2 channels (_0000, _0001), found _0000 and _0002", third.display()),
    );
    infer(&[&first, &first, &second], format!("{}: is given twice", first.display()));
}

/// An ignore label below the highest label value is refused for that rule (nnU-Net's LabelManager
/// asserts it), not for the gap it leaves among the other labels.
#[test]
fn an_ignore_label_between_the_labels_is_named() {
    let scratch = Scratch::new();
    let json = scratch.path("raw/dataset.json");
    corpus::edit_json(&json, |j| {
        j["labels"] = serde_json::json!({"background": 0, "organ_1": 1, "ignore": 2, "organ_2": 3});
    });
    let fingerprint = scratch.path("fingerprint_new.json");
    assert_refused(
        "nn-fingerprint",
        &[&scratch.path("raw"), &"-o", &fingerprint],
        &format!(
            "{}: the ignore label must have the highest label value, max(labels) + 1 = 4, got \"ignore\": 2 (labels [0, 1, 3])",
            json.display()
        ),
    );
    assert!(!fingerprint.exists());
}

/// `-o` naming an existing file where a tool writes a folder (or a folder inside a file) is bad input
/// naming that file, and the file is left as it was.
#[test]
fn a_file_where_an_output_folder_is_expected_is_refused() {
    let scratch = Scratch::new();
    let file = scratch.path("a_file");
    std::fs::write(&file, "kept").unwrap();
    let raw = scratch.path("raw");
    for out in [file.clone(), file.join("inside")] {
        let runs: Vec<(&str, Vec<OsString>)> = vec![
            (
                "nn-resample",
                args(&[&"--plans", &scratch.path("plans.json"), &"-c", &"3d_fullres", &"-i", &raw, &"-o", &out, &"-q"]),
            ),
            ("nn-train", one_iteration_training(&scratch, "0", &out, &[])),
            ("nn-infer", prediction(&scratch, &raw.join("imagesTs"), &out, &[])),
            (
                "nn-synth",
                args(&[&"-o", &out, &"--cases", &"2", &"--min-size", &"16", &"--max-size", &"16", &"--force"]),
            ),
            (
                "nn-dataset",
                args(&[
                    &"create",
                    &"--images",
                    &raw.join("imagesTr"),
                    &"--labels",
                    &raw.join("labelsTr"),
                    &"--channel",
                    &"0=MRI",
                    &"--channel",
                    &"1=MRI",
                    &"-o",
                    &out,
                    &"--force",
                ]),
            ),
            (
                "nn-eval",
                args(&[
                    &"--ref",
                    &raw.join("labelsTr"),
                    &"--pred",
                    &raw.join("labelsTr"),
                    &"-o",
                    &scratch.path("summary_new.json"),
                    &"--overlays",
                    &out,
                    &"--images",
                    &raw.join("imagesTr"),
                ]),
            ),
        ];
        for (tool, arguments) in runs {
            let output = Command::new(binary(tool)).args(&arguments).output().unwrap();
            assert_eq!(
                (output.status.code(), stderr(&output)),
                (
                    Some(2),
                    format!("{tool}: error: {}: not a directory (an output folder is expected)\n", file.display())
                ),
                "{tool} -o {}",
                out.display()
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept");
    assert!(!scratch.path("summary_new.json").exists());
}

/// A failing case stops the workers of nn-resample and nn-eval with one line, however many other cases
/// fail: the first error, not one per worker. (nn-fingerprint's integrity check reports every bad file,
/// one line each, as nnU-Net's verify_dataset_integrity.py does.)
#[test]
fn several_failing_cases_give_one_line() {
    let scratch = Scratch::new();
    let raw = scratch.path("raw");
    let mut cases: Vec<String> = std::fs::read_dir(raw.join("labelsTr"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().replace(".nii.gz", ""))
        .collect();
    cases.sort();
    // not the first case: nn-fingerprint reads it alone first, to choose the reader as nnU-Net does
    let spoilt: Vec<&String> = cases.iter().skip(1).step_by(2).collect();
    assert!(spoilt.len() >= 3, "{cases:?}");
    for case in &spoilt {
        corpus::truncated_gzip(&raw.join(format!("imagesTr/{case}_0000.nii.gz")));
    }
    let output = run(
        "nn-resample",
        &[
            &"--plans",
            &scratch.path("plans.json"),
            &"-c",
            &"3d_fullres",
            &"-i",
            &raw,
            &"-o",
            &scratch.path("pre_new"),
            &"-q",
        ],
    );
    let err = stderr(&output);
    assert_eq!((output.status.code(), err.lines().count()), (Some(2), 1), "{err}");
    assert!(spoilt.iter().any(|case| err.contains(&format!("{case}_0000.nii.gz"))), "{err}");
    let output = run("nn-fingerprint", &[&raw, &"-o", &scratch.path("fingerprint_new.json")]);
    let err = stderr(&output);
    assert_eq!((output.status.code(), err.lines().count()), (Some(2), spoilt.len()), "{err}");

    let predictions = scratch.path("pred");
    copy_tree(&raw.join("labelsTr"), &predictions);
    for case in &spoilt {
        corpus::truncated_gzip(&predictions.join(format!("{case}.nii.gz")));
    }
    let output = run(
        "nn-eval",
        &[&"--ref", &raw.join("labelsTr"), &"--pred", &predictions, &"-o", &scratch.path("summary_new.json")],
    );
    let err = stderr(&output);
    assert_eq!((output.status.code(), err.lines().count()), (Some(2), 1), "{err}");
    assert!(spoilt.iter().any(|case| err.contains(&format!("pred/{case}.nii.gz"))), "{err}");
}
