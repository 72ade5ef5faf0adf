//! MetaImage (`.mha`, `.mhd` + raw), read and written as ITK's MetaImageIO does (ITK 5.4's MetaIO).
//!
//! No maintained Rust crate reads MetaImage; its header is `Key = Value` text ending with the
//! `ElementDataFile` line, so a small parser here is simpler than a dependency.

use crate::output::write_atomically;
use crate::raster::{
    MAX_HEADER_BYTES, PixelType, RasterImage, check_geometry, data_bytes, encode_voxels, exact_prefix, inflate, join,
    scalar_voxels, to_array,
};
use crate::{Error, Result};
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

/// Reads a `.mha` or `.mhd` file (its data `LOCAL` or in one detached file relative to the header).
pub fn read_metaimage(path: &Path) -> Result<RasterImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let header = parse_header(path, &bytes)?;
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
        None => RasterImage::new(ndarray::ArrayD::zeros(vec![1; ndims])).direction,
    };
    check_geometry(path, &spacing, &origin, &direction)?;
    let big_endian = header.flag("BinaryDataByteOrderMSB") || header.flag("ElementByteOrderMSB");

    let (file_sizes, channel_file_axis) = if channels > 1 {
        (std::iter::once(channels).chain(sizes.iter().copied()).collect(), Some(0))
    } else {
        (sizes, None)
    };
    let expected = data_bytes(path, &file_sizes, pixel)?;
    let data_file = header.get("ElementDataFile").unwrap_or_default();
    let detached;
    let stored: &[u8] = if data_file == "LOCAL" {
        &bytes[header.data_offset..]
    } else if data_file.starts_with("LIST") || data_file.contains('%') || data_file.contains(' ') {
        return Err(Error::bad_input(path, format!("ElementDataFile {data_file:.60} (file lists) is not supported")));
    } else {
        let raw = path.parent().unwrap_or(Path::new("")).join(data_file);
        detached = std::fs::read(&raw)
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
        to_array(&inflate(path, compressed, expected)?, pixel, big_endian, &file_sizes, channel_file_axis)
    } else {
        to_array(exact_prefix(path, stored, expected)?, pixel, big_endian, &file_sizes, channel_file_axis)
    };
    Ok(RasterImage { data, channel_axis: channels > 1 || ndims == 4, spacing, origin, direction })
}

/// Writes a single-channel 2-D or 3-D image as a one-file `.mha` with the header SimpleITK writes
/// (`sitk.WriteImage(image, path, useCompression)`, as nnU-Net's `SimpleITKIO.write_seg` does).
pub fn write_metaimage(path: &Path, image: &RasterImage, pixel: PixelType, compress: bool) -> Result<()> {
    let sizes = scalar_voxels(path, image)?;
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
    write_atomically(path, |tmp| {
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&data);
        std::fs::write(tmp, bytes).map_err(|e| Error::io(path, &e))
    })
}
