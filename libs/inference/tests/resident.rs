//! `Resident` with the shared reference model (../shared/reference/infer, 3d_fullres, fold 0) on one
//! Hippocampus image: what it says about the model, a case cancelled at a tile, a per-case TTA, and ids
//! that would name a path. (Its files against batch nn-infer's: tests/stream.rs.)

use nntools_inference::{CaseOptions, Options, Resident};
use nntools_io::ErrorKind;
use nntools_layout::run::CheckpointName;
use nntools_network::Precision;
use std::path::{Path, PathBuf};

fn reference() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/infer");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(std::env::var_os("CI").is_none(), "CI needs ../shared beside the workspace");
    eprintln!("skipped: needs ../shared/reference/infer");
    None
}

/// An empty folder of this test's own under the system's temporary folder.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nntools-resident-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_resident_model_describes_itself_stops_when_asked_and_predicts_with_the_case_tta() {
    let Some(reference) = reference() else { return };
    let options = Options {
        folds: None,
        checkpoint: "final".parse::<CheckpointName>().unwrap(),
        tta: false,
        step: 0.5,
        device: tch::Device::Cpu,
        precision: Precision::Fp32,
    };
    let resident = Resident::load(&[reference.join("model")], &options).unwrap();
    assert_eq!(resident.channels(), 1);
    let info = serde_json::to_value(resident.info()).unwrap();
    assert_eq!(info["labels"], serde_json::json!({"background": 0, "Anterior": 1, "Posterior": 2}));
    assert_eq!(info["channels"], 1);
    assert_eq!(info["file_ending"], ".nii.gz");
    assert_eq!(info["models"], serde_json::json!([{"configuration": "3d_fullres", "folds": ["fold_0"]}]));
    assert_eq!(info["nn_tools_version"], env!("CARGO_PKG_VERSION"));

    let images = [reference.join("images/hippocampus_017_0000.nii.gz")];
    let out = scratch("out");
    let plain = CaseOptions { tta: false, save_probabilities: false };
    // stopped at the second call (before the only tile): an error of its own kind, and nothing written
    let mut calls = 0;
    let mut stop_at_second = || {
        calls += 1;
        calls < 2
    };
    let error = resident.predict_case("case", &images, &out, plain, &mut stop_at_second).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Cancelled, "{error}");
    assert_eq!(calls, 2);
    assert!(!out.exists(), "nothing written for a cancelled case");

    // asked once before reading the case, then before each of the window's tiles: the case (35 x 48 x 32
    // voxels at the plans' 1 mm) fits in one 40 x 56 x 40 patch
    let count = |tta: bool| {
        let mut calls = 0;
        let case = CaseOptions { tta, save_probabilities: false };
        let path = resident.predict_case("case", &images, &out, case, &mut || {
            calls += 1;
            true
        });
        (path.unwrap(), calls, std::fs::read(out.join("case.nii.gz")).unwrap())
    };
    let (path, calls, without_tta) = count(false);
    assert_eq!(path, out.join("case.nii.gz"));
    assert_eq!(calls, 2);
    let (_, calls_with_tta, with_tta) = count(true);
    assert_eq!(calls_with_tta, calls, "mirroring is within a tile");
    assert_ne!(with_tta, without_tta, "the case's TTA, not the options'");
    let made_by: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("case.made_by.json")).unwrap()).unwrap();
    assert_eq!(made_by["made_by"]["tta"], true);

    for id in ["", "../case", "a/b", ".hidden"] {
        let error = resident.predict_case(id, &images, &out, plain, &mut || true).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadInput, "{id:?}: {error}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}
