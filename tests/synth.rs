//! nn-synth: deterministic output, and a dataset nn-fingerprint accepts and describes correctly.

use nntools_preprocessing::cropping::{box_shape, nonzero_bounding_box};
use nntools_synth::{Spec, generate};
use nntools_tests::{json_stdout, run, stderr};
use std::path::Path;

fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["imagesTr", "labelsTr", "imagesTs"] {
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            out.push((format!("{sub}/{}", path.file_name().unwrap().to_string_lossy()), std::fs::read(&path).unwrap()));
        }
    }
    out.push(("dataset.json".into(), std::fs::read(root.join("dataset.json")).unwrap()));
    out.sort();
    out
}

#[test]
fn same_seed_gives_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (out, threads) in [(&a, "1"), (&b, "2")] {
        let output = run(
            "nn-synth",
            &[&"-o", out, &"--cases", &"4", &"--test-cases", &"2", &"--channels", &"2", &"-j", &threads],
        );
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.len(), 4 * 2 + 4 + 2 * 2 + 1);
    assert!(fa == fb, "same seed, different bytes");
    let other = dir.path().join("c");
    assert!(
        run(
            "nn-synth",
            &[&"-o", &other, &"--cases", &"4", &"--test-cases", &"2", &"--channels", &"2", &"--seed", &"1"]
        )
        .status
        .success()
    );
    assert!(files(&other) != fa, "another seed must give another dataset");
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    assert!(run("nn-synth", &[&"-o", &out, &"--cases", &"2"]).status.success());
    let again = run("nn-synth", &[&"-o", &out, &"--cases", &"3"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already exists"));
    assert!(run("nn-synth", &[&"-o", &out, &"--cases", &"3", &"--force"]).status.success());
    assert_eq!(std::fs::read_dir(out.join("labelsTr")).unwrap().count(), 3);
}

#[test]
fn fingerprint_of_a_synthetic_dataset_matches_its_construction() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("Dataset900_Synth");
    let spec = Spec { training_cases: 5, channels: 2, labels: 3, seed: 11, ..Spec::default() };
    let args: [&dyn AsRef<std::ffi::OsStr>; 10] =
        [&"-o", &out, &"--cases", &"5", &"--channels", &"2", &"--labels", &"3", &"--seed", &"11"];
    assert!(run("nn-synth", &args).status.success());
    let fingerprint = json_stdout(&run("nn-fingerprint", &[&out]));
    let mut relative_sizes = Vec::new();
    for index in 0..spec.training_cases {
        let case = generate(&spec, index);
        let views: Vec<_> = case.images.iter().map(|i| i.view()).collect();
        let cropped = box_shape(&nonzero_bounding_box(&views));
        assert_eq!(fingerprint["shapes_after_crop"][index], serde_json::json!(cropped), "case {index}");
        assert!(cropped.iter().zip(case.labels.shape()).any(|(c, s)| c < s), "the body leaves a margin to crop");
        let spacing: Vec<f64> = serde_json::from_value(fingerprint["spacings"][index].clone()).unwrap();
        for (ours, made) in spacing.iter().zip(case.geometry.spacing) {
            assert!((ours - made).abs() < 1e-6, "case {index}: spacing {spacing:?} vs {:?}", case.geometry.spacing);
        }
        relative_sizes.push(cropped.iter().product::<usize>() as f64 / case.labels.len() as f64);
    }
    relative_sizes.sort_by(f64::total_cmp);
    assert_eq!(fingerprint["median_relative_size_after_cropping"].as_f64().unwrap(), relative_sizes[2]);
    // channel statistics are over foreground voxels only, so they lie within the foreground range
    for channel in 0..2 {
        let stats = &fingerprint["foreground_intensity_properties_per_channel"][channel.to_string()];
        let (mut lo, mut hi) = (f32::MAX, f32::MIN);
        for index in 0..spec.training_cases {
            let case = generate(&spec, index);
            for (v, l) in case.images[channel].iter().zip(&case.labels) {
                if *l > 0 {
                    lo = lo.min(*v);
                    hi = hi.max(*v);
                }
            }
        }
        assert_eq!(stats["min"].as_f64().unwrap() as f32, lo);
        assert_eq!(stats["max"].as_f64().unwrap() as f32, hi);
        let (p05, median, p995) = (
            stats["percentile_00_5"].as_f64().unwrap(),
            stats["median"].as_f64().unwrap(),
            stats["percentile_99_5"].as_f64().unwrap(),
        );
        assert!(f64::from(lo) <= p05 && p05 <= median && median <= p995 && p995 <= f64::from(hi));
    }
}

/// The same dataset in other formats: `.mha` holds the NIfTI files' voxels and geometry; `.png` holds
/// each case's middle slice, one RGB file for three channels, which nnU-Net's 2-D reader takes as
/// three channels.
#[test]
fn other_formats_hold_the_same_cases() {
    use nntools_io::{ReaderWriter, read_image, read_label_map};
    let dir = tempfile::tempdir().unwrap();
    let make = |ending: &str| {
        let out = dir.path().join(ending.trim_start_matches('.'));
        let args = ["--cases", "2", "--channels", "3", "--seed", "5", "--file-ending", ending];
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"-o", &out];
        all.extend(args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        let output = run("nn-synth", &all);
        assert!(output.status.success(), "{ending}: {}", stderr(&output));
        out
    };
    let (nifti, mha, png) = (make(".nii.gz"), make(".mha"), make(".png"));
    for case in ["synth_000", "synth_001"] {
        let label = read_label_map(&nifti.join(format!("labelsTr/{case}.nii.gz"))).unwrap();
        let label_mha = read_label_map(&mha.join(format!("labelsTr/{case}.mha"))).unwrap();
        assert_eq!(label_mha.data, label.data);
        for (a, b) in label_mha.geometry.direction.iter().zip(label.geometry.direction) {
            assert!((a - b).abs() < 1e-6, "{case}: direction");
        }
        for c in 0..3 {
            let image = read_image(&nifti.join(format!("imagesTr/{case}_{c:04}.nii.gz"))).unwrap();
            assert_eq!(read_image(&mha.join(format!("imagesTr/{case}_{c:04}.mha"))).unwrap().data, image.data);
        }
        let rgb = png.join(format!("imagesTr/{case}_0000.png"));
        let channels = ReaderWriter::NaturalImage2d.read_images(&[rgb]).unwrap();
        assert_eq!(channels.len(), 3, "{case}: one RGB file, three channels");
        let middle = label.data.shape()[0] / 2;
        let slice = label.data.slice(ndarray::s![middle..=middle, .., ..]);
        assert_eq!(channels[0].data.shape(), slice.shape());
        let label_png = ReaderWriter::NaturalImage2d.read_seg(&png.join(format!("labelsTr/{case}.png"))).unwrap();
        assert_eq!(label_png.data, slice, "{case}: the middle slice's labels");
        assert_eq!(label_png.geometry.spacing, [999.0, 1.0, 1.0]);
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(png.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(json["channel_names"], serde_json::json!({"0": "R", "1": "G", "2": "B"}));
    assert_eq!(json["file_ending"], ".png");
}
