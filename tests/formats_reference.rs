//! Every image format nnU-Net v2 reads, against nnU-Net 2.8.1 itself (tests/fixtures/formats, made by
//! its `make_fixtures.py`): .mha with a rotated, flipped direction, .nrrd, 3-D .tif with spacing
//! sidecars, RGB .png and 2-D NIfTI. Our reader classes return nnU-Net's arrays and geometry bit for
//! bit; nn-fingerprint, nn-plan and nn-resample equal its fingerprints, plans and preprocessed cases (the
//! NIfTI reference tests' tolerances); nn-infer writes its .png and .mha labels; nn-eval takes a .mha
//! reference folder against .nii.gz predictions.

use nntools_io::{Geometry, Image, ReaderWriter, read_label_map, write_label_map};
use nntools_preprocessing::SitkStuff;
use nntools_tests::reference::{assert_fingerprint_matches, assert_plans_match, assert_preprocessed_matches};
use nntools_tests::{assert_json_matches, json_stdout, read_json, run, shared, stderr, workspace};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const MHA: &str = "Dataset201_MhaRotated";
const NRRD: &str = "Dataset202_Nrrd";
const TIFF: &str = "Dataset203_Tiff3d";
const PNG: &str = "Dataset204_RgbPng";
const NIFTI_2D: &str = "Dataset205_Nifti2d";

fn fixtures() -> PathBuf {
    workspace().join("tests/fixtures/formats")
}

fn raw(dataset: &str) -> PathBuf {
    fixtures().join("raw").join(dataset)
}

fn expected(dataset: &str) -> PathBuf {
    fixtures().join("expected").join(dataset)
}

/// A file's channels as one array: shape (c, z, y, x), its float32 C-order values, the geometry of its
/// first channel and its spatial dimension.
struct ReadFile {
    shape: Vec<usize>,
    values: Vec<f32>,
    geometry: Geometry,
    dimension: usize,
}

impl ReadFile {
    fn of<T: Copy + Into<f64>>(path: &Path, channels: &[Image<T>]) -> Self {
        let first = channels.first().unwrap_or_else(|| panic!("{}: no channels", path.display()));
        for channel in channels {
            assert_eq!(channel.geometry, first.geometry, "{}: channels of one geometry", path.display());
        }
        let mut shape = vec![channels.len()];
        shape.extend(first.data.shape());
        // Array3's iteration order is its logical C order, whatever its memory layout
        let values = channels.iter().flat_map(|c| c.data.iter().map(|&v| v.into() as f32)).collect();
        Self { shape, values, geometry: first.geometry, dimension: first.stored.dimension }
    }

    fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for value in &self.values {
            hasher.update(value.to_le_bytes());
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Every file of readers.json, read by the class nnU-Net chose (which is also the class we choose for
/// the dataset), gives nnU-Net's array (shape, sha256 of its float32 bytes, sum, min, max), its spacing
/// and, for SimpleITKIO, SimpleITK's spacing, origin and direction: all exactly.
fn readers_match(dataset: &str) {
    let expected = read_json(&expected(dataset).join("readers.json"));
    let class = expected["reader"].as_str().unwrap();
    let reader = ReaderWriter::from_name(class).unwrap_or_else(|| panic!("{dataset}: unknown class {class}"));
    let chosen = nntools_dataset::Dataset::open(&raw(dataset)).unwrap().reader_writer().unwrap();
    assert_eq!(chosen.name(), class, "{dataset}: the class nnU-Net chooses");

    let files = expected["files"].as_object().unwrap();
    let on_disk = ["imagesTr", "labelsTr"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(raw(dataset).join(sub)).unwrap())
        .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(files.len(), on_disk, "{dataset}: readers.json covers every image and label file");
    for (file, expected) in files {
        let what = format!("{dataset}/{file}");
        let path = raw(dataset).join(file);
        let read = if file.starts_with("labelsTr/") {
            ReadFile::of(&path, &[reader.read_seg(&path).unwrap_or_else(|e| panic!("{what}: {e}"))])
        } else {
            ReadFile::of(
                &path,
                &reader.read_images(std::slice::from_ref(&path)).unwrap_or_else(|e| panic!("{what}: {e}")),
            )
        };
        let shape: Vec<usize> = serde_json::from_value(expected["shape"].clone()).unwrap();
        assert_eq!(read.shape, shape, "{what}: shape");
        assert_eq!(read.sha256(), expected["sha256"].as_str().unwrap(), "{what}: sha256 of the float32 array");
        let sum: f64 = read.values.iter().map(|&v| f64::from(v)).sum();
        let min = read.values.iter().copied().fold(f32::INFINITY, f32::min);
        let max = read.values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let statistics = |v: &Value| json!({"sum": v["sum"], "min": v["min"], "max": v["max"]});
        assert_json_matches(&json!({"sum": sum, "min": min, "max": max}), &statistics(expected), 1e-12, &what);

        let properties = &expected["properties"];
        assert_json_matches(&json!(read.geometry.spacing), &properties["spacing"], 0.0, &format!("{what}: spacing"));
        match properties.get("sitk_stuff") {
            Some(sitk) => {
                let ours = serde_json::to_value(SitkStuff::new(&read.geometry, read.dimension)).unwrap();
                assert_json_matches(&ours, sitk, 0.0, &format!("{what}: sitk_stuff"));
            }
            None => assert_ne!(reader, ReaderWriter::SimpleItk, "{what}: SimpleITKIO records sitk_stuff"),
        }
    }
}

/// nn-fingerprint on the raw set equals nnU-Net's dataset_fingerprint.json.
fn fingerprint_matches(dataset: &str) {
    let ours = json_stdout(&run("nn-fingerprint", &[&raw(dataset), &"-q"]));
    let reference = read_json(&expected(dataset).join("dataset_fingerprint.json"));
    assert_fingerprint_matches(&ours, &reference, dataset);
}

/// nn-plan equals nnU-Net's nnUNetPlans.json (its `image_reader_writer` included), from nnU-Net's
/// fingerprint and from ours.
fn plans_match(dataset: &str) {
    let reference = read_json(&expected(dataset).join("nnUNetPlans.json"));
    assert!(reference["image_reader_writer"].is_string(), "{dataset}: the plans name their reader");
    let dir = tempfile::tempdir().unwrap();
    let our_fingerprint = dir.path().join("fingerprint.json");
    let output = run("nn-fingerprint", &[&raw(dataset), &"-q", &"-o", &our_fingerprint]);
    assert!(output.status.success(), "{}", stderr(&output));
    for fingerprint in [expected(dataset).join("dataset_fingerprint.json"), our_fingerprint] {
        let ours = json_stdout(&run("nn-plan", &[&"--fingerprint", &fingerprint, &"--dataset", &raw(dataset), &"-q"]));
        assert_plans_match(&ours, &reference, &format!("{dataset} from {}", fingerprint.display()));
    }
}

/// nn-resample with nnU-Net's plans equals its preprocessed cases for `configuration`, compared with
/// `reference_configuration`'s stored cases; the properties' spacing and SimpleITK geometry exactly.
fn preprocessing_matches(dataset: &str, configuration: &str, reference_configuration: &str) {
    let reference_cases = expected(dataset).join(format!("nnUNetPlans_{reference_configuration}"));
    let dir = tempfile::tempdir().unwrap();
    let ours = assert_preprocessed_matches(
        &expected(dataset).join("nnUNetPlans.json"),
        configuration,
        &raw(dataset),
        &reference_cases,
        dir.path(),
        dataset,
    );
    for case in nntools_tests::reference::preprocessed_cases(&reference_cases) {
        let what = format!("{dataset} {configuration} {case}");
        let (ours, theirs) =
            (read_json(&ours.join(format!("{case}.json"))), read_json(&reference_cases.join(format!("{case}.json"))));
        assert_json_matches(&ours["spacing"], &theirs["spacing"], 0.0, &format!("{what}: spacing"));
        // only SimpleITKIO records sitk_stuff
        if let Some(sitk) = theirs.get("sitk_stuff") {
            assert_json_matches(&ours["sitk_stuff"], sitk, 0.0, &format!("{what}: sitk_stuff"));
        }
    }
}

#[test]
fn mha_readers() {
    readers_match(MHA);
}

#[test]
fn nrrd_readers() {
    readers_match(NRRD);
}

#[test]
fn tiff_readers() {
    readers_match(TIFF);
}

#[test]
fn rgb_png_readers() {
    readers_match(PNG);
}

#[test]
fn nifti_2d_readers() {
    readers_match(NIFTI_2D);
}

#[test]
fn mha_fingerprint() {
    fingerprint_matches(MHA);
}

#[test]
fn nrrd_fingerprint() {
    fingerprint_matches(NRRD);
}

#[test]
fn tiff_fingerprint() {
    fingerprint_matches(TIFF);
}

#[test]
fn rgb_png_fingerprint() {
    fingerprint_matches(PNG);
}

#[test]
fn nifti_2d_fingerprint() {
    fingerprint_matches(NIFTI_2D);
}

#[test]
fn mha_plans() {
    plans_match(MHA);
}

#[test]
fn nrrd_plans() {
    plans_match(NRRD);
}

#[test]
fn tiff_plans() {
    plans_match(TIFF);
}

#[test]
fn rgb_png_plans() {
    plans_match(PNG);
}

#[test]
fn nifti_2d_plans() {
    plans_match(NIFTI_2D);
}

/// At 1 mm nothing is resampled, so nnU-Net's 2d arrays equal its 3d_fullres ones (its script checks
/// this and stores only 3d_fullres): both of ours are compared with them.
#[test]
fn mha_preprocessing() {
    preprocessing_matches(MHA, "3d_fullres", "3d_fullres");
    preprocessing_matches(MHA, "2d", "3d_fullres");
}

#[test]
fn nrrd_preprocessing() {
    preprocessing_matches(NRRD, "3d_fullres", "3d_fullres");
    preprocessing_matches(NRRD, "2d", "3d_fullres");
}

#[test]
fn tiff_preprocessing() {
    preprocessing_matches(TIFF, "3d_fullres", "3d_fullres");
    preprocessing_matches(TIFF, "2d", "2d");
}

#[test]
fn rgb_png_preprocessing() {
    preprocessing_matches(PNG, "2d", "2d");
}

#[test]
fn nifti_2d_preprocessing() {
    preprocessing_matches(NIFTI_2D, "2d", "2d");
}

/// Runs nn-infer on CPU (float32, as nnU-Net's references were made) and returns its output folder.
fn infer(model: &Path, images: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"-m", &model, &"-i", &images, &"-o", &out, &"--device", &"cpu", &"-q"];
    args.extend(extra.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
    let output = run("nn-infer", &args);
    assert!(output.status.success(), "{}", stderr(&output));
    out.to_owned()
}

fn assert_geometry_close(ours: &Geometry, theirs: &Geometry, what: &str) {
    let pairs = ours
        .spacing
        .iter()
        .chain(&ours.origin)
        .chain(&ours.direction)
        .zip(theirs.spacing.iter().chain(&theirs.origin).chain(&theirs.direction));
    for (a, b) in pairs {
        assert!((a - b).abs() <= 1e-6, "{what}: geometry {ours:?} vs nnU-Net's {theirs:?}");
    }
}

/// Every label file of `reference` (with `ending`) has the same voxels in `ours`, and the same
/// geometry, spatial dimension and voxel type; returns how many files were compared.
fn assert_labels_equal(ours: &Path, reference: &Path, ending: &str) -> usize {
    let mut compared = 0;
    for entry in std::fs::read_dir(reference).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(ending), "{name}: nnU-Net's labels end in {ending}");
        let theirs = read_label_map(&path).unwrap();
        let predicted = read_label_map(&ours.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(predicted.data.shape(), theirs.data.shape(), "{name}: shape");
        let differing = predicted.data.iter().zip(&theirs.data).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{name}: {differing} of {} voxels differ from nnU-Net's", theirs.data.len());
        assert_geometry_close(&predicted.geometry, &theirs.geometry, &name);
        assert_eq!(predicted.stored.dimension, theirs.stored.dimension, "{name}: spatial dimension");
        assert_eq!(predicted.stored.pixel, theirs.stored.pixel, "{name}: voxel type");
        compared += 1;
    }
    compared
}

/// A 2d model trained by nnU-Net on the RGB PNG set predicts nnU-Net's PNG labels (with mirroring, as
/// the fixture has them).
#[test]
fn png_predictions_equal_nnunets() {
    let root = fixtures().join("predict_png");
    let out = tempfile::tempdir().unwrap();
    let predictions = infer(&root.join("model"), &root.join("images"), &out.path().join("tta"), &[]);
    assert_eq!(assert_labels_equal(&predictions, &root.join("expected"), ".png"), 6);
}

/// The shared 3d_fullres model on .mha inputs with a rotated, flipped direction and shifted origins
/// (one anisotropic, so prediction resamples): nnU-Net's .mha labels, voxels and geometry, with and
/// without mirroring.
#[test]
fn mha_predictions_equal_nnunets() {
    let Some(shared) = shared() else { return };
    let root = fixtures().join("predict_mha");
    let model = shared.join("reference/infer/model");
    let out = tempfile::tempdir().unwrap();
    for (flags, expected) in [(&[][..], "expected_tta"), (&["--no-tta"][..], "expected_notta")] {
        let predictions = infer(&model, &root.join("images"), &out.path().join(expected), flags);
        assert_eq!(assert_labels_equal(&predictions, &root.join(expected), ".mha"), 3, "{expected}");
        for entry in std::fs::read_dir(root.join(expected)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let path = predictions.join(&name);
            let case = name.strip_suffix(".mha").unwrap();
            let input = nntools_io::read_image(&root.join(format!("images/{case}_0000.mha"))).unwrap();
            assert_eq!(read_label_map(&path).unwrap().geometry, input.geometry, "{case}: the input's geometry");
        }
    }
}

/// summary.json with Python's `NaN` read as null.
fn read_summary(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap().replace("NaN", "null")).unwrap()
}

fn evaluate(reference: &Path, predictions: &Path, out: &Path) -> Value {
    let output = run(
        "nn-eval",
        &[&"--ref", &reference, &"--pred", &predictions, &"--dataset", &raw(MHA).join("dataset.json"), &"-o", &out],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let mut summary = read_summary(out);
    for case in summary["metric_per_case"].as_array_mut().unwrap() {
        case.as_object_mut().unwrap().remove("prediction_file");
    }
    summary
}

/// nn-eval takes a .mha reference folder against .nii.gz predictions of the same geometry, and its
/// summary is that of the .mha predictions themselves.
#[test]
fn eval_takes_mha_references_against_nifti_predictions() {
    let root = fixtures().join("predict_mha");
    let dir = tempfile::tempdir().unwrap();
    let nifti = dir.path().join("nifti");
    std::fs::create_dir(&nifti).unwrap();
    for entry in std::fs::read_dir(root.join("expected_notta")).unwrap() {
        let path = entry.unwrap().path();
        let labels = read_label_map(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().replace(".mha", ".nii.gz");
        write_label_map(&nifti.join(name), labels.data.mapv(|v| v as u16).view(), &labels.geometry, &labels.stored)
            .unwrap();
    }
    let reference = root.join("expected_tta");
    let from_mha = evaluate(&reference, &root.join("expected_notta"), &dir.path().join("mha.json"));
    let from_nifti = evaluate(&reference, &nifti, &dir.path().join("nifti.json"));
    assert_json_matches(&from_nifti, &from_mha, 1e-6, "summary");
    assert_eq!(from_mha["metric_per_case"].as_array().unwrap().len(), 3);
    // the counts are those of the files' voxels
    for case in from_mha["metric_per_case"].as_array().unwrap() {
        let name = Path::new(case["reference_file"].as_str().unwrap()).file_name().unwrap().to_owned();
        let reference = read_label_map(&root.join("expected_tta").join(&name)).unwrap().data;
        let predicted = read_label_map(&root.join("expected_notta").join(&name)).unwrap().data;
        for (label, metrics) in case["metrics"].as_object().unwrap() {
            let label: i32 = label.parse().unwrap();
            let count = |labels: &ndarray::Array3<i32>| labels.iter().filter(|&&l| l == label).count() as f64;
            let what = format!("{name:?} label {label}");
            assert_eq!(metrics["n_ref"].as_f64(), Some(count(&reference)), "{what}: n_ref");
            assert_eq!(metrics["n_pred"].as_f64(), Some(count(&predicted)), "{what}: n_pred");
        }
    }
}

/// Inputs in another format than the model's are read by their own ending and predicted in it: the
/// shared NIfTI model on TIFF stacks (with their spacing files) writes TIFF labels with nnU-Net's voxels
/// (its `.nii.gz` predictions of the same images) and a `CASE.json` whose `spacing` serves as Tiff3DIO's
/// spacing file and as the probabilities' properties.
#[test]
fn tiff_inputs_predict_as_their_nifti_originals() {
    let Some(shared) = shared() else { return };
    let infer_ref = shared.join("reference/infer");
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let cases = ["hippocampus_017", "aniso_hippocampus_003"];
    for case in cases {
        let image = nntools_io::read_image(&infer_ref.join(format!("images/{case}_0000.nii.gz"))).unwrap();
        // the writer puts the spacing beside the file; Tiff3DIO reads a case's from CASE.json
        nntools_io::write_image(&images.join(format!("{case}_0000.tif")), &image).unwrap();
        std::fs::rename(images.join(format!("{case}_0000.json")), images.join(format!("{case}.json"))).unwrap();
    }
    let out = infer(&infer_ref.join("model"), &images, &dir.path().join("out"), &["--no-tta", "--save-probabilities"]);
    for case in cases {
        let ours = nntools_io::read_label_map(&out.join(format!("{case}.tif"))).unwrap();
        let theirs = read_label_map(&infer_ref.join(format!("pred_notta/{case}.nii.gz"))).unwrap();
        let differing = ours.data.iter().zip(&theirs.data).filter(|(a, b)| a != b).count();
        assert_eq!(ours.data.shape(), theirs.data.shape(), "{case}");
        assert_eq!(differing, 0, "{case}: {differing} voxels differ from nnU-Net's NIfTI prediction");
        assert_eq!(ours.geometry.spacing, read_image_spacing(&infer_ref.join(format!("images/{case}_0000.nii.gz"))));
        let properties: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("{case}.json"))).unwrap()).unwrap();
        assert!(properties["sitk_stuff"].is_object() && properties["spacing"].is_array(), "{case}: {properties}");
    }
}

/// nnU-Net's spacing of a NIfTI image.
fn read_image_spacing(path: &Path) -> [f64; 3] {
    nntools_io::read_image(path).unwrap().geometry.spacing
}
