//! MetaImage (`.mha`, `.mhd` + raw), read and written as ITK's MetaImageIO does (ITK 5.4's MetaIO).
//!
//! No maintained Rust crate reads MetaImage; its header is `Key = Value` text ending with the
//! `ElementDataFile` line, so a small parser here is simpler than a dependency.

use crate::raster::{
    MAX_HEADER_BYTES, PixelType, RasterImage, check_geometry, claimed_values, data_bytes, encode_voxels, exact_prefix,
    identity, inflate, join, scalar_file_sizes, to_array, write_header_and_data,
};
use crate::{Claim, Error, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// MetaIO's element types (metaTypes.h: `MET_ValueTypeSize`; MET_LONG and MET_ULONG are 4 bytes).
fn pixel_type(name: &str) -> Option<PixelType> {
    Some(match name {
        "MET_UCHAR" => PixelType::U8,
        "MET_CHAR" => PixelType::I8,
        "MET_USHORT" => PixelType::U16,
        "MET_SHORT" => PixelType::I16,
        "MET_UINT" | "MET_ULONG" => PixelType::U32,
        "MET_INT" | "MET_LONG" => PixelType::I32,
        "MET_ULONG_LONG" => PixelType::U64,
        "MET_LONG_LONG" => PixelType::I64,
        "MET_FLOAT" => PixelType::F32,
        "MET_DOUBLE" => PixelType::F64,
        _ => return None,
    })
}

fn type_name(pixel: PixelType) -> &'static str {
    match pixel {
        PixelType::U8 => "MET_UCHAR",
        PixelType::I8 => "MET_CHAR",
        PixelType::U16 => "MET_USHORT",
        PixelType::I16 => "MET_SHORT",
        PixelType::U32 => "MET_UINT",
        PixelType::I32 => "MET_INT",
        PixelType::U64 => "MET_ULONG_LONG",
        PixelType::I64 => "MET_LONG_LONG",
        PixelType::F32 => "MET_FLOAT",
        PixelType::F64 => "MET_DOUBLE",
    }
}

/// The header's fields, and where the data starts in the header file.
struct Header {
    fields: HashMap<String, String>,
    data_offset: usize,
}

/// Reads `Key = Value` lines up to and including `ElementDataFile`, which MetaIO requires to be last.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let mut fields = HashMap::new();
    let mut offset = 0;
    while offset < bytes.len().min(MAX_HEADER_BYTES) {
        let end = bytes[offset..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| offset + i + 1);
        let line = String::from_utf8_lossy(&bytes[offset..end]);
        let line = line.trim();
        offset = end;
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Error::bad_input(path, format!("not a MetaImage header line: {:.60}", line)));
        };
        let key = key.trim().to_string();
        let done = key == "ElementDataFile";
        fields.insert(key, value.trim().to_string());
        if done {
            return Ok(Header { fields, data_offset: offset });
        }
    }
    Err(Error::bad_input(
        path,
        format!("no ElementDataFile line in the first {} bytes: not a MetaImage header", MAX_HEADER_BYTES),
    ))
}

impl Header {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// The first of `keys` present (MetaIO's synonyms), parsed as `count` numbers.
    fn numbers(&self, path: &Path, keys: &[&str], count: usize) -> Result<Option<Vec<f64>>> {
        let Some((key, value)) = keys.iter().find_map(|k| self.get(k).map(|v| (k, v))) else { return Ok(None) };
        let values: Vec<f64> = value
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| Error::bad_input(path, format!("{key} is not a list of numbers: {value:.60}")))?;
        if values.len() != count {
            return Err(Error::bad_input(path, format!("{key} has {} values, NDims needs {count}", values.len())));
        }
        Ok(Some(values))
    }

    /// MetaIO reads a boolean as true when it starts with T, t or 1.
    fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.starts_with(['T', 't', '1']))
    }

    fn integer(&self, path: &Path, key: &str) -> Result<Option<i64>> {
        self.get(key)
            .map(|v| v.parse().map_err(|_| Error::bad_input(path, format!("{key} is not an integer: {v:.60}"))))
            .transpose()
    }
}

/// What a header says of the data's size: `NDims`, the element type and the sizes of the data as stored
/// (`ElementNumberOfChannels` first when there are several).
struct Shape {
    ndims: usize,
    pixel: PixelType,
    channels: usize,
    file_sizes: Vec<usize>,
}

fn shape(path: &Path, header: &Header) -> Result<Shape> {
    let ndims = match header.integer(path, "NDims")? {
        Some(n @ 2..=4) => n as usize,
        Some(n) => return Err(Error::bad_input(path, format!("NDims {n} is not supported (2 to 4)"))),
        None => return Err(Error::bad_input(path, "no NDims in the MetaImage header")),
    };
    let sizes: Vec<usize> = match header.numbers(path, &["DimSize"], ndims)? {
        Some(sizes) if sizes.iter().all(|s| s.fract() == 0.0 && *s >= 1.0 && *s < 1e15) => {
            sizes.iter().map(|&s| s as usize).collect()
        }
        Some(sizes) => return Err(Error::bad_input(path, format!("DimSize {sizes:?} is not positive integers"))),
        None => return Err(Error::bad_input(path, "no DimSize in the MetaImage header")),
    };
    let element_type = header.get("ElementType").unwrap_or("");
    let pixel = pixel_type(element_type)
        .ok_or_else(|| Error::bad_input(path, format!("unsupported ElementType {element_type:.40}")))?;
    let channels = match header.integer(path, "ElementNumberOfChannels")?.unwrap_or(1) {
        1 => 1,
        c if c > 1 && ndims < 4 => c as usize,
        c => return Err(Error::bad_input(path, format!("ElementNumberOfChannels {c} is not supported here"))),
    };
    let file_sizes = if channels > 1 { std::iter::once(channels).chain(sizes).collect() } else { sizes };
    Ok(Shape { ndims, pixel, channels, file_sizes })
}

/// What a `.mha` or `.mhd` file's header claims, from the file's first bytes: the file its
/// `ElementDataFile` names when that is not `LOCAL`, else the values [`read_metaimage`] sizes the data by.
pub(crate) fn claim(path: &Path, leading_bytes: &[u8]) -> Result<Claim> {
    let header = parse_header(path, leading_bytes)?;
    match header.get("ElementDataFile").unwrap_or_default() {
        "LOCAL" => {
            let Shape { pixel, file_sizes, .. } = shape(path, &header)?;
            claimed_values(path, &file_sizes, pixel).map(Claim::Voxels)
        }
        data_file => Ok(Claim::DetachedData(data_file.to_owned())),
    }
}

/// Reads a `.mha` or `.mhd` file (its data `LOCAL` or in one detached file relative to the header).
pub fn read_metaimage(path: &Path) -> Result<RasterImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let header = parse_header(path, &bytes)?;
    let Shape { ndims, pixel, channels, file_sizes } = shape(path, &header)?;
    if header.get("BinaryData").is_some_and(|_| !header.flag("BinaryData")) {
        return Err(Error::bad_input(path, "ASCII MetaImage data (BinaryData = False) is not supported"));
    }
    let spacing = match header.numbers(path, &["ElementSpacing"], ndims)? {
        Some(s) => s,
        None => header.numbers(path, &["ElementSize"], ndims)?.unwrap_or_else(|| vec![1.0; ndims]),
    };
    let origin = header.numbers(path, &["Offset", "Origin", "Position"], ndims)?.unwrap_or_else(|| vec![0.0; ndims]);
    // MetaIO stores the direction column by column (MetaImageIO::ReadImageInformation: SetDirection(i,
    // values i*n .. i*n+n)); SimpleITK reports it row-major.
    let direction = match header.numbers(path, &["TransformMatrix", "Rotation", "Orientation"], ndims * ndims)? {
        Some(m) => (0..ndims * ndims).map(|i| m[(i % ndims) * ndims + i / ndims]).collect(),
        None => identity(ndims),
    };
    check_geometry(path, &spacing, &origin, &direction)?;
    let big_endian = header.flag("BinaryDataByteOrderMSB") || header.flag("ElementByteOrderMSB");

    let channel_file_axis = (channels > 1).then_some(0);
    let expected = data_bytes(path, &file_sizes, pixel)?;
    let data_file = header.get("ElementDataFile").unwrap_or_default();
    let detached;
    let stored: &[u8] = if data_file == "LOCAL" {
        &bytes[header.data_offset..]
    } else if data_file.starts_with("LIST") || data_file.contains('%') || data_file.contains(' ') {
        return Err(Error::bad_input(path, format!("ElementDataFile {data_file:.60} (file lists) is not supported")));
    } else {
        let raw = path.parent().unwrap_or(Path::new("")).join(data_file);
        detached = crate::raster::read_data_file(&raw)
            .map_err(|e| Error::bad_input(path, format!("cannot read its ElementDataFile {}: {e}", raw.display())))?;
        &detached
    };
    let stored = match header.integer(path, "HeaderSize")? {
        None | Some(0) => stored,
        Some(-1) if !header.flag("CompressedData") => &stored[stored.len().saturating_sub(expected)..],
        Some(skip) => stored
            .get(usize::try_from(skip).unwrap_or(usize::MAX)..)
            .ok_or_else(|| Error::bad_input(path, format!("HeaderSize {skip} is not within the data file")))?,
    };
    let data = if header.flag("CompressedData") {
        let compressed = match header.integer(path, "CompressedDataSize")? {
            Some(n) => exact_prefix(path, stored, usize::try_from(n).unwrap_or(usize::MAX))?,
            None => stored,
        };
        to_array(&inflate(path, compressed, 0, expected)?, pixel, big_endian, &file_sizes, channel_file_axis)
    } else {
        to_array(exact_prefix(path, stored, expected)?, pixel, big_endian, &file_sizes, channel_file_axis)
    };
    Ok(RasterImage { data, pixel, channel_axis: channels > 1 || ndims == 4, spacing, origin, direction })
}

/// Writes a single-channel 2-D or 3-D image as a one-file `.mha` with the header SimpleITK writes
/// (`sitk.WriteImage(image, path, useCompression)`, as nnU-Net's `SimpleITKIO.write_seg` does).
pub fn write_metaimage(path: &Path, image: &RasterImage, pixel: PixelType, compress: bool) -> Result<()> {
    let sizes = scalar_file_sizes(path, image)?;
    let n = sizes.len();
    let raw = encode_voxels(path, image, pixel)?;
    let data = if compress {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&raw).and_then(|()| encoder.finish()).map_err(|e| Error::runtime(path, e))?
    } else {
        raw
    };
    let column_major: Vec<f64> = (0..n * n).map(|i| image.direction[(i % n) * n + i / n]).collect();
    let sizes: Vec<f64> = sizes.iter().map(|&s| s as f64).collect();
    let mut text = format!(
        "ObjectType = Image\nNDims = {n}\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = {}\n",
        if compress { "True" } else { "False" }
    );
    if compress {
        text += &format!("CompressedDataSize = {}\n", data.len());
    }
    text += &format!(
        "TransformMatrix = {}\nOffset = {}\nCenterOfRotation = {}\nElementSpacing = {}\nDimSize = {}\n\
         ElementType = {}\nElementDataFile = LOCAL\n",
        join(&column_major, " "),
        join(&image.origin, " "),
        join(&vec![0.0; n], " "),
        join(&image.spacing, " "),
        join(&sizes, " "),
        type_name(pixel),
    );
    write_header_and_data(path, text, &data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    const HEADER_3D: &str = "ObjectType = Image\nNDims = 3\nDimSize = 2 2 1\n";

    fn rotated(data: ArrayD<f32>) -> RasterImage {
        let (c, s) = (0.6, 0.8);
        RasterImage {
            spacing: vec![0.5, 1.25, 3.0],
            origin: vec![-4.5, 2.0, 100.125],
            direction: vec![c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0],
            ..RasterImage::new(data)
        }
    }

    fn labels() -> ArrayD<f32> {
        ArrayD::from_shape_fn(IxDyn(&[3, 4, 5]), |i| ((i[0] * 7 + i[1] * 3 + i[2]) % 5) as f32)
    }

    /// A file holding `header` followed by `data`, read back.
    fn read(header: &str, data: &[u8]) -> Result<RasterImage> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.mha");
        std::fs::write(&path, [header.as_bytes(), data].concat()).unwrap();
        read_metaimage(&path)
    }

    fn problem(header: &str, data: &[u8]) -> String {
        crate::raster::refusal(read(header, data))
    }

    #[test]
    fn write_then_read_keeps_voxels_and_geometry() {
        let dir = tempfile::tempdir().unwrap();
        for (pixel, compress) in [(PixelType::U8, true), (PixelType::U16, true), (PixelType::F32, false)] {
            let image = rotated(labels());
            let path = dir.path().join(format!("{pixel:?}{compress}.mha"));
            write_metaimage(&path, &image, pixel, compress).unwrap();
            assert_eq!(read_metaimage(&path).unwrap(), RasterImage { pixel, ..image.clone() }, "{pixel:?}");
            let text = std::fs::read(&path).unwrap();
            let header = String::from_utf8_lossy(&text[..200]);
            assert!(header.contains(&format!("CompressedData = {}", if compress { "True" } else { "False" })));
            assert!(header.contains("TransformMatrix = 0.6 0.8 0 -0.8 0.6 0 0 0 -1\n"), "{header}");
        }
        let flat = RasterImage::new(ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| (i[0] + 2 * i[1]) as f32));
        let path = dir.path().join("flat.mha");
        write_metaimage(&path, &flat, PixelType::I16, true).unwrap();
        assert_eq!(read_metaimage(&path).unwrap(), RasterImage { pixel: PixelType::I16, ..flat });
    }

    #[test]
    fn writer_refuses_values_the_type_cannot_hold() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = RasterImage::new(labels());
        image.data[[0, 0, 0]] = 256.0;
        let error = write_metaimage(&dir.path().join("a.mha"), &image, PixelType::U8, true).unwrap_err();
        assert!(error.message.ends_with("value 256 cannot be stored as U8"), "{}", error.message);
        assert!(!dir.path().join("a.mha").exists());
    }

    #[test]
    fn every_element_type_and_byte_order() {
        let cases: [(&str, Vec<u8>, [f32; 4]); 10] = [
            ("MET_UCHAR", vec![0, 1, 254, 255], [0.0, 1.0, 254.0, 255.0]),
            ("MET_CHAR", vec![0, 1, 0x80, 0xff], [0.0, 1.0, -128.0, -1.0]),
            (
                "MET_USHORT",
                [1u16, 2, 3, 65535].iter().flat_map(|v| v.to_le_bytes()).collect(),
                [1.0, 2.0, 3.0, 65535.0],
            ),
            ("MET_SHORT", [1i16, -2, 3, -4].iter().flat_map(|v| v.to_le_bytes()).collect(), [1.0, -2.0, 3.0, -4.0]),
            ("MET_UINT", [1u32, 2, 3, 4].iter().flat_map(|v| v.to_le_bytes()).collect(), [1.0, 2.0, 3.0, 4.0]),
            ("MET_LONG", [1i32, -2, 3, -4].iter().flat_map(|v| v.to_le_bytes()).collect(), [1.0, -2.0, 3.0, -4.0]),
            ("MET_ULONG_LONG", [1u64, 2, 3, 4].iter().flat_map(|v| v.to_le_bytes()).collect(), [1.0, 2.0, 3.0, 4.0]),
            ("MET_LONG_LONG", [1i64, -2, 3, -4].iter().flat_map(|v| v.to_le_bytes()).collect(), [1.0, -2.0, 3.0, -4.0]),
            (
                "MET_FLOAT",
                [0.5f32, -2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
                [0.5, -2.0, 3.0, 4.0],
            ),
            (
                "MET_DOUBLE",
                [0.5f64, -2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
                [0.5, -2.0, 3.0, 4.0],
            ),
        ];
        for (name, bytes, values) in cases {
            let header = format!("{HEADER_3D}ElementType = {name}\nElementDataFile = LOCAL\n");
            let image = read(&header, &bytes).unwrap();
            assert_eq!(image.data.shape(), [1, 2, 2], "{name}");
            assert_eq!(image.data.iter().copied().collect::<Vec<_>>(), values, "{name}");
            assert_eq!((image.spacing, image.origin), (vec![1.0; 3], vec![0.0; 3]), "{name}");
        }
        let big: Vec<u8> = [1i16, -2, 3, -4].iter().flat_map(|v| v.to_be_bytes()).collect();
        for key in ["BinaryDataByteOrderMSB", "ElementByteOrderMSB"] {
            let header = format!("{HEADER_3D}{key} = True\nElementType = MET_SHORT\nElementDataFile = LOCAL\n");
            assert_eq!(read(&header, &big).unwrap().data.iter().copied().collect::<Vec<_>>(), [1.0, -2.0, 3.0, -4.0]);
        }
    }

    #[test]
    fn synonyms_channels_header_size_and_detached_data() {
        let header = "NDims = 2\nDimSize = 2 1\nElementNumberOfChannels = 3\nPosition = 1 2\nElementSize = 2 3\n\
                      ElementType = MET_UCHAR\nElementDataFile = LOCAL\n";
        let image = read(header, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert!(image.channel_axis);
        assert_eq!(image.data.shape(), [3, 1, 2]);
        assert_eq!(image.data.iter().copied().collect::<Vec<_>>(), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!((image.spacing, image.origin), (vec![2.0, 3.0], vec![1.0, 2.0]));
        assert_eq!(image.direction, [1.0, 0.0, 0.0, 1.0]);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("case.raw"), [9, 9, 9, 1, 2, 3, 4]).unwrap();
        let path = dir.path().join("case.mhd");
        let detached = |skip: &str| {
            format!("{HEADER_3D}HeaderSize = {skip}\nElementType = MET_UCHAR\nElementDataFile = case.raw\n")
        };
        for skip in ["3", "-1"] {
            std::fs::write(&path, detached(skip)).unwrap();
            assert_eq!(read_metaimage(&path).unwrap().data.iter().copied().collect::<Vec<_>>(), [1.0, 2.0, 3.0, 4.0]);
        }
    }

    #[test]
    fn hostile_headers_are_refused_in_one_line() {
        let u8_header = |extra: &str| format!("{HEADER_3D}{extra}ElementType = MET_UCHAR\nElementDataFile = LOCAL\n");
        assert!(
            problem(&u8_header(""), &[1, 2, 3])
                .ends_with("truncated data: the header promises 4 bytes, the file holds 3")
        );
        let huge = "NDims = 3\nDimSize = 100000 100000 100000\nElementType = MET_DOUBLE\nElementDataFile = LOCAL\n";
        assert!(problem(huge, &[0; 16]).contains("the header promises 8000000000000000 bytes, the file holds 16"));
        let overflow = "NDims = 4\nDimSize = 100000000 100000000 100000000 100000000\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n";
        assert!(problem(overflow, &[]).contains("overflow"));
        let compressed = flate2::read::ZlibEncoder::new(&[1u8, 2][..], flate2::Compression::default());
        let compressed: Vec<u8> = std::io::Read::bytes(compressed).map(|b| b.unwrap()).collect();
        let message = problem(&u8_header("CompressedData = True\n"), &compressed);
        assert!(message.ends_with("the header promises 4 bytes, the compressed stream holds 2"), "{message}");
        let claim = u8_header(&format!("CompressedData = True\nCompressedDataSize = {}\n", compressed.len() + 1));
        assert!(problem(&claim, &compressed).contains("truncated data"));
        assert!(problem(&u8_header("CompressedData = True\n"), b"not zlib").contains("corrupt compressed data"));
        assert!(
            problem(&u8_header("ElementSpacing = 1 0 1\n"), &[0; 4]).ends_with("spacing 0 is not positive and finite")
        );
        assert!(problem(&u8_header("ElementSpacing = 1 nan 1\n"), &[0; 4]).contains("spacing NaN is not positive"));
        assert!(problem(&u8_header("Offset = 1 2\n"), &[0; 4]).ends_with("Offset has 2 values, NDims needs 3"));
        let double = format!("{HEADER_3D}ElementType = MET_FLOAT16\nElementDataFile = LOCAL\n");
        assert!(problem(&double, &[0; 8]).ends_with("unsupported ElementType MET_FLOAT16"));
        let five = "NDims = 5\nDimSize = 1 1 1 1 1\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n";
        assert!(problem(five, &[0]).ends_with("NDims 5 is not supported (2 to 4)"));
        let missing = format!("{HEADER_3D}ElementType = MET_UCHAR\nElementDataFile = absent.raw\n");
        assert!(problem(&missing, &[]).contains("cannot read its ElementDataFile"));
        let list = format!("{HEADER_3D}ElementType = MET_UCHAR\nElementDataFile = LIST\n");
        assert!(problem(&list, &[]).contains("(file lists) is not supported"));
        assert!(problem("\u{89}PNG\r\n\x1a\n", &[0; 64]).contains("not a MetaImage header line"));
        let endless = "Comment = x\n".repeat(MAX_HEADER_BYTES / 12 + 1);
        assert!(problem(&endless, &[]).contains("no ElementDataFile line in the first 1048576 bytes"));
    }
}
