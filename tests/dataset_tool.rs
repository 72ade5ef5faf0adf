//! nn-dataset: raw datasets made from plain folders (`create`) and from nnU-Net v1 / MSD tasks
//! (`convert-v1`) carry nnU-Net's names, the expected dataset.json and the source voxels, pass
//! `nn-fingerprint --verify-only`, and bad input leaves no output folder.

use ndarray::{Array3, Axis};
use nntools_io::{
    Geometry, Image, NiftiHeader, PixelType, ReaderWriter, Stored, read_image, read_label_map, write_image,
    write_label_map, write_new,
};
use nntools_tests::{read_json, run, shared, stderr};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn geometry() -> Geometry {
    Geometry {
        spacing: [3.0, 0.75, 0.75],
        origin: [-12.0, 30.5, 7.0],
        direction: [0., 0., 1., -1., 0., 0., 0., -1., 0.],
    }
}

/// Sorted file names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Runs `nn-dataset convert-v1 TASK -o OUT`.
fn convert(task: &Path, out: &Path) -> Output {
    run("nn-dataset", &[&"convert-v1", &task, &"-o", &out])
}

/// Asserts that a run succeeded and that nn-fingerprint accepts the dataset it wrote.
fn assert_accepted(output: &Output, raw: &Path) {
    assert!(output.status.success(), "{}", stderr(output));
    verify(raw);
}

fn verify(raw: &Path) {
    let output = run("nn-fingerprint", &[&"--verify-only", &raw]);
    assert!(output.status.success(), "nn-fingerprint --verify-only: {}", stderr(&output));
}

/// Asserts exit code 2, one error line naming `file` with `problem`, and no output folder (nor any
/// staging folder) left beside where it would have been.
fn assert_refused(output: &Output, out: &Path, file: &str, problem: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(err.lines().all(|l| l.starts_with("nn-dataset: error: ")), "{err}");
    assert!(
        err.lines().any(|l| l.contains(file) && l.contains(problem)),
        "expected a line naming {file} with {problem:?}, got:\n{err}"
    );
    assert!(!out.exists(), "{} was left behind", out.display());
    let parent = out.parent().unwrap();
    assert!(names(parent).iter().all(|n| !n.starts_with(".nntmp")), "staging left in {}", parent.display());
}

/// A synthetic two-channel dataset (nn-synth) rearranged as a user has it: `images/CASE_000C.nii.gz`,
/// `labels/CASE.nii.gz`, `test/CASE_000C.nii.gz`.
struct Folders {
    dir: tempfile::TempDir,
    synth: PathBuf,
}

impl Folders {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let synth = dir.path().join("synth");
        let output = run(
            "nn-synth",
            &[
                &"-o",
                &synth,
                &"--cases",
                &"4",
                &"--test-cases",
                &"2",
                &"--channels",
                &"2",
                &"--labels",
                &"3",
                &"--seed",
                &"11",
            ],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        for (from, to) in [("imagesTr", "images"), ("labelsTr", "labels"), ("imagesTs", "test")] {
            std::fs::create_dir_all(dir.path().join(to)).unwrap();
            for name in names(&synth.join(from)) {
                std::fs::copy(synth.join(from).join(&name), dir.path().join(to).join(&name)).unwrap();
            }
        }
        Self { dir, synth }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn create(&self, out: &Path, extra: &[&str]) -> Output {
        let (images, labels, test) = (self.path("images"), self.path("labels"), self.path("test"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"create",
            &"--images",
            &images,
            &"--labels",
            &labels,
            &"--test-images",
            &test,
            &"--channel",
            &"0=T2",
            &"--channel",
            &"1=ADC",
            &"-o",
            &out,
        ];
        args.extend(extra.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        run("nn-dataset", &args)
    }
}

#[test]
fn create_from_folders_gives_a_checked_raw_dataset() {
    let f = Folders::new();
    let out = f.path("raw/Dataset321_Prostate");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let output = f.create(&out, &["-q"]);
    assert_accepted(&output, &out);

    let cases = ["synth_000", "synth_001", "synth_002", "synth_003"];
    let expected_images: Vec<String> =
        cases.iter().flat_map(|c| [format!("{c}_0000.nii.gz"), format!("{c}_0001.nii.gz")]).collect();
    assert_eq!(names(&out.join("imagesTr")), expected_images);
    assert_eq!(names(&out.join("labelsTr")), cases.map(|c| format!("{c}.nii.gz")));
    assert_eq!(
        names(&out.join("imagesTs")),
        ["synth_004_0000.nii.gz", "synth_004_0001.nii.gz", "synth_005_0000.nii.gz", "synth_005_0001.nii.gz"]
    );
    assert_eq!(names(&out), ["dataset.json", "imagesTr", "imagesTs", "labelsTr"]);
    // Labels derived from the label maps, which hold 0..=3.
    assert_eq!(
        read_json(&out.join("dataset.json")),
        json!({
            "channel_names": {"0": "T2", "1": "ADC"},
            "labels": {"background": 0, "label_1": 1, "label_2": 2, "label_3": 3},
            "numTraining": 4,
            "file_ending": ".nii.gz",
            "name": "Dataset321_Prostate"
        })
    );
    for (sub, source) in [("imagesTr", "images"), ("labelsTr", "labels"), ("imagesTs", "test")] {
        for name in names(&out.join(sub)) {
            let (ours, theirs) = (out.join(sub).join(&name), f.path(source).join(&name));
            assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap(), "{name}");
            let (a, b) = (read_image(&ours).unwrap(), read_image(&theirs).unwrap());
            assert_eq!((a.data, a.geometry), (b.data, b.geometry), "{name}");
        }
    }

    // --link --force: the same dataset, its files hard links to the sources.
    let output = f.create(
        &out,
        &["--link", "--force", "--label", "0=background", "--label", "1=a", "--label", "2=b", "--label", "3=c"],
    );
    assert_accepted(&output, &out);
    let image = out.join("imagesTr/synth_002_0001.nii.gz");
    assert_eq!(
        std::fs::metadata(&image).unwrap().ino(),
        std::fs::metadata(f.path("images/synth_002_0001.nii.gz")).unwrap().ino()
    );
    assert_eq!(read_json(&out.join("dataset.json"))["labels"], json!({"background": 0, "a": 1, "b": 2, "c": 3}));
    assert!(f.synth.exists());
}

#[test]
fn create_takes_plain_names_and_mixed_endings() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels, out) =
        (dir.path().join("scans"), dir.path().join("masks"), dir.path().join("Dataset322_Plain"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    let mut sources = Vec::new();
    for (i, (image_name, label_name)) in
        [("a.nii", "a.nii"), ("b.nii.gz", "b.nii"), ("c_07.nii", "c_07.nii.gz")].iter().enumerate()
    {
        let image = Array3::from_shape_fn((4, 5, 6), |(z, y, x)| (i * 1000 + z * 100 + y * 10 + x) as i16);
        let label = Array3::from_shape_fn((4, 5, 6), |(z, _, x)| u8::from(z == 1 && x > i) * 2);
        write_new(&images.join(image_name), image.view(), &geometry()).unwrap();
        write_new(&labels.join(label_name), label.view(), &geometry()).unwrap();
        sources.push((image_name.split('.').next().unwrap().to_owned(), image, label));
    }
    // A label map holding only 0 and 2 cannot be described by derived labels (they must be consecutive).
    let output =
        run("nn-dataset", &[&"create", &"--images", &images, &"--labels", &labels, &"--channel", &"0=CT", &"-o", &out]);
    assert_refused(&output, &out, "masks", "the label maps hold the values {0, 2}");
    let output = run(
        "nn-dataset",
        &[
            &"create",
            &"--images",
            &images,
            &"--labels",
            &labels,
            &"--channel",
            &"0=CT",
            &"--label",
            &"0=background",
            &"--label",
            &"1=vessel",
            &"--label",
            &"2=tumour",
            &"--name",
            &"Plain",
            &"-o",
            &out,
        ],
    );
    assert_accepted(&output, &out);
    let json = read_json(&out.join("dataset.json"));
    assert_eq!(json["file_ending"], ".nii.gz", "mixed endings become .nii.gz");
    assert_eq!(json["name"], "Plain");
    assert_eq!(json["labels"], json!({"background": 0, "vessel": 1, "tumour": 2}));
    assert_eq!(names(&out.join("imagesTr")), ["a_0000.nii.gz", "b_0000.nii.gz", "c_07_0000.nii.gz"]);
    for (id, image, label) in sources {
        let ours = read_image(&out.join(format!("imagesTr/{id}_0000.nii.gz"))).unwrap();
        assert_eq!(ours.data, image.mapv(f32::from), "{id}");
        assert_eq!(ours.geometry, Geometry::from_header(&geometry().to_header()).unwrap());
        assert_eq!(read_label_map(&out.join(format!("labelsTr/{id}.nii.gz"))).unwrap().data, label.mapv(i32::from));
    }
}

#[test]
fn bad_input_names_the_file_and_leaves_nothing() {
    let f = Folders::new();
    let out = f.path("Dataset323_Bad");
    let remove = |path: PathBuf| {
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        (path, bytes)
    };

    let (label, bytes) = remove(f.path("labels/synth_001.nii.gz"));
    assert_refused(&f.create(&out, &[]), &out, "images/synth_001_0000.nii.gz", "image without a label map");
    std::fs::write(&label, bytes).unwrap();

    std::fs::copy(&label, f.path("labels/synth_009.nii.gz")).unwrap();
    assert_refused(&f.create(&out, &[]), &out, "labels/synth_009.nii.gz", "label map without an image");
    std::fs::remove_file(f.path("labels/synth_009.nii.gz")).unwrap();

    let (channel, bytes) = remove(f.path("images/synth_002_0001.nii.gz"));
    assert_refused(
        &f.create(&out, &[]),
        &out,
        "images/synth_002_0001.nii.gz",
        "missing; case synth_002: expected 2 channels (_0000, _0001), found _0000",
    );
    std::fs::write(&channel, &bytes).unwrap();

    // Unreadable files are found by the integrity check and named by their source path.
    std::fs::write(&channel, &bytes[..bytes.len() / 2]).unwrap();
    assert_refused(&f.create(&out, &[]), &out, "images/synth_002_0001.nii.gz", "corrupt or truncated gzip stream");
    std::fs::write(&channel, &bytes).unwrap();
    let test_image = f.path("test/synth_005_0000.nii.gz");
    let test_bytes = std::fs::read(&test_image).unwrap();
    std::fs::write(&test_image, b"not a nifti").unwrap();
    assert_refused(&f.create(&out, &[]), &out, "test/synth_005_0000.nii.gz", "truncated NIfTI header");
    std::fs::write(&test_image, test_bytes).unwrap();

    // A label value outside the declared labels.
    let declared = ["--label", "0=background", "--label", "1=a", "--label", "2=b"];
    assert_refused(&f.create(&out, &declared), &out, "labels/synth_000.nii.gz", "label values [3] are not declared");

    // An existing output is kept unless --force.
    std::fs::create_dir(&out).unwrap();
    let output = f.create(&out, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("already exists (use --force to replace it)"), "{}", stderr(&output));
    assert!(out.is_dir() && names(&out).is_empty());

    // Everything in order again: it works.
    std::fs::remove_dir(&out).unwrap();
    assert!(f.create(&out, &[]).status.success());
}

/// A 4-D NIfTI of the `volumes` (each z, y, x, int16) with `header`'s geometry: a 3-D image of the
/// volumes stacked along z, whose header is then made 4-D (same bytes on disk), gzip-compressed.
fn write_4d(path: &Path, volumes: &[Array3<i16>], header: &NiftiHeader) {
    let views: Vec<_> = volumes.iter().map(|v| v.view()).collect();
    let stacked = ndarray::concatenate(Axis(0), &views).unwrap();
    let plain = path.with_file_name("stacked.nii");
    nntools_io::write_like(&plain, stacked.view(), &{
        let mut h = header.clone();
        h.dim = [3, stacked.shape()[2] as u16, stacked.shape()[1] as u16, stacked.shape()[0] as u16, 1, 1, 1, 1];
        h
    })
    .unwrap();
    let mut bytes = std::fs::read(&plain).unwrap();
    std::fs::remove_file(&plain).unwrap();
    let [_, ny, nx] = [volumes[0].shape()[0], volumes[0].shape()[1], volumes[0].shape()[2]];
    for (i, d) in [4, nx, ny, volumes[0].shape()[0], volumes.len()].into_iter().enumerate() {
        bytes[40 + 2 * i..42 + 2 * i].copy_from_slice(&(d as u16).to_le_bytes());
    }
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    encoder.write_all(&bytes).unwrap();
    encoder.finish().unwrap();
}

#[test]
fn convert_v1_splits_4d_images_into_channels() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("Task05_Prostate");
    for sub in ["imagesTr", "labelsTr", "imagesTs"] {
        std::fs::create_dir_all(task.join(sub)).unwrap();
    }
    let header = geometry().to_header();
    let mut expected = Vec::new();
    for (i, case) in ["prostate_00", "prostate_01", "prostate_07"].iter().enumerate() {
        let volumes: Vec<Array3<i16>> = (0..2)
            .map(|c| {
                Array3::from_shape_fn((3, 5, 4), |(z, y, x)| (i * 1000 + c * 500 + z * 50 + y * 5 + x) as i16 - 100)
            })
            .collect();
        let training = i < 2;
        write_4d(
            &task.join(format!("{}/{case}.nii.gz", if training { "imagesTr" } else { "imagesTs" })),
            &volumes,
            &header,
        );
        if training {
            let label = Array3::from_shape_fn((3, 5, 4), |(z, y, _)| ((z + y + i) % 3) as u8);
            write_new(&task.join(format!("labelsTr/{case}.nii.gz")), label.view(), &geometry()).unwrap();
        }
        expected.push((case.to_string(), volumes, training));
    }
    // macOS resource forks, as shipped in the MSD archives, are not listed and must be ignored.
    std::fs::write(task.join("imagesTr/._prostate_00.nii.gz"), b"junk").unwrap();
    std::fs::write(
        task.join("dataset.json"),
        json!({
            "name": "PROSTATE", "description": "Prostate transitional zone and peripheral zone segmentation",
            "reference": "Radboud University", "licence": "CC-BY-SA 4.0", "release": "1.0 04/05/2018",
            "tensorImageSize": "4D", "modality": {"0": "T2", "1": "ADC"},
            "labels": {"0": "background", "1": "PZ", "2": "TZ"},
            "numTraining": 2, "numTest": 1,
            "training": [{"image": "./imagesTr/prostate_00.nii.gz", "label": "./labelsTr/prostate_00.nii.gz"},
                         {"image": "./imagesTr/prostate_01.nii.gz", "label": "./labelsTr/prostate_01.nii.gz"}],
            "test": ["./imagesTs/prostate_07.nii.gz"]
        })
        .to_string(),
    )
    .unwrap();
    let out = dir.path().join("Dataset005_Prostate");
    assert_accepted(&convert(&task, &out), &out);
    assert_eq!(
        read_json(&out.join("dataset.json")),
        json!({
            "channel_names": {"0": "T2", "1": "ADC"},
            "labels": {"background": 0, "PZ": 1, "TZ": 2},
            "numTraining": 2,
            "file_ending": ".nii.gz",
            "name": "PROSTATE", "description": "Prostate transitional zone and peripheral zone segmentation",
            "reference": "Radboud University", "licence": "CC-BY-SA 4.0", "release": "1.0 04/05/2018"
        })
    );
    assert_eq!(
        names(&out.join("imagesTr")),
        ["prostate_00_0000.nii.gz", "prostate_00_0001.nii.gz", "prostate_01_0000.nii.gz", "prostate_01_0001.nii.gz"]
    );
    assert_eq!(names(&out.join("imagesTs")), ["prostate_07_0000.nii.gz", "prostate_07_0001.nii.gz"]);
    let expected_geometry = Geometry::from_header(&header).unwrap();
    for (case, volumes, training) in expected {
        let folder = if training { "imagesTr" } else { "imagesTs" };
        for (c, volume) in volumes.iter().enumerate() {
            let image = read_image(&out.join(format!("{folder}/{case}_{c:04}.nii.gz"))).unwrap();
            assert_eq!(image.data, volume.mapv(f32::from), "{case} channel {c}");
            assert_eq!(image.geometry, expected_geometry, "{case} channel {c}");
            assert_eq!(image.stored.nifti_header.as_ref().unwrap().datatype, 4, "int16 kept");
            assert_eq!(
                (
                    image.stored.nifti_header.as_ref().unwrap().qform_code,
                    image.stored.nifti_header.as_ref().unwrap().sform_code
                ),
                (header.qform_code, header.sform_code)
            );
            assert_eq!(
                (
                    image.stored.nifti_header.as_ref().unwrap().srow_x,
                    image.stored.nifti_header.as_ref().unwrap().quatern_d
                ),
                (header.srow_x, header.quatern_d)
            );
        }
        if training {
            let label = format!("labelsTr/{case}.nii.gz");
            assert_eq!(std::fs::read(out.join(&label)).unwrap(), std::fs::read(task.join(&label)).unwrap());
        }
    }

    // A 4-D image whose volumes do not match the declared channels.
    let json_path = task.join("dataset.json");
    let mut json = read_json(&json_path);
    json["modality"] = json!({"0": "T2", "1": "ADC", "2": "DWI"});
    std::fs::write(&json_path, json.to_string()).unwrap();
    let out = dir.path().join("Dataset006_Three");
    assert_refused(
        &convert(&task, &out),
        &out,
        "prostate_00.nii.gz",
        "holds 2 volume(s) along the 4th axis but 3 channels are declared",
    );
}

#[test]
fn create_splits_4d_images_when_there_are_several_channels() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = (dir.path().join("images"), dir.path().join("labels"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    let volumes: Vec<Array3<i16>> =
        (0..3).map(|c| Array3::from_shape_fn((2, 3, 4), |(z, y, x)| (c * 100 + z * 12 + y * 4 + x) as i16)).collect();
    write_4d(&images.join("brain.nii.gz"), &volumes, &geometry().to_header());
    let label = Array3::from_shape_fn((2, 3, 4), |(z, y, x)| ((z + y + x) % 2) as u8);
    write_new(&labels.join("brain.nii.gz"), label.view(), &geometry()).unwrap();
    let out = dir.path().join("Dataset326_Brain");
    let output = run(
        "nn-dataset",
        &[
            &"create",
            &"--images",
            &images,
            &"--labels",
            &labels,
            &"--channel",
            &"0=FLAIR",
            &"--channel",
            &"1=T1",
            &"--channel",
            &"2=T2",
            &"-o",
            &out,
        ],
    );
    assert_accepted(&output, &out);
    assert_eq!(names(&out.join("imagesTr")), ["brain_0000.nii.gz", "brain_0001.nii.gz", "brain_0002.nii.gz"]);
    for (c, volume) in volumes.iter().enumerate() {
        let image = read_image(&out.join(format!("imagesTr/brain_{c:04}.nii.gz"))).unwrap();
        assert_eq!(image.data, volume.mapv(f32::from), "channel {c}");
        assert_eq!(image.geometry, Geometry::from_header(&geometry().to_header()).unwrap());
    }
    assert_eq!(read_json(&out.join("dataset.json"))["channel_names"], json!({"0": "FLAIR", "1": "T1", "2": "T2"}));
}

#[test]
fn convert_v1_gives_3d_images_their_channel_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("Task04_Small");
    for sub in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(task.join(sub)).unwrap();
    }
    let image = Array3::from_shape_fn((4, 3, 5), |(z, y, x)| (z * 7 + y * 3 + x) as f32 * 0.5);
    let label = Array3::from_shape_fn((4, 3, 5), |(z, _, _)| u8::from(z > 1));
    write_new(&task.join("imagesTr/small_1.nii.gz"), image.view(), &geometry()).unwrap();
    write_new(&task.join("labelsTr/small_1.nii.gz"), label.view(), &geometry()).unwrap();
    std::fs::write(
        task.join("dataset.json"),
        json!({"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "organ"}, "numTraining": 1,
               "training": [{"image": "./imagesTr/small_1.nii.gz", "label": "./labelsTr/small_1.nii.gz"}], "test": []})
        .to_string(),
    )
    .unwrap();
    let out = dir.path().join("Dataset099_Small");
    assert_accepted(&convert(&task, &out), &out);
    assert_eq!(names(&out), ["dataset.json", "imagesTr", "labelsTr"]);
    let copied = out.join("imagesTr/small_1_0000.nii.gz");
    assert_eq!(std::fs::read(&copied).unwrap(), std::fs::read(task.join("imagesTr/small_1.nii.gz")).unwrap());
    assert_eq!(read_json(&out.join("dataset.json"))["labels"], json!({"background": 0, "organ": 1}));

    // An entry whose image is missing is named, and nothing is written.
    std::fs::remove_file(task.join("imagesTr/small_1.nii.gz")).unwrap();
    let out = dir.path().join("Dataset098_Missing");
    assert_refused(&convert(&task, &out), &out, "imagesTr/small_1.nii.gz", "missing");
}

#[test]
fn real_hippocampus_cases_round_trip() {
    let Some(shared) = shared() else { return };
    let source = shared.join("data/Dataset004_Hippocampus");
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = (dir.path().join("images"), dir.path().join("labels"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    let cases = ["hippocampus_001", "hippocampus_003", "hippocampus_004"];
    for case in cases {
        std::fs::copy(source.join(format!("imagesTr/{case}_0000.nii.gz")), images.join(format!("{case}.nii.gz")))
            .unwrap();
        std::fs::copy(source.join(format!("labelsTr/{case}.nii.gz")), labels.join(format!("{case}.nii.gz"))).unwrap();
    }
    let out = dir.path().join("Dataset004_Hippocampus");
    let output = run(
        "nn-dataset",
        &[
            &"create",
            &"--images",
            &images,
            &"--labels",
            &labels,
            &"--channel",
            &"0=MRI",
            &"--label",
            &"0=background",
            &"--label",
            &"1=Anterior",
            &"--label",
            &"2=Posterior",
            &"--name",
            &"Hippocampus",
            &"-o",
            &out,
            &"-j",
            &"2",
        ],
    );
    assert_accepted(&output, &out);
    for case in cases {
        for file in [format!("imagesTr/{case}_0000.nii.gz"), format!("labelsTr/{case}.nii.gz")] {
            assert_eq!(std::fs::read(out.join(&file)).unwrap(), std::fs::read(source.join(&file)).unwrap(), "{file}");
        }
    }
    let ours = read_json(&out.join("dataset.json"));
    let theirs = read_json(&source.join("dataset.json"));
    for key in ["channel_names", "labels", "file_ending", "name"] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    assert_eq!(ours["numTraining"], 3);
}

/// Runs `nn-dataset create --images IMAGES --labels LABELS --channel C... -o OUT EXTRA...`.
fn create_from(images: &Path, labels: &Path, channels: &[&str], out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"create", &"--images", &images, &"--labels", &labels];
    for channel in channels {
        args.extend([&"--channel" as &dyn AsRef<std::ffi::OsStr>, channel]);
    }
    args.extend([&"-o" as &dyn AsRef<std::ffi::OsStr>, &out]);
    args.extend(extra.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
    run("nn-dataset", &args)
}

/// `images/` and `labels/` folders in a temporary directory.
fn source_folders() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = (dir.path().join("images"), dir.path().join("labels"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    (dir, images, labels)
}

fn assert_geometry_close(a: &Geometry, b: &Geometry, what: &str) {
    let pairs = a.spacing.iter().zip(&b.spacing).chain(a.origin.iter().zip(&b.origin));
    for (x, y) in pairs.chain(a.direction.iter().zip(&b.direction)) {
        assert!((x - y).abs() < 1e-6, "{what}: {a:?} != {b:?}");
    }
}

#[test]
fn create_converts_metaimage_and_nrrd_sources_with_to() {
    let (dir, images, labels) = source_folders();
    let geometry = geometry();
    let mut sources = Vec::new();
    for (i, case) in ["ct_1", "ct_2"].iter().enumerate() {
        let data = Array3::from_shape_fn((3, 4, 5), |(z, y, x)| (i * 500 + z * 40 + y * 7 + x) as f32 - 250.0);
        let image = Image { data, geometry, stored: Stored::new(3, PixelType::I16) };
        write_image(&images.join(format!("{case}.mha")), &image).unwrap();
        let label = Array3::from_shape_fn((3, 4, 5), |(z, y, _)| ((z + y + i) % 3) as u16);
        write_label_map(&labels.join(format!("{case}.nrrd")), label.view(), &geometry, &Stored::new(3, PixelType::U8))
            .unwrap();
        sources.push((case.to_string(), image, label));
    }
    // Two formats and no --to: refused, naming a file of the odd format.
    let out = dir.path().join("Dataset330_Mixed");
    assert_refused(
        &create_from(&images, &labels, &["0=CT"], &out, &[]),
        &out,
        "labels/ct_1.nrrd",
        "the sources mix image formats (.mha .nrrd); a dataset has one file ending: convert them with --to",
    );
    // A 3-D image cannot be a PNG: refused naming the source.
    assert_refused(
        &create_from(&images, &labels, &["0=CT"], &out, &["--to", ".png"]),
        &out,
        "images/ct_2.mha",
        "cannot be written as .png: a 3-D image of shape [3, 4, 5] cannot be written as a 2-D image",
    );

    let output = create_from(&images, &labels, &["0=CT"], &out, &["--to", "nii.gz"]);
    assert_accepted(&output, &out);
    assert_eq!(read_json(&out.join("dataset.json"))["file_ending"], ".nii.gz");
    assert_eq!(names(&out.join("imagesTr")), ["ct_1_0000.nii.gz", "ct_2_0000.nii.gz"]);
    assert_eq!(names(&out.join("labelsTr")), ["ct_1.nii.gz", "ct_2.nii.gz"]);
    for (case, image, label) in sources {
        let ours = read_image(&out.join(format!("imagesTr/{case}_0000.nii.gz"))).unwrap();
        assert_eq!(ours.data, image.data, "{case}");
        assert_eq!(ours.stored.pixel, PixelType::I16, "{case}: voxel type kept");
        assert_geometry_close(&ours.geometry, &geometry, &case);
        let ours = read_label_map(&out.join(format!("labelsTr/{case}.nii.gz"))).unwrap();
        assert_eq!(ours.data, label.mapv(i32::from), "{case}");
        assert_geometry_close(&ours.geometry, &geometry, &case);
    }
}

/// Writes an 8-bit RGB PNG of `[y, x, rgb]` values.
fn write_rgb_png(path: &Path, pixels: &ndarray::Array3<u8>) {
    let (height, width) = (pixels.shape()[0] as u32, pixels.shape()[1] as u32);
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(std::fs::File::create(path).unwrap()), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(pixels.as_standard_layout().as_slice().unwrap()).unwrap();
    writer.finish().unwrap();
}

#[test]
fn create_takes_rgb_pngs_as_three_channels() {
    let (dir, images, labels) = source_folders();
    let mut sources = Vec::new();
    // one case named as a whole (road_a.png), one as its first channel file (road_b_0000.png)
    for (i, (case, file)) in [("road_a", "road_a.png"), ("road_b", "road_b_0000.png")].iter().enumerate() {
        let rgb = Array3::from_shape_fn((6, 7, 3), |(y, x, c)| (i * 60 + y * 20 + x * 3 + c * 70) as u8);
        write_rgb_png(&images.join(file), &rgb);
        let label = Array3::from_shape_fn((1, 6, 7), |(_, y, x)| u16::from((x + y + i) % 3 == 0));
        let plane = Geometry::of_plane([1.0, 1.0], [0.0, 0.0], [1.0, 0.0, 0.0, 1.0]);
        write_label_map(&labels.join(format!("{case}.png")), label.view(), &plane, &Stored::new(2, PixelType::U8))
            .unwrap();
        sources.push((case.to_string(), images.join(file), rgb, label));
    }
    let channels = ["0=R", "1=G", "2=B"];
    // Copied as they are: one file holds the three channels, as in nnU-Net's own RGB datasets.
    let out = dir.path().join("Dataset331_Roads");
    assert_accepted(&create_from(&images, &labels, &channels, &out, &[]), &out);
    let json = read_json(&out.join("dataset.json"));
    assert_eq!(json["channel_names"], json!({"0": "R", "1": "G", "2": "B"}));
    assert_eq!(json["file_ending"], ".png");
    assert_eq!(json["labels"], json!({"background": 0, "label_1": 1}));
    assert_eq!(names(&out.join("imagesTr")), ["road_a_0000.png", "road_b_0000.png"]);
    for (case, source, _, _) in &sources {
        let copied = out.join(format!("imagesTr/{case}_0000.png"));
        assert_eq!(std::fs::read(copied).unwrap(), std::fs::read(source).unwrap(), "{case}");
    }
    // Two channels declared for RGB files: refused.
    let wrong = dir.path().join("Dataset332_Wrong");
    let output = create_from(&images, &labels, &["0=R", "1=G"], &wrong, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(!wrong.exists());

    // Converted: one NIfTI file per channel.
    let out = dir.path().join("Dataset333_RoadsNifti");
    assert_accepted(&create_from(&images, &labels, &channels, &out, &["--to", ".nii.gz"]), &out);
    assert_eq!(read_json(&out.join("dataset.json"))["file_ending"], ".nii.gz");
    for (case, _, rgb, label) in sources {
        for c in 0..3 {
            let channel = read_image(&out.join(format!("imagesTr/{case}_{c:04}.nii.gz"))).unwrap();
            let expected = rgb.index_axis(Axis(2), c).mapv(f32::from).insert_axis(Axis(0));
            assert_eq!(channel.data, expected, "{case} channel {c}");
            assert_eq!(channel.stored.pixel, PixelType::U8);
        }
        let ours = read_label_map(&out.join(format!("labelsTr/{case}.nii.gz"))).unwrap();
        assert_eq!(ours.data, label.mapv(i32::from), "{case}");
    }
}

#[test]
fn create_carries_tiff_stack_spacing() {
    let (dir, images, labels) = source_folders();
    let geometry =
        Geometry { spacing: [2.5, 0.5, 0.25], origin: [0.0; 3], direction: [1., 0., 0., 0., 1., 0., 0., 0., 1.] };
    let data = Array3::from_shape_fn((5, 4, 6), |(z, y, x)| (z * 1000 + y * 30 + x) as f32);
    // five slices, not 3 or 4: nn-tools reads such a stack as a 2-D RGB(A) image first (unlike nnU-Net)
    let image = Image { data: data.clone(), geometry, stored: Stored::new(3, PixelType::U16) };
    // the writers leave the spacing file cell.json beside each
    write_image(&images.join("cell.tif"), &image).unwrap();
    let label = Array3::from_shape_fn((5, 4, 6), |(z, _, x)| u16::from(z > 1 && x > 2));
    write_label_map(&labels.join("cell.tif"), label.view(), &geometry, &Stored::new(3, PixelType::U8)).unwrap();
    assert!(images.join("cell.json").is_file() && labels.join("cell.json").is_file());

    // Copied: the spacing files come along under the case's name.
    let out = dir.path().join("Dataset334_Cells");
    assert_accepted(&create_from(&images, &labels, &["0=EM"], &out, &[]), &out);
    assert_eq!(names(&out.join("imagesTr")), ["cell.json", "cell_0000.tif"]);
    assert_eq!(names(&out.join("labelsTr")), ["cell.json", "cell.tif"]);
    assert_eq!(read_json(&out.join("imagesTr/cell.json")), json!({"spacing": [2.5, 0.5, 0.25]}));

    // Converted to NIfTI: the spacing is the image's.
    let nifti = dir.path().join("Dataset335_CellsNifti");
    assert_accepted(&create_from(&images, &labels, &["0=EM"], &nifti, &["--to", ".nii.gz"]), &nifti);
    assert_eq!(names(&nifti.join("imagesTr")), ["cell_0000.nii.gz"]);
    let ours = read_image(&nifti.join("imagesTr/cell_0000.nii.gz")).unwrap();
    assert_eq!((ours.data, ours.geometry.spacing, ours.stored.pixel), (data.clone(), [2.5, 0.5, 0.25], PixelType::U16));
    assert_eq!(read_label_map(&nifti.join("labelsTr/cell.nii.gz")).unwrap().data, label.mapv(i32::from));

    // And back to TIFF (.tiff): one spacing file per case, none per channel.
    let back = dir.path().join("Dataset336_CellsTiff");
    let (nifti_images, nifti_labels) = (nifti.join("imagesTr"), nifti.join("labelsTr"));
    assert_accepted(&create_from(&nifti_images, &nifti_labels, &["0=EM"], &back, &["--to", ".tiff"]), &back);
    assert_eq!(names(&back.join("imagesTr")), ["cell.json", "cell_0000.tiff"]);
    assert_eq!(names(&back.join("labelsTr")), ["cell.json", "cell.tiff"]);
    assert_eq!(read_json(&back.join("imagesTr/cell.json")), json!({"spacing": [2.5, 0.5, 0.25]}));
    let ours = ReaderWriter::Tiff3d.read_images(&[back.join("imagesTr/cell_0000.tiff")]).unwrap();
    assert_eq!((&ours[0].data, ours[0].geometry.spacing), (&data, [2.5, 0.5, 0.25]));
}

/// A Slicer segmentation `CASE.seg.nrrd` of `labels` (`[z, y, x]`, uint8) with the geometry of
/// [`slicer_geometry`] and the segment key/value lines `segments`, gzip-encoded as Slicer writes it.
fn write_segmentation(path: &Path, labels: &Array3<u8>, segments: &str) {
    let [nz, ny, nx] = [labels.shape()[0], labels.shape()[1], labels.shape()[2]];
    let header = format!(
        "NRRD0004\n# Complete NRRD file format specification at:\n# http://teem.sourceforge.net/nrrd/format.html\n\
         type: unsigned char\ndimension: 3\nspace: left-posterior-superior\nsizes: {nx} {ny} {nz}\n\
         space directions: (0.5,0,0) (0,0.75,0) (0,0,2)\nkinds: domain domain domain\nencoding: gzip\n\
         space origin: (10,-5,3)\nSegmentation_MasterRepresentation:=Binary labelmap\n{segments}\n"
    );
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(labels.as_standard_layout().as_slice().unwrap()).unwrap();
    std::fs::write(path, [header.into_bytes(), encoder.finish().unwrap()].concat()).unwrap();
}

fn slicer_geometry() -> Geometry {
    Geometry { spacing: [2.0, 0.75, 0.5], origin: [10.0, -5.0, 3.0], direction: [1., 0., 0., 0., 1., 0., 0., 0., 1.] }
}

#[test]
fn create_names_labels_after_slicer_segments() {
    let (dir, images, labels) = source_folders();
    let segment = |n: usize, name: &str, value: u8, layer: u8| {
        format!(
            "Segment{n}_ID:=Segment_{n}\nSegment{n}_Name:={name}\nSegment{n}_LabelValue:={value}\nSegment{n}_Layer:={layer}\n"
        )
    };
    for (i, case) in ["liver_01", "liver_02"].iter().enumerate() {
        let data = Array3::from_shape_fn((3, 4, 5), |(z, y, x)| (z * 20 + y * 5 + x + i) as f32);
        let image = Image { data, geometry: slicer_geometry(), stored: Stored::new(3, PixelType::I16) };
        write_image(&images.join(format!("{case}.nrrd")), &image).unwrap();
    }
    let map = |top: u8| Array3::from_shape_fn((3, 4, 5), |(z, _, x)| if x < 2 { 0 } else { (z as u8 % top) + 1 });
    write_segmentation(
        &labels.join("liver_01.seg.nrrd"),
        &map(2),
        &(segment(0, "liver", 1, 0) + &segment(1, "tumour", 2, 0)),
    );
    write_segmentation(&labels.join("liver_02.seg.nrrd"), &map(1), &segment(0, "liver", 1, 0));
    let out = dir.path().join("Dataset337_Liver");
    assert_accepted(&create_from(&images, &labels, &["0=CT"], &out, &[]), &out);
    let json = read_json(&out.join("dataset.json"));
    assert_eq!(json["labels"], json!({"background": 0, "liver": 1, "tumour": 2}));
    assert_eq!(json["file_ending"], ".nrrd");
    assert_eq!(names(&out.join("labelsTr")), ["liver_01.nrrd", "liver_02.nrrd"]);
    let ours = read_label_map(&out.join("labelsTr/liver_01.nrrd")).unwrap();
    assert_eq!(ours.data, map(2).mapv(i32::from));
    assert_geometry_close(&ours.geometry, &slicer_geometry(), "liver_01");

    // Converted: the label maps take the dataset's ending.
    let nifti = dir.path().join("Dataset338_LiverNifti");
    assert_accepted(&create_from(&images, &labels, &["0=CT"], &nifti, &["--to", ".nii.gz"]), &nifti);
    assert_eq!(names(&nifti.join("labelsTr")), ["liver_01.nii.gz", "liver_02.nii.gz"]);
    assert_eq!(read_json(&nifti.join("dataset.json"))["labels"], json!({"background": 0, "liver": 1, "tumour": 2}));
    assert_eq!(read_label_map(&nifti.join("labelsTr/liver_02.nii.gz")).unwrap().data, map(1).mapv(i32::from));

    // A name with another value in another case: refused, naming that file.
    write_segmentation(&labels.join("liver_02.seg.nrrd"), &map(1), &segment(0, "liver", 2, 0));
    let bad = dir.path().join("Dataset339_Bad");
    assert_refused(
        &create_from(&images, &labels, &["0=CT"], &bad, &[]),
        &bad,
        "labels/liver_02.seg.nrrd",
        "segment \"liver\" has label value 2, but 1 in",
    );
    // Overlapping segments (several layers): refused, even with declared labels.
    write_segmentation(
        &labels.join("liver_02.seg.nrrd"),
        &map(1),
        &(segment(0, "liver", 1, 0) + &segment(1, "tumour", 1, 1)),
    );
    assert_refused(
        &create_from(
            &images,
            &labels,
            &["0=CT"],
            &bad,
            &["--label", "0=background", "--label", "1=liver", "--label", "2=tumour"],
        ),
        &bad,
        "labels/liver_02.seg.nrrd",
        "its segments overlap (stored in 2 layers)",
    );
}
