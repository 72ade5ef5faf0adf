//! GIPL (`.gipl`, `.gipl.gz`), which nnU-Net's `SimpleITKIO` claims, read and written as ITK's
//! GiplImageIO does (ITK 5.4, `Modules/IO/GIPL/src/itkGiplImageIO.cxx`).
//!
//! A GIPL file is a 256-byte big-endian header (sizes, image type, voxel sizes, origin, a magic number
//! at byte 252) followed by the big-endian voxels, the whole file gzip-compressed for `.gipl.gz`. No
//! maintained Rust crate reads it, and the header is a handful of fixed fields.
//!
//! GIPL has no direction: ITK reads the identity and drops an image's direction when writing. ITK also
//! counts every non-zero size of the first three, so a 2-D image it wrote (sizes x y 1 1) reads back as
//! a 3-D image of one slice.

use crate::raster::{
    PixelType, RasterImage, check_geometry, claimed_values, data_bytes, encode_voxels, exact_prefix, identity, inflate,
    scalar_file_sizes, to_array,
};
use crate::{Error, Result};
use std::io::{Read, Write};
use std::path::Path;

const HEADER_BYTES: usize = 256;
/// GIPL_MAGIC_NUMBER and GIPL_MAGIC_NUMBER2; ITK reads a file carrying either.
const MAGIC: [u32; 2] = [0xefff_e9b0, 0x2ae3_89b8];
/// Byte offsets of the header fields.
const SIZES_AT: usize = 0;
const TYPE_AT: usize = 8;
const SPACING_AT: usize = 10;
const TEXT_AT: usize = 26;
const ORIGIN_AT: usize = 204;
const MAGIC_AT: usize = 252;

/// The image type codes ITK reads, and the voxel type each stands for (GIPL_BINARY is read as bytes).
fn pixel_type(code: u16) -> Option<PixelType> {
    Some(match code {
        1 | 8 => PixelType::U8,
        7 => PixelType::I8,
        15 => PixelType::I16,
        16 => PixelType::U16,
        31 => PixelType::U32,
        32 => PixelType::I32,
        64 => PixelType::F32,
        65 => PixelType::F64,
        _ => return None,
    })
}

fn type_code(pixel: PixelType) -> Option<u16> {
    Some(match pixel {
        PixelType::U8 => 8,
        PixelType::I8 => 7,
        PixelType::I16 => 15,
        PixelType::U16 => 16,
        PixelType::U32 => 31,
        PixelType::I32 => 32,
        PixelType::F32 => 64,
        PixelType::F64 => 65,
        PixelType::U64 | PixelType::I64 => return None,
    })
}

fn be_u16(header: &[u8; HEADER_BYTES], at: usize) -> u16 {
    u16::from_be_bytes([header[at], header[at + 1]])
}

fn be_f32(header: &[u8; HEADER_BYTES], at: usize) -> f32 {
    f32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"))
}

fn be_f64(header: &[u8; HEADER_BYTES], at: usize) -> f64 {
    f64::from_be_bytes(header[at..at + 8].try_into().expect("8 bytes"))
}

/// A GIPL header (inflated from a gzip stream), with the image's rank, sizes and voxel type.
struct Header {
    bytes: [u8; HEADER_BYTES],
    rank: usize,
    sizes: Vec<usize>,
    pixel: PixelType,
}

/// The header of a GIPL file from its bytes `raw` (the file or its first bytes; gzip or not): only the
/// header is inflated.
fn parse_header(path: &Path, raw: &[u8]) -> Result<Header> {
    let stream: Box<dyn Read> =
        if crate::inflate::is_gzip(raw) { Box::new(flate2::read::MultiGzDecoder::new(raw)) } else { Box::new(raw) };
    let corrupt = |e: std::io::Error| Error::bad_input(path, format!("corrupt compressed data: {e}"));
    let mut header_bytes = Vec::with_capacity(HEADER_BYTES);
    stream.take(HEADER_BYTES as u64).read_to_end(&mut header_bytes).map_err(corrupt)?;
    let header: [u8; HEADER_BYTES] = header_bytes.as_slice().try_into().map_err(|_| {
        Error::bad_input(path, format!("truncated GIPL header ({} of {HEADER_BYTES} bytes)", header_bytes.len()))
    })?;
    let magic = u32::from_be_bytes(header[MAGIC_AT..].try_into().expect("4 bytes"));
    if !MAGIC.contains(&magic) {
        return Err(Error::bad_input(path, format!("not a GIPL file (magic number {magic:#010x})")));
    }
    let dims = [0, 1, 2, 3].map(|i| be_u16(&header, SIZES_AT + 2 * i));
    // GiplImageIO::ReadImageInformation: each of the first three sizes counts when non-zero, the 4th when > 1
    let rank = dims[..3].iter().filter(|&&d| d > 0).count() + usize::from(dims[3] > 1);
    if rank < 2 {
        return Err(Error::bad_input(path, format!("{rank}-D image (sizes {dims:?}) where 2-D to 4-D is expected")));
    }
    let sizes: Vec<usize> = dims[..rank].iter().map(|&d| usize::from(d)).collect();
    let code = be_u16(&header, TYPE_AT);
    let pixel =
        pixel_type(code).ok_or_else(|| Error::bad_input(path, format!("unsupported GIPL image type code {code}")))?;
    Ok(Header { bytes: header, rank, sizes, pixel })
}

/// The voxels a GIPL file's header claims, from the file's first bytes.
pub(crate) fn claimed_voxels(path: &Path, leading_bytes: &[u8]) -> Result<u64> {
    let Header { sizes, pixel, .. } = parse_header(path, leading_bytes)?;
    claimed_values(path, &sizes, pixel)
}

/// Reads a `.gipl` file, gzip-compressed or not (told apart by gzip's magic bytes), as SimpleITK reads
/// it: 2-D to 4-D (a 4-D image's 4th axis as channels, as for MetaImage), identity direction.
pub fn read_gipl(path: &Path) -> Result<RasterImage> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let compressed = crate::inflate::is_gzip(&raw);
    let Header { bytes: header, rank, sizes, pixel } = parse_header(path, &raw)?;
    let spacing: Vec<f64> = (0..rank).map(|i| f64::from(be_f32(&header, SPACING_AT + 4 * i))).collect();
    let origin: Vec<f64> = (0..rank).map(|i| be_f64(&header, ORIGIN_AT + 8 * i)).collect();
    let direction = identity(rank);
    check_geometry(path, &spacing, &origin, &direction)?;
    let expected = data_bytes(path, &sizes, pixel)?;
    let data = if compressed {
        to_array(&inflate(path, &raw, HEADER_BYTES, expected)?, pixel, true, &sizes, None)
    } else {
        to_array(exact_prefix(path, &raw[HEADER_BYTES..], expected)?, pixel, true, &sizes, None)
    };
    Ok(RasterImage { data, pixel, channel_axis: rank == 4, spacing, origin, direction })
}

/// Writes a single-channel 2-D or 3-D image as GiplImageIO::Write does: big-endian, sizes padded with 1,
/// the direction dropped (GIPL has none), gzip-compressed when the name ends in `.gz` (SimpleITK's
/// `useCompression`, which nnU-Net's `SimpleITKIO.write_seg` sets, does not change a `.gipl`).
pub fn write_gipl(path: &Path, image: &RasterImage, pixel: PixelType) -> Result<()> {
    let sizes = scalar_file_sizes(path, image)?;
    let code = type_code(pixel)
        .ok_or_else(|| Error::runtime(path, format!("GIPL cannot store {pixel:?} voxels (no 64-bit integers)")))?;
    let mut header = [0u8; HEADER_BYTES];
    for i in 0..4 {
        let size = match sizes.get(i) {
            Some(&s) => u16::try_from(s)
                .map_err(|_| Error::runtime(path, format!("size {s} is beyond GIPL's limit of {}", u16::MAX)))?,
            None => 1,
        };
        header[SIZES_AT + 2 * i..][..2].copy_from_slice(&size.to_be_bytes());
        let spacing = image.spacing.get(i).map_or(1.0, |&s| s as f32);
        header[SPACING_AT + 4 * i..][..4].copy_from_slice(&spacing.to_be_bytes());
        let origin = image.origin.get(i).copied().unwrap_or(0.0);
        header[ORIGIN_AT + 8 * i..][..8].copy_from_slice(&origin.to_be_bytes());
    }
    header[TYPE_AT..][..2].copy_from_slice(&code.to_be_bytes());
    let text = b"No Patient Information";
    header[TEXT_AT..][..text.len()].copy_from_slice(text);
    header[MAGIC_AT..].copy_from_slice(&MAGIC[0].to_be_bytes());
    let mut bytes = header.to_vec();
    let mut voxels = encode_voxels(path, image, pixel)?;
    voxels.chunks_exact_mut(pixel.size()).for_each(<[u8]>::reverse);
    bytes.append(&mut voxels);
    if path.to_string_lossy().to_lowercase().ends_with(".gz") {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        bytes = encoder.write_all(&bytes).and_then(|()| encoder.finish()).map_err(|e| Error::runtime(path, e))?;
    }
    crate::output::write_parts(path, &[&bytes])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raster::refusal;
    use ndarray::{ArrayD, IxDyn};

    fn image() -> RasterImage {
        RasterImage {
            spacing: vec![0.5, 1.25, 3.0],
            origin: vec![-4.5, 2.0, 100.125],
            ..RasterImage::new(ArrayD::from_shape_fn(IxDyn(&[3, 4, 5]), |i| (i[0] * 20 + i[1] * 5 + i[2]) as f32 - 7.0))
        }
    }

    /// A header of `sizes` and type `code`, unit spacing, zero origin, followed by `data`.
    fn file(sizes: [u16; 4], code: u16, data: &[u8]) -> Vec<u8> {
        let mut header = [0u8; HEADER_BYTES];
        for (i, s) in sizes.iter().enumerate() {
            header[2 * i..][..2].copy_from_slice(&s.to_be_bytes());
            header[SPACING_AT + 4 * i..][..4].copy_from_slice(&1f32.to_be_bytes());
        }
        header[TYPE_AT..][..2].copy_from_slice(&code.to_be_bytes());
        header[MAGIC_AT..].copy_from_slice(&MAGIC[1].to_be_bytes());
        [&header[..], data].concat()
    }

    fn read(name: &str, bytes: &[u8]) -> Result<RasterImage> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        read_gipl(&path)
    }

    #[test]
    fn write_then_read_keeps_voxels_spacing_and_origin() {
        let dir = tempfile::tempdir().unwrap();
        for (name, pixel) in [("a.gipl", PixelType::I16), ("b.gipl.gz", PixelType::F64), ("c.gipl", PixelType::I8)] {
            let path = dir.path().join(name);
            write_gipl(&path, &image(), pixel).unwrap();
            assert_eq!(read_gipl(&path).unwrap(), RasterImage { pixel, ..image() }, "{name}");
            assert_eq!(std::fs::read(&path).unwrap().starts_with(&[0x1f, 0x8b]), name.ends_with(".gz"));
        }
        // a 2-D image comes back as one slice, as ITK reads it; a direction is dropped
        let flat = RasterImage {
            direction: vec![0.0, 1.0, 1.0, 0.0],
            ..RasterImage::new(ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| (i[0] * 3 + i[1]) as f32))
        };
        let path = dir.path().join("flat.gipl");
        write_gipl(&path, &flat, PixelType::U8).unwrap();
        let back = read_gipl(&path).unwrap();
        assert_eq!(back.data.shape(), [1, 2, 3]);
        assert_eq!((back.spacing, back.origin, back.direction), (vec![1.0; 3], vec![0.0; 3], identity(3)));
        let error = write_gipl(&dir.path().join("d.gipl"), &image(), PixelType::I64).unwrap_err();
        assert!(error.message.ends_with("GIPL cannot store I64 voxels (no 64-bit integers)"), "{error}");
    }

    #[test]
    fn reads_big_endian_types_and_a_4th_axis_as_channels() {
        let image = read("a.gipl", &file([2, 1, 0, 0], 15, &[0xff, 0xfe, 0x01, 0x00])).unwrap();
        assert_eq!(image.data.shape(), [1, 2]);
        assert_eq!(image.data.iter().copied().collect::<Vec<_>>(), [-2.0, 256.0]);
        let floats: Vec<u8> = [0.5f32, -1.0, 2.0, 4.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let image = read("b.gipl", &file([1, 1, 2, 2], 64, &floats)).unwrap();
        assert!(image.channel_axis);
        assert_eq!(image.data.shape(), [2, 2, 1, 1]);
        assert_eq!(image.data.iter().copied().collect::<Vec<_>>(), [0.5, -1.0, 2.0, 4.0]);
        assert_eq!(read("c.gipl", &file([2, 2, 1, 1], 1, &[0, 1, 1, 0])).unwrap().pixel, PixelType::U8);
    }

    #[test]
    fn hostile_files_are_refused_in_one_line() {
        assert!(
            refusal(read("a.gipl", &file([2, 2, 1, 1], 8, &[1, 2, 3])))
                .ends_with("truncated data: the header promises 4 bytes, the file holds 3")
        );
        assert!(refusal(read("a.gipl", &file([65535, 65535, 65535, 65535], 65, &[0; 64]))).ends_with("overflow"));
        assert!(
            refusal(read("a.gipl", &file([65535, 65535, 65535, 1], 65, &[0; 64])))
                .contains("the header promises 2251696736043000 bytes, the file holds 64")
        );
        assert!(
            refusal(read("a.gipl", &file([2, 2, 1, 1], 144, &[0; 64])))
                .ends_with("unsupported GIPL image type code 144")
        );
        assert!(refusal(read("a.gipl", &file([2, 0, 0, 0], 8, &[0; 4]))).contains("1-D image"));
        assert!(refusal(read("a.gipl", &[0; 100])).ends_with("truncated GIPL header (100 of 256 bytes)"));
        assert!(refusal(read("a.gipl", &[0; 300])).ends_with("not a GIPL file (magic number 0x00000000)"));
        let mut zero_spacing = file([2, 2, 1, 1], 8, &[0; 4]);
        zero_spacing[SPACING_AT..][..4].copy_from_slice(&0f32.to_be_bytes());
        assert!(refusal(read("a.gipl", &zero_spacing)).ends_with("spacing 0 is not positive and finite"));
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&file([100, 100, 100, 1], 8, &[0; 10])).unwrap();
        let message = refusal(read("a.gipl.gz", &encoder.finish().unwrap()));
        assert!(message.ends_with("the header promises 1000000 bytes, the compressed stream holds 10"), "{message}");
        assert!(refusal(read("a.gipl.gz", &[0x1f, 0x8b, 8, 0, 1, 2])).contains("corrupt compressed data"));
    }
}
