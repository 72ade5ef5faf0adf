//! Replays every input in fuzz/regressions/TARGET/ (the inputs the fuzzers of fuzz/ crashed on, kept
//! after the fix) and the seed inputs built from real files, through the fuzz targets' bodies: none
//! may panic. The fuzzers themselves need nightly and run by hand (fuzz/README.md).

use std::path::PathBuf;

use nntools_tests::{fuzzing, workspace};

fn sitk_fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures/sitk_formats").join(name)
}

/// Feeds `body` each fixture file (the fuzzers' seeds) whole and cut at every eighth of its length.
fn replay_cut_fixtures(paths: &[PathBuf], body: fn(&[u8])) {
    for path in paths {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for eighth in 0..=8 {
            body(&bytes[..bytes.len() * eighth / 8]);
        }
    }
}

/// The fixtures of `dir` whose names end in one of `endings`.
fn fixtures(dir: &str, endings: &[&str]) -> Vec<PathBuf> {
    let dir = workspace().join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| endings.iter().any(|ending| path.to_string_lossy().ends_with(ending)))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no {endings:?} fixtures in {}", dir.display());
    paths
}

/// A detached-header fixture and its data file as one fuzz input (header, separator, data).
fn detached_seed(header: &str, data_file_key: &str, data: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(sitk_fixture(header)).unwrap();
    fuzzing::detached_input(&text, data_file_key, &std::fs::read(sitk_fixture(data)).unwrap())
}

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
    // and a NIfTI-2 file (540-byte header, data from byte 544), cut likewise
    let nifti2 = std::fs::read(sitk_fixture("nifti2_i16.nii")).unwrap();
    for cut in [4, 347, 348, 539, 540, 543, 544, 545, nifti2.len() - 1, nifti2.len()] {
        fuzzing::nifti(&nifti2[..cut]);
    }
    eprintln!("replayed {replayed} NIfTI regression inputs");
}

#[test]
fn json_regressions_replay_without_panics() {
    let replayed = replay("json_inputs", fuzzing::json_inputs);
    eprintln!("replayed {replayed} JSON regression inputs");
}

#[test]
fn metaimage_regressions_and_seeds_replay_without_panics() {
    let replayed = replay("metaimage", fuzzing::metaimage);
    replay_cut_fixtures(&fixtures("tests/fixtures/sitk_formats", &[".mha"]), fuzzing::metaimage);
    for (header, data) in [("image_i16.mhd", "image_i16.raw"), ("label_u8_compressed.mhd", "label_u8_compressed.zraw")]
    {
        let seed = detached_seed(header, "ElementDataFile = ", data);
        for eighth in 0..=8 {
            fuzzing::metaimage(&seed[..seed.len() * eighth / 8]);
        }
    }
    eprintln!("replayed {replayed} MetaImage regression inputs");
}

#[test]
fn nrrd_regressions_and_seeds_replay_without_panics() {
    let replayed = replay("nrrd", fuzzing::nrrd);
    replay_cut_fixtures(&fixtures("tests/fixtures/sitk_formats", &[".nrrd"]), fuzzing::nrrd);
    for (header, data) in [("detached_i16.nhdr", "detached_i16.raw"), ("list_axis_f32.nhdr", "list_axis_f32.raw")] {
        let seed = detached_seed(header, "data file: ", data);
        for eighth in 0..=8 {
            fuzzing::nrrd(&seed[..seed.len() * eighth / 8]);
        }
    }
    eprintln!("replayed {replayed} NRRD regression inputs");
}

#[test]
fn gipl_regressions_and_seeds_replay_without_panics() {
    let replayed = replay("gipl", fuzzing::gipl);
    replay_cut_fixtures(&fixtures("tests/fixtures/sitk_formats", &[".gipl"]), fuzzing::gipl);
    eprintln!("replayed {replayed} GIPL regression inputs");
}

#[test]
fn tiff_regressions_and_seeds_replay_without_panics() {
    let replayed = replay("tiff", fuzzing::tiff);
    replay_cut_fixtures(&fixtures("libs/io/tests/fixtures/natural_tiff", &[".tif"]), fuzzing::tiff);
    eprintln!("replayed {replayed} TIFF regression inputs");
}

#[test]
fn natural_regressions_and_seeds_replay_without_panics() {
    let replayed = replay("natural", fuzzing::natural);
    replay_cut_fixtures(&fixtures("libs/io/tests/fixtures/natural_tiff", &[".png", ".bmp"]), fuzzing::natural);
    eprintln!("replayed {replayed} PNG/BMP regression inputs");
}

#[test]
fn pth_regressions_and_seeds_replay_without_panics() {
    let replayed = replay("pth", fuzzing::pth);
    let seeds = fixtures("libs/checkpoint/tests/fixtures/read", &[".pth"]);
    replay_cut_fixtures(&seeds, fuzzing::pth);
    for path in &seeds {
        let parts = fuzzing::pth_parts_input(&std::fs::read(path).unwrap());
        for eighth in 0..=8 {
            fuzzing::pth(&parts[..parts.len() * eighth / 8]);
        }
    }
    eprintln!("replayed {replayed} .pth regression inputs");
}

#[test]
fn a_data_file_that_is_not_a_regular_file_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (regression, name) in
        [("metaimage/oom-element-data-file-is-dev-zero", "case.mha"), ("nrrd/oom-data-file-is-dev-zero", "case.nrrd")]
    {
        let path = dir.path().join(name);
        std::fs::copy(workspace().join("fuzz/regressions").join(regression), &path).unwrap();
        let error = nntools_io::read_label_map(&path).unwrap_err().to_string();
        assert!(error.contains("/dev/zero: not a regular file"), "{error}");
        assert!(error.contains(name) && !error.contains('\n'), "{error}");
    }
}

#[test]
fn palette_bmps_the_decoder_cannot_index_are_refused_in_one_line() {
    // the `image` crate's BMP decoder panicked on them in palette-index mode (found by the natural target)
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.bmp");
    for (regression, bits) in [("crash-rle8-bmp-in-palette-index-mode", 8), ("crash-1bit-bmp-in-palette-index-mode", 1)]
    {
        std::fs::copy(workspace().join("fuzz/regressions/natural").join(regression), &path).unwrap();
        let error = nntools_io::read_image(&path).unwrap_err().to_string();
        let expected = format!("palette BMP files of {bits} bits or run-length-encoded (RLE4/RLE8) are not supported");
        assert!(error.contains("case.bmp") && error.contains(&expected), "{error}");
    }
}
