//! NIfTI reading and writing: values for every voxel type, scaling, headers kept bit for bit, and
//! geometry equal to what SimpleITK reported to nnU-Net for the reference cases.

use ndarray::Array3;
use nntools_io::{Geometry, NiftiHeader, read_image, read_label_map, write_like, write_new};
use nntools_tests::shared;
use serde_json::Value;
use std::path::Path;

fn ramp(shape: (usize, usize, usize)) -> Array3<f32> {
    Array3::from_shape_fn(shape, |(z, y, x)| (z * 30 + y * 6 + x) as f32)
}

fn geometry() -> Geometry {
    Geometry { spacing: [3.0, 0.8, 0.7], origin: [10.0, -20.0, 5.0], direction: [-1., 0., 0., 0., -1., 0., 0., 0., 1.] }
}

#[test]
fn every_voxel_type_round_trips_in_axis_order() {
    let dir = tempfile::tempdir().unwrap();
    let values = ramp((4, 5, 6));
    macro_rules! round_trip {
        ($t:ty, $name:literal) => {{
            let path = dir.path().join($name);
            write_new(&path, values.mapv(|v| v as $t).view(), &geometry()).unwrap();
            let image = read_image(&path).unwrap();
            assert_eq!(image.data, values, "{}", $name);
            assert_eq!(image.geometry.spacing.map(|s| s as f32), geometry().spacing.map(|s| s as f32));
        }};
    }
    round_trip!(u8, "u8.nii.gz");
    round_trip!(i8, "i8.nii");
    round_trip!(i16, "i16.nii.gz");
    round_trip!(u16, "u16.nii");
    round_trip!(i32, "i32.nii.gz");
    round_trip!(f32, "f32.nii.gz");
    round_trip!(f64, "f64.nii");
    // NIfTI stores x fastest: the first bytes after the header are voxels (z=0, y=0, x=0..)
    let raw = std::fs::read(dir.path().join("u8.nii.gz")).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(raw.as_slice()), &mut plain).unwrap();
    assert_eq!(&plain[352..358], &[0, 1, 2, 3, 4, 5]);
    assert_eq!(plain[352 + 6], 6, "then y = 1");
    assert_eq!(plain[352 + 30], 30, "then z = 1");
}

#[test]
fn scaling_is_applied_and_invalid_slopes_read_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scaled.nii");
    write_new(&path, ramp((2, 2, 2)).mapv(|v| v as i16).view(), &geometry()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // scl_slope and scl_inter live at bytes 112 and 116 of the header
    bytes[112..116].copy_from_slice(&2.0f32.to_le_bytes());
    bytes[116..120].copy_from_slice(&(-3.0f32).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(read_image(&path).unwrap().data, ramp((2, 2, 2)).mapv(|v| v * 2.0 - 3.0));
    bytes[112..116].copy_from_slice(&f32::NAN.to_le_bytes());
    bytes[116..120].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(read_image(&path).unwrap().data, ramp((2, 2, 2)));
    // ITK: slope 0 reads as 1 and the intercept still applies
    bytes[112..116].copy_from_slice(&0f32.to_le_bytes());
    bytes[116..120].copy_from_slice(&5f32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(read_image(&path).unwrap().data, ramp((2, 2, 2)).mapv(|v| v + 5.0));
}

fn assert_same_geometry_fields(a: &NiftiHeader, b: &NiftiHeader) {
    let bits = |h: &NiftiHeader| {
        let mut v: Vec<u32> =
            h.pixdim.iter().chain(&h.srow_x).chain(&h.srow_y).chain(&h.srow_z).map(|f| f.to_bits()).collect();
        v.extend([h.quatern_b, h.quatern_c, h.quatern_d, h.quatern_x, h.quatern_y, h.quatern_z].map(f32::to_bits));
        v.extend([h.qform_code as u32, h.sform_code as u32, u32::from(h.xyzt_units)]);
        v
    };
    assert_eq!(bits(a), bits(b));
}

#[test]
fn label_map_written_like_an_image_keeps_its_geometry_bit_for_bit() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    for source in [
        "data/Dataset104_HippocampusAniso/imagesTr/hippocampus_001_0000.nii.gz",
        "data/Dataset006_TotalSegCTmini/imagesTr/ct_001_0000.nii.gz",
        "data/Dataset005_BraTS2013mini/imagesTr/brats_2013_pat0001_1_0000.nii.gz",
    ] {
        let image = read_image(&shared.join(source)).unwrap();
        let out = dir.path().join("pred.nii.gz");
        write_like(&out, image.data.mapv(|v| (v > 0.0) as u8).view(), image.stored.nifti_header.as_ref().unwrap())
            .unwrap();
        let written = read_label_map(&out).unwrap();
        assert_same_geometry_fields(
            written.stored.nifti_header.as_ref().unwrap(),
            image.stored.nifti_header.as_ref().unwrap(),
        );
        assert_eq!(written.geometry, image.geometry);
        assert_eq!(written.stored.nifti_header.as_ref().unwrap().datatype, 2, "uint8 label map");
    }
}

/// SimpleITK's view of every reference case, recorded by nnU-Net as `sitk_stuff` in its properties.
#[test]
fn geometry_equals_simpleitk_for_every_reference_case() {
    let Some(shared) = shared() else { return };
    let mut checked = 0;
    for dataset in ["Dataset104_HippocampusAniso", "Dataset005_BraTS2013mini", "Dataset006_TotalSegCTmini"] {
        let properties_dir = shared.join("reference").join(dataset).join("nnUNetPlans_3d_fullres");
        for entry in std::fs::read_dir(&properties_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let case = path.file_stem().unwrap().to_string_lossy().into_owned();
            let properties: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let image_path = shared.join("data").join(dataset).join(format!("imagesTr/{case}_0000.nii.gz"));
            let image = read_image(&image_path).unwrap();
            let sitk = &properties["sitk_stuff"];
            let numbers = |v: &Value| -> Vec<f64> { serde_json::from_value(v.clone()).unwrap() };
            let close = |ours: &[f64], theirs: &[f64]| {
                ours.iter().zip(theirs).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0))
            };
            let spacing_xyz: Vec<f64> = image.geometry.spacing.iter().rev().copied().collect();
            assert!(
                close(&spacing_xyz, &numbers(&sitk["spacing"])),
                "{case}: spacing {spacing_xyz:?} vs {}",
                sitk["spacing"]
            );
            assert!(
                close(&image.geometry.origin, &numbers(&sitk["origin"])),
                "{case}: origin {:?} vs {}",
                image.geometry.origin,
                sitk["origin"]
            );
            assert!(
                close(&image.geometry.direction, &numbers(&sitk["direction"])),
                "{case}: direction {:?} vs {}",
                image.geometry.direction,
                sitk["direction"]
            );
            assert!(close(&image.geometry.spacing, &numbers(&properties["spacing"])), "{case}: nnU-Net spacing");
            let shape: Vec<usize> = serde_json::from_value(properties["shape_before_cropping"].clone()).unwrap();
            assert_eq!(image.data.shape(), shape.as_slice(), "{case}: array axis order");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} reference cases found");
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn malformed_files_are_bad_input_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.nii");
    write_new(&good, ramp((3, 4, 5)).view(), &geometry()).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let expect = |path: &Path, problem: &str| {
        let err = read_image(path).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.message.starts_with(&path.display().to_string()) && err.message.contains(problem), "{err}");
    };
    expect(&write_bytes(dir.path(), "short.nii", &bytes[..bytes.len() - 7]), "header claims 60 voxels (240 bytes)");
    let mut magic = bytes.clone();
    magic[344..348].copy_from_slice(b"xyz\0");
    expect(&write_bytes(dir.path(), "magic.nii", &magic), "magic");
    // dim 5 x 2 x 3 x 2: two volumes (channels, as SimpleITK reads a 4-D file) where one image is read
    let mut four_d = bytes.clone();
    four_d[40..42].copy_from_slice(&4u16.to_le_bytes());
    four_d[44..46].copy_from_slice(&2u16.to_le_bytes());
    four_d[48..50].copy_from_slice(&2u16.to_le_bytes());
    expect(&write_bytes(dir.path(), "four_d.nii", &four_d), "holds 2 channels where one is expected");
    four_d[48..50].copy_from_slice(&3u16.to_le_bytes());
    expect(&write_bytes(dir.path(), "four_d_short.nii", &four_d), "header claims 90 voxels (360 bytes)");
    // a 2-D image is one slice
    let mut two_d = bytes.clone();
    two_d[40..42].copy_from_slice(&2u16.to_le_bytes());
    let slice = read_image(&write_bytes(dir.path(), "two_d.nii", &two_d)).unwrap();
    assert_eq!((slice.data.shape(), slice.stored.dimension), (&[1, 4, 5][..], 2));
    expect(&write_bytes(dir.path(), "tiny.nii", b"nii"), "truncated NIfTI header");
    let mut nifti2 = bytes.clone();
    nifti2[0..4].copy_from_slice(&540i32.to_le_bytes());
    expect(&write_bytes(dir.path(), "v2.nii", &nifti2), "not a single-file NIfTI-2 image");
    expect(&dir.path().join("absent.nii.gz"), "No such file");
}
