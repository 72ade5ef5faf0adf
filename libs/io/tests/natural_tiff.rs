//! PNG, BMP and TIFF through the public API, against what nnU-Net 2.8.1's `NaturalImage2DIO` and
//! `Tiff3DIO` return for the same files (tests/fixtures/natural_tiff/make_fixtures.py records them).

use ndarray::Array3;
use nntools_io::{
    ErrorKind, Geometry, Image, PixelType, ReaderWriter, Stored, read_image, read_label_map, write_label_map,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/natural_tiff")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The channels stacked as nnU-Net's `read_images` array: shape `[c, z, y, x]` and C-order values.
fn stacked(channels: &[Image<f32>]) -> (Vec<usize>, Vec<f32>) {
    let mut shape = vec![channels.len()];
    shape.extend(channels[0].data.shape());
    (shape, channels.iter().flat_map(|c| c.data.iter().copied()).collect())
}

fn pixel_of(dtype: &str) -> PixelType {
    match dtype {
        "uint8" | "bool" => PixelType::U8,
        "uint16" => PixelType::U16,
        "int16" => PixelType::I16,
        "float32" => PixelType::F32,
        other => panic!("no fixture of {other}"),
    }
}

#[test]
fn readers_return_nnunets_arrays_and_spacing() {
    let expected = expected();
    assert_eq!(expected.len(), 13);
    for (name, case) in &expected {
        let reader = ReaderWriter::from_name(case["reader"].as_str().unwrap()).unwrap();
        let channels = reader.read_images(&[fixtures().join(name)]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (shape, values) = stacked(&channels);
        let want_shape: Vec<usize> = serde_json::from_value(case["shape"].clone()).unwrap();
        let want_values: Vec<f64> = serde_json::from_value(case["values"].clone()).unwrap();
        let want_values: Vec<f32> = want_values.into_iter().map(|v| v as f32).collect();
        assert_eq!(shape, want_shape, "{name}");
        assert_eq!(values, want_values, "{name}");
        let spacing: Vec<f64> = serde_json::from_value(case["spacing"].clone()).unwrap();
        assert_eq!(channels[0].geometry.spacing.to_vec(), spacing, "{name}");
        let dtype = case.get("skimage_dtype").or(case.get("tifffile_dtype")).unwrap().as_str().unwrap();
        assert_eq!(channels[0].stored.pixel, pixel_of(dtype), "{name}");
        assert_eq!(channels[0].stored.dimension, if reader == ReaderWriter::Tiff3d { 3 } else { 2 }, "{name}");
    }
}

#[test]
fn reader_classes_are_chosen_by_a_trial_read() {
    // nnU-Net tries NaturalImage2DIO first for .tif (determine_reader_writer_from_file_ending gives the
    // same classes for these files): a stack of 5 pages of 6 x 7 fails it and goes to Tiff3DIO, but
    // skimage reads stacks whose pages are 3 or 4 pixels wide as RGB(A) images
    for (name, class) in [
        ("stack_zlib_0000.tif", ReaderWriter::Tiff3d),
        ("stack_i16_0000.tif", ReaderWriter::NaturalImage2d),
        ("stack_f32_0000.tif", ReaderWriter::NaturalImage2d),
        ("plane.tif", ReaderWriter::NaturalImage2d),
    ] {
        assert_eq!(ReaderWriter::for_ending(".tif", Some(&fixtures().join(name))).unwrap(), class, "{name}");
    }
    let (stack, plane) = (fixtures().join("stack_i16_0000.tif"), fixtures().join("plane.tif"));
    assert_eq!(ReaderWriter::for_file(&stack).unwrap(), ReaderWriter::Tiff3d);
    assert_eq!(ReaderWriter::for_file(&plane).unwrap(), ReaderWriter::NaturalImage2d);
    // a label map is read through the class of its file
    let labels = read_label_map(&fixtures().join("stack_zlib_0000.tif")).unwrap();
    assert_eq!(labels.data.shape(), [5, 6, 7]);
    assert_eq!(labels.geometry.spacing, [1.0, 1.0, 1.0], "read_seg looks for stack_zlib_0000.json");
}

#[test]
fn images_nnunet_refuses_are_refused() {
    // grey+alpha of two samples: nnU-Net asserts 3 or 4 channels (grey_alpha.png has 3 rows, which
    // skimage turns into an RGB image, so this one is written here)
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("la.png");
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, 4, 5);
        encoder.set_color(png::ColorType::GrayscaleAlpha);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[7; 4 * 5 * 2]).unwrap();
    }
    std::fs::write(&path, &bytes).unwrap();
    let error = ReaderWriter::NaturalImage2d.read_images(&[path]).unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadInput);
    assert!(error.message.contains("[2, 5, 4]"), "{}", error.message);
    // an RGB image is not a label map
    let error = read_label_map(&fixtures().join("rgb.png")).unwrap_err();
    assert!(error.message.contains("holds 3"), "{}", error.message);
}

fn refused(path: &Path) -> String {
    let error = read_image(path).expect_err("must be refused");
    assert_eq!(error.kind, ErrorKind::BadInput, "{}", error.message);
    assert!(!error.message.contains('\n'), "one line: {}", error.message);
    assert!(error.message.contains(&*path.display().to_string()), "{}", error.message);
    error.message
}

#[test]
fn broken_files_are_one_line_of_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    for (name, keep) in [("grey8.png", 50), ("stack_zlib_0000.tif", 600), ("plane.tif", 100), ("grey.bmp", 1000)] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        let cut = dir.path().join(name);
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        refused(&cut);
    }
    // a TIFF page claiming 60000 x 60000 16-bit pixels in 140 bytes
    let huge = dir.path().join("huge.tif");
    std::fs::write(&huge, tiff_header(60000, 60000, 16)).unwrap();
    let message = refused(&huge);
    assert!(message.contains("more than a 140-byte file can hold"), "{message}");
    let error = ReaderWriter::Tiff3d.read_images(&[huge]).unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadInput);
    // 1-bit TIFF pages are not read (tifffile would give bools)
    let bilevel = dir.path().join("bilevel.tif");
    std::fs::write(&bilevel, tiff_header(8, 2, 1)).unwrap();
    assert!(refused(&bilevel).contains("unsupported TIFF samples: 1 bits"));
}

/// A little-endian TIFF of one uncompressed grey page with the given size and bit depth whose only
/// strip is the 2 bytes after the header.
fn tiff_header(width: u32, height: u32, bits: u16) -> Vec<u8> {
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, u32::from(bits)),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 122),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, 2),
    ];
    let mut out = b"II*\0\x08\0\0\0".to_vec();
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(out.len(), 122);
    out.extend_from_slice(&[0; 18]);
    out
}

#[test]
fn label_maps_round_trip_through_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Geometry::of_plane([1.0, 1.0], [0.0, 0.0], [1.0, 0.0, 0.0, 1.0]);
    let stack = Geometry { spacing: [2.5, 0.75, 0.5], ..plane };
    for (name, shape, geometry, dimension, top) in [
        ("a.png", [1, 5, 7], plane, 2, 9),
        ("b.png", [1, 5, 7], plane, 2, 300),
        ("c.bmp", [1, 5, 7], plane, 2, 254),
        ("d.tif", [1, 5, 7], plane, 2, 300),
        ("e.tif", [4, 5, 7], stack, 3, 2),
        ("f.tiff", [3, 5, 6], stack, 3, 700),
        ("g.tif", [1, 5, 7], stack, 3, 3),
    ] {
        let count = shape.iter().product::<usize>() - 1;
        let labels =
            Array3::from_shape_fn(shape, |(z, y, x)| (((z * shape[1] + y) * shape[2] + x) * top / count) as u16);
        let path = dir.path().join(name);
        let stored = Stored::new(dimension, PixelType::U8);
        write_label_map(&path, labels.view(), &geometry, &stored).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = read_label_map(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back.data, labels.mapv(i32::from), "{name}");
        assert_eq!(back.stored.dimension, dimension, "{name}");
        assert_eq!(back.stored.pixel, if top >= 255 { PixelType::U16 } else { PixelType::U8 }, "{name}");
        if dimension == 3 {
            assert_eq!(back.geometry.spacing, [2.5, 0.75, 0.5], "{name}: sidecar");
            let stem = name.split('.').next().unwrap();
            assert!(dir.path().join(format!("{stem}.json")).is_file());
        } else {
            assert_eq!(back.geometry.spacing, [999.0, 1.0, 1.0], "{name}");
        }
    }
    // BMP has no 16-bit grey
    let labels = Array3::from_elem([1, 2, 2], 300u16);
    let error = write_label_map(&dir.path().join("x.bmp"), labels.view(), &plane, &Stored::new(2, PixelType::U8));
    assert_eq!(error.unwrap_err().kind, ErrorKind::BadInput);
    assert!(!dir.path().join("x.bmp").exists());
}
