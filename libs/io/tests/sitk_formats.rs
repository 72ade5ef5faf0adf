//! Every file in tests/fixtures/sitk_formats read by nn-tools' MetaImage and NRRD readers equals what
//! SimpleITK reports for it (expected.json, written by make_fixtures.py): voxels, spacing, origin, direction.

use ndarray::{ArrayD, IxDyn};
use nntools_io::{RasterImage, read_metaimage, read_nrrd};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sitk_formats")
}

fn numbers(value: &serde_json::Value) -> Vec<f64> {
    value.as_array().expect("a JSON list").iter().map(|v| v.as_f64().expect("a number")).collect()
}

/// SimpleITK's array in nnU-Net's channel-first layout: a vector image's components, last in
/// `GetArrayFromImage`, moved to the front as the readers put them.
fn expected_data(entry: &serde_json::Value) -> ArrayD<f32> {
    let shape: Vec<usize> = numbers(&entry["shape"]).iter().map(|&s| s as usize).collect();
    let values = numbers(&entry["array"]).iter().map(|&v| v as f32).collect();
    let array = ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap();
    if entry["components"].as_u64() == Some(1) {
        return array;
    }
    let last = shape.len() - 1;
    let order: Vec<usize> = std::iter::once(last).chain(0..last).collect();
    array.permuted_axes(IxDyn(&order)).as_standard_layout().into_owned()
}

#[test]
fn readers_match_simpleitk_on_every_fixture() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap();
    let files = expected["files"].as_object().unwrap();
    assert_eq!(files.len(), 15, "fixture set changed: update this test");
    for (name, entry) in files {
        let path = fixtures().join(name);
        let image: RasterImage =
            if name.ends_with(".mha") || name.ends_with(".mhd") { read_metaimage(&path) } else { read_nrrd(&path) }
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(image.data, expected_data(entry), "{name}: voxels");
        assert_eq!(image.spacing, numbers(&entry["spacing"]), "{name}: spacing");
        assert_eq!(image.origin, numbers(&entry["origin"]), "{name}: origin");
        assert_eq!(image.direction, numbers(&entry["direction"]), "{name}: direction");
        let channels = entry["components"].as_u64().unwrap() > 1 || image.spacing.len() == 4;
        assert_eq!(image.channel_axis, channels, "{name}: channel axis");
    }
}

/// Truncating or corrupting a one-file fixture anywhere never panics: the reader either refuses it with a
/// one-line bad-input error or, where only a stream trailer was lost, still returns the original voxels.
#[test]
fn truncated_or_corrupted_fixtures_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["label_u8_compressed.mha", "image_f32.mha", "label_u16_compressed.nrrd", "ras_big_endian_gzip.nrrd"] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        let path = dir.path().join(name);
        let read = |content: &[u8]| {
            std::fs::write(&path, content).unwrap();
            if name.ends_with(".mha") { read_metaimage(&path) } else { read_nrrd(&path) }
        };
        let original = read(&bytes).unwrap();
        let mut refused = 0;
        let mut variants: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
        variants.extend((0..bytes.len()).map(|i| {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x5a;
            flipped
        }));
        for (i, content) in variants.iter().enumerate() {
            match read(content) {
                Ok(image) if i < bytes.len() => assert_eq!(image.data, original.data, "{name} cut at {i}"),
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind, nntools_io::ErrorKind::BadInput, "{name} variant {i}: {e}");
                    assert!(!e.message.contains('\n'), "{name} variant {i}: {e}");
                    refused += 1;
                }
            }
        }
        assert!(refused > bytes.len(), "{name}: only {refused} of {} variants refused", variants.len());
    }
}
