//! Replays every input in fuzz/regressions/TARGET/ (the inputs the fuzzers of fuzz/ crashed on, kept
//! after the fix) and the seed inputs built from real files, through the fuzz targets' bodies: none
//! may panic. The fuzzers themselves need nightly and run by hand (fuzz/README.md).

use nntools_tests::{fuzzing, workspace};

fn replay(target: &str, body: fn(&[u8])) -> usize {
    let dir = workspace().join("fuzz/regressions").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        body(&bytes);
        count += 1;
    }
    count
}

#[test]
fn nifti_regressions_replay_without_panics() {
    let replayed = replay("nifti", fuzzing::nifti);
    // and a real header, cut at every interesting length
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.nii");
    let geometry = nntools_io::Geometry {
        spacing: [2.0, 1.0, 0.5],
        origin: [1.0, 2.0, 3.0],
        direction: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    };
    nntools_io::write_new(&path, ndarray::Array3::<i16>::zeros((3, 4, 5)).view(), &geometry).unwrap();
    let plain = std::fs::read(&path).unwrap();
    for cut in [0, 1, 4, 40, 347, 348, 351, 352, 353, plain.len() - 1, plain.len()] {
        fuzzing::nifti(&plain[..cut]);
    }
    eprintln!("replayed {replayed} NIfTI regression inputs");
}

#[test]
fn json_regressions_replay_without_panics() {
    let replayed = replay("json_inputs", fuzzing::json_inputs);
    eprintln!("replayed {replayed} JSON regression inputs");
}
