//! Every file in tests/fixtures/sitk_formats read by nn-tools' MetaImage, NRRD and GIPL readers equals what
//! SimpleITK reports for it (expected.json, written by make_fixtures.py): voxels, spacing, origin, direction.
//! NIfTI-2 and 2-D NIfTI files read as nnU-Net's readers read them, and NibabelIOWithReorient's
//! reorientation and its undoing, equal what nnU-Net's classes give.

use ndarray::{ArrayD, IxDyn};
use nntools_io::{RasterImage, ReaderWriter, read_gipl, read_image, read_metaimage, read_nrrd, write_label_map};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sitk_formats")
}

fn numbers(value: &serde_json::Value) -> Vec<f64> {
    value.as_array().expect("a JSON list").iter().map(|v| v.as_f64().expect("a number")).collect()
}

/// An array recorded as its shape and C-order values.
fn expected_data_of(entry: &serde_json::Value) -> ArrayD<f32> {
    let shape: Vec<usize> = numbers(&entry["shape"]).iter().map(|&s| s as usize).collect();
    ArrayD::from_shape_vec(IxDyn(&shape), numbers(&entry["array"]).iter().map(|&v| v as f32).collect()).unwrap()
}

/// SimpleITK's array in nnU-Net's channel-first layout: a vector image's components, last in
/// `GetArrayFromImage`, moved to the front as the readers put them.
fn expected_data(entry: &serde_json::Value) -> ArrayD<f32> {
    let array = expected_data_of(entry);
    if entry["components"].as_u64() == Some(1) {
        return array;
    }
    let last = array.ndim() - 1;
    let order: Vec<usize> = std::iter::once(last).chain(0..last).collect();
    array.permuted_axes(IxDyn(&order)).as_standard_layout().into_owned()
}

#[test]
fn readers_match_simpleitk_on_every_fixture() {
    let expected = expected();
    let files = expected["files"].as_object().unwrap();
    assert_eq!(files.len(), 17, "fixture set changed: update this test");
    for (name, entry) in files {
        let path = fixtures().join(name);
        let image: RasterImage = if name.ends_with(".mha") || name.ends_with(".mhd") {
            read_metaimage(&path)
        } else if name.ends_with(".gipl") {
            read_gipl(&path)
        } else {
            read_nrrd(&path)
        }
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(image.data, expected_data(entry), "{name}: voxels");
        assert_eq!(image.spacing, numbers(&entry["spacing"]), "{name}: spacing");
        assert_eq!(image.origin, numbers(&entry["origin"]), "{name}: origin");
        assert_eq!(image.direction, numbers(&entry["direction"]), "{name}: direction");
        let channels = entry["components"].as_u64().unwrap() > 1 || image.spacing.len() == 4;
        assert_eq!(image.channel_axis, channels, "{name}: channel axis");
    }
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap()
}

/// NIfTI-2 files (nibabel's) read as NibabelIO reads them (SimpleITK 2.5 cannot read NIfTI-2), with the
/// geometry SimpleITK gives the same image saved as NIfTI-1; a 2-D NIfTI (SimpleITK's) read as one slice
/// whose plane has SimpleITK's 2-D spacing, origin and direction.
#[test]
fn nifti2_and_2d_nifti_read_as_nnunet_reads_them() {
    let expected = expected();
    let nifti = &expected["nifti"];
    for name in ["nifti2_i16.nii.gz", "nifti2_i16.nii", "nifti2_big_endian_i16.nii", "nifti2_twin_i16.nii.gz"] {
        let entry = &nifti[name];
        let image = read_image(&fixtures().join(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(image.data.clone().into_dyn(), expected_data_of(entry), "{name}: voxels");
        let spacing = numbers(&entry["spacing"]);
        assert_eq!(image.geometry.spacing.to_vec(), [spacing[2], spacing[1], spacing[0]], "{name}: spacing");
        assert_eq!(image.geometry.origin.to_vec(), numbers(&entry["origin"]), "{name}: origin");
        assert_eq!(image.geometry.direction.to_vec(), numbers(&entry["direction"]), "{name}: direction");
        if let Some(nibabel_spacing) = entry.get("nibabel_spacing") {
            let [read] =
                <[_; 1]>::try_from(ReaderWriter::Nibabel.read_images(&[fixtures().join(name)]).unwrap()).unwrap();
            assert_eq!(read.data, image.data, "{name}: NibabelIO voxels");
            // NIfTI-2 keeps pixdim in double precision; the NIfTI-1 header it becomes rounds it to single
            for (ours, theirs) in read.geometry.spacing.iter().zip(numbers(nibabel_spacing)) {
                assert!((ours - theirs).abs() < 1e-6 * theirs, "{name}: spacing {ours} vs NibabelIO's {theirs}");
            }
        }
    }
    let entry = &nifti["nifti_2d_f32.nii.gz"];
    let image = read_image(&fixtures().join("nifti_2d_f32.nii.gz")).unwrap();
    assert_eq!(image.stored.dimension, 2);
    assert_eq!(image.data.shape(), [1, 4, 5]);
    assert_eq!(image.data.index_axis(ndarray::Axis(0), 0).into_dyn(), expected_data_of(entry), "2-D voxels");
    let g = &image.geometry;
    assert_eq!(vec![g.spacing[2], g.spacing[1]], numbers(&entry["spacing"]), "2-D spacing");
    assert_eq!(g.spacing[0], 999.0 * 2.0, "2-D added axis spacing");
    assert_eq!(g.origin[..2].to_vec(), numbers(&entry["origin"]), "2-D origin");
    let d = g.direction;
    assert_eq!(vec![d[0], d[1], d[3], d[4]], numbers(&entry["direction"]), "2-D direction");
}

/// NibabelIOWithReorient's array and spacing for a NIfTI with a permuted, flipped, tilted affine, and a
/// label map written like it back in the file's orientation, as `write_seg` writes it.
#[test]
fn nibabel_reorientation_and_its_undoing_match_nnunet() {
    let expected = expected();
    let entry = &expected["reorient"]["reorient_i16.nii.gz"];
    let path = fixtures().join("reorient_i16.nii.gz");
    let [image] =
        <[_; 1]>::try_from(ReaderWriter::NibabelWithReorient.read_images(std::slice::from_ref(&path)).unwrap())
            .unwrap();
    assert_eq!(image.data.clone().into_dyn(), expected_data_of(entry), "reoriented voxels");
    let spacing = numbers(&entry["spacing"]);
    assert_eq!(image.geometry.spacing.to_vec(), spacing, "reoriented spacing");
    assert!(image.stored.reorientation.is_some());

    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("written.nii.gz");
    let labels = image.data.mapv(|v| v as u16);
    write_label_map(&written, labels.view(), &image.geometry, &image.stored).unwrap();
    let back = read_image(&written).unwrap();
    let written_entry = serde_json::json!({"shape": entry["written_shape"], "array": entry["written_array"]});
    assert_eq!(back.data.clone().into_dyn(), expected_data_of(&written_entry), "written voxels");
    assert_eq!(back.geometry, read_image(&path).unwrap().geometry, "written geometry");
    let header = back.stored.nifti_header.unwrap();
    let rows = [header.srow_x, header.srow_y, header.srow_z];
    for (i, theirs) in numbers(&entry["written_affine"]).into_iter().enumerate() {
        let ours = f64::from(rows[i / 4][i % 4]);
        assert!((ours - theirs).abs() < 1e-6, "affine entry {i}: {ours} vs write_seg's {theirs}");
    }
}

/// Truncating or corrupting a one-file fixture anywhere never panics: the reader either refuses it with a
/// one-line bad-input error or, where only a stream trailer was lost, still returns the original voxels.
#[test]
fn truncated_or_corrupted_fixtures_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "label_u8_compressed.mha",
        "image_f32.mha",
        "label_u16_compressed.nrrd",
        "ras_big_endian_gzip.nrrd",
        "gipl_i16.gipl",
    ] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        let path = dir.path().join(name);
        let read = |content: &[u8]| {
            std::fs::write(&path, content).unwrap();
            match name.rsplit('.').next() {
                Some("mha") => read_metaimage(&path),
                Some("gipl") => read_gipl(&path),
                _ => read_nrrd(&path),
            }
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
