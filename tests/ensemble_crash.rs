//! nn-ensemble is crash safe: `average` and `postprocess` killed with SIGKILL at several moments (seeded
//! delays), then rerun, leave exactly the files of an uninterrupted run, byte for byte, and no
//! temporaries.

use ndarray::Array4;
use nntools_io::{Geometry, write_new, write_npz};
use nntools_tests::{binary, kill_moments, os_args, stderr};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const CASES: usize = 24;

/// Two prediction folders of `CASES` cases with seeded probabilities over 3 classes.
fn prediction_folders(root: &Path) -> [PathBuf; 2] {
    let geometry = Geometry {
        spacing: [1.0, 0.8, 0.8],
        origin: [0.0; 3],
        direction: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    };
    let mut rng = ChaCha8Rng::seed_from_u64(12345);
    let mut uniform = move || rng.random_range(0.0f32..1.0);
    ["a", "b"].map(|name| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dataset.json"), r#"{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "x": 1, "y": 2}, "numTraining": 1, "file_ending": ".nii.gz"}"#).unwrap();
        for case in 0..CASES {
            let mut p = Array4::<f32>::from_shape_simple_fn((3, 24, 32, 32), &mut uniform);
            let total = p.sum_axis(ndarray::Axis(0));
            for mut class in p.outer_iter_mut() {
                class /= &total;
            }
            write_npz(&dir.join(format!("c{case:02}.npz")), "probabilities", &p).unwrap();
            let labels = p.map_axis(ndarray::Axis(0), |lane| lane.iter().enumerate().fold(0u8, |b, (c, &v)| if v > lane[b as usize] { c as u8 } else { b }));
            write_new(&dir.join(format!("c{case:02}.nii.gz")), labels.view(), &geometry).unwrap();
        }
        dir
    })
}

fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// Runs nn-ensemble `args -o out` to completion, after runs killed `kills` milliseconds after their start.
fn killed_then_completed(args: &[OsString], out: &Path, kills: &[u64]) {
    let command = || {
        let mut command = Command::new(binary("nn-ensemble"));
        command.args(args).arg("-o").arg(out).arg("-j").arg("2");
        command
    };
    for &delay_ms in kills {
        let mut child = command().spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
    }
    let output = command().output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn killed_average_and_postprocess_rerun_to_identical_outputs() {
    let root = tempfile::tempdir().unwrap();
    let [a, b] = prediction_folders(root.path());
    let plan = root.path().join("plan.json");
    std::fs::write(&plan, r#"{"models": [{"run": "r", "configuration": "3d_fullres"}], "folds": [0], "postprocessing": [{"keep_largest_component_of": [1, 2]}, {"keep_largest_component_of": [1]}],
        "cross_validation": [], "foreground_dice_before_postprocessing": 0.5, "foreground_dice_after_postprocessing": 0.6,
        "class_dice_after_postprocessing": {}, "commands": []}"#).unwrap();
    // over the span of a run (a whole average takes ~1 s here)
    let kills = kill_moments(7, 4, 20..420);
    let runs = [
        ("average", os_args(&[&"average", &"-i", &a, &b, &"--save-probabilities"])),
        ("postprocess", os_args(&[&"postprocess", &"-i", &a, &"--plan", &plan])),
    ];
    for (name, arguments) in runs {
        let whole = root.path().join(format!("{name}_whole"));
        killed_then_completed(&arguments, &whole, &[]);
        let killed = root.path().join(format!("{name}_killed"));
        killed_then_completed(&arguments, &killed, &kills);
        let (expected, got) = (contents(&whole), contents(&killed));
        assert!(expected.len() >= CASES, "{name}: {} files", expected.len());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{name}: same files, no temporaries"
        );
        for (file, bytes) in &expected {
            assert!(got[file] == *bytes, "{name}: {file} differs from the uninterrupted run");
        }
    }
}
