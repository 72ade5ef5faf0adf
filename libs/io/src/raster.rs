//! What the MetaImage and NRRD readers return, and the voxel decoding both share.
//!
//! [`crate::Geometry`] is not reused: it is 3-D only and keeps spacing in nnU-Net's reversed order,
//! while these formats hold 2-D to 4-D images whose geometry SimpleITK reports in file order.

use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use std::path::Path;

/// Longest text header accepted; real MetaImage and NRRD headers are well under a kilobyte.
pub(crate) const MAX_HEADER_BYTES: usize = 1 << 20;

/// An image read from a MetaImage or NRRD file.
///
/// `data` is C-order in nnU-Net's axis order: the file's axes reversed (a file of sizes x y z gives
/// `[z, y, x]`, as SimpleITK's `GetArrayFromImage`), with the channels, when the file has them, first
/// (`[c, z, y, x]`). Channels are a MetaImage's `ElementNumberOfChannels` > 1 or its 4th dimension, or a
/// NRRD's non-spatial (list, vector, ...) axis. nnU-Net's `SimpleITKIO.read_images` reads a 4-D image's
/// first array axis as channels; a vector image's components, which `GetArrayFromImage` puts last, are
/// moved first here for the same meaning.
///
/// `spacing`, `origin` and `direction` are exactly SimpleITK's `GetSpacing()`, `GetOrigin()` and
/// `GetDirection()`: file axis order (x, y, z[, t]), physical LPS, direction row-major with column `i`
/// the direction of file axis `i`. Their length is SimpleITK's image dimension: the spatial dimension
/// for a vector image, 4 for a 4-D MetaImage. nnU-Net's spacing is the reverse of the spatial part
/// (`SimpleITKIO`: `spacing[::-1]`, without the 4th axis of a 4-D image).
#[derive(Debug, Clone, PartialEq)]
pub struct RasterImage {
    pub data: ArrayD<f32>,
    /// The voxel type the file stores (`data` holds the values as `f32`, as nnU-Net's readers cast them).
    pub pixel: PixelType,
    /// Whether `data`'s first axis holds channels rather than space.
    pub channel_axis: bool,
    pub spacing: Vec<f64>,
    pub origin: Vec<f64>,
    pub direction: Vec<f64>,
}

impl RasterImage {
    /// A single-channel image with SimpleITK's default geometry (unit spacing, zero origin, identity).
    pub fn new(data: ArrayD<f32>) -> Self {
        let n = data.ndim();
        Self {
            data,
            pixel: PixelType::F32,
            channel_axis: false,
            spacing: vec![1.0; n],
            origin: vec![0.0; n],
            direction: identity(n),
        }
    }

    /// Spacing in nnU-Net's array order, as `nnunetv2/imageio/simpleitk_reader_writer.py:
    /// SimpleITKIO.read_images` derives it for 3-D and 4-D images (a 2-D image's is prefixed there with
    /// 999 times its largest spacing).
    pub fn nnunet_spacing(&self) -> Vec<f64> {
        let spatial = self.data.ndim() - usize::from(self.channel_axis);
        self.spacing[..spatial].iter().rev().copied().collect()
    }
}

/// The `n`-D identity direction, row-major.
pub(crate) fn identity(n: usize) -> Vec<f64> {
    (0..n * n).map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 }).collect()
}

/// The voxel types both formats store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

macro_rules! decode_as {
    ($t:ty, $bytes:expr, $big:expr, $out:expr) => {
        for (value, c) in $out.iter_mut().zip($bytes.chunks_exact(size_of::<$t>())) {
            let a = c.try_into().expect("chunk has the type's size");
            *value = (if $big { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }) as f32;
        }
    };
}

macro_rules! encode_as {
    ($t:ty, $values:expr, $out:expr) => {
        for &v in $values {
            let x = v as $t;
            if x as f32 != v {
                return Err(v);
            }
            $out.extend_from_slice(&x.to_le_bytes());
        }
    };
}

impl PixelType {
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    /// Values as `f32`, as nnU-Net's readers cast them; `bytes.len()` is a multiple of the size.
    pub(crate) fn decode(self, bytes: &[u8], big_endian: bool) -> Vec<f32> {
        let mut out = vec![0.0; bytes.len() / self.size()];
        match self {
            Self::U8 => out.iter_mut().zip(bytes).for_each(|(v, &b)| *v = f32::from(b)),
            Self::I8 => out.iter_mut().zip(bytes).for_each(|(v, &b)| *v = f32::from(b as i8)),
            Self::U16 => decode_as!(u16, bytes, big_endian, out),
            Self::I16 => decode_as!(i16, bytes, big_endian, out),
            Self::U32 => decode_as!(u32, bytes, big_endian, out),
            Self::I32 => decode_as!(i32, bytes, big_endian, out),
            Self::U64 => decode_as!(u64, bytes, big_endian, out),
            Self::I64 => decode_as!(i64, bytes, big_endian, out),
            Self::F32 => decode_as!(f32, bytes, big_endian, out),
            Self::F64 => decode_as!(f64, bytes, big_endian, out),
        }
        out
    }

    /// Little-endian bytes of `values`; the first value this type cannot hold exactly is the error.
    pub(crate) fn encode<'a>(self, values: impl Iterator<Item = &'a f32>) -> Result<Vec<u8>, f32> {
        let mut out = Vec::with_capacity(values.size_hint().0 * self.size());
        match self {
            Self::U8 => encode_as!(u8, values, out),
            Self::I8 => encode_as!(i8, values, out),
            Self::U16 => encode_as!(u16, values, out),
            Self::I16 => encode_as!(i16, values, out),
            Self::U32 => encode_as!(u32, values, out),
            Self::I32 => encode_as!(i32, values, out),
            Self::U64 => encode_as!(u64, values, out),
            Self::I64 => encode_as!(i64, values, out),
            Self::F32 => values.for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Self::F64 => values.for_each(|v| out.extend_from_slice(&f64::from(*v).to_le_bytes())),
        }
        Ok(out)
    }
}

/// Bytes the voxels of `sizes` (file order, channels included) take, refusing empty and overflowing sizes.
pub(crate) fn data_bytes(path: &Path, sizes: &[usize], pixel: PixelType) -> Result<usize> {
    if sizes.contains(&0) {
        return Err(Error::bad_input(path, "an image size is 0"));
    }
    sizes
        .iter()
        .try_fold(pixel.size(), |acc, &s| acc.checked_mul(s))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| Error::bad_input(path, format!("image sizes {sizes:?} overflow")))
}

/// The values of data of `sizes` (a header's claim), refused as [`data_bytes`] refuses them.
pub(crate) fn claimed_values(path: &Path, sizes: &[usize], pixel: PixelType) -> Result<u64> {
    Ok((data_bytes(path, sizes, pixel)? / pixel.size()) as u64)
}

/// The whole of a data file a header names (a `.mhd`'s `ElementDataFile`, a `.nhdr`'s `data file`), which
/// must be a regular file: a header naming `/dev/zero` or a pipe would otherwise be read without end.
pub(crate) fn read_data_file(path: &Path) -> std::io::Result<Vec<u8>> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    std::fs::read(path)
}

/// The first `expected` bytes of `data`, or a truncation error.
pub(crate) fn exact_prefix<'a>(path: &Path, data: &'a [u8], expected: usize) -> Result<&'a [u8]> {
    data.get(..expected).ok_or_else(|| {
        Error::bad_input(
            path,
            format!("truncated data: the header promises {expected} bytes, the file holds {}", data.len()),
        )
    })
}

/// Decompresses exactly `expected` bytes from a zlib or gzip stream (told apart by gzip's magic bytes)
/// that starts with `skip` bytes of something else (a header), growing the buffer only as the stream
/// yields data, so a small file cannot claim a huge allocation.
pub(crate) fn inflate(path: &Path, compressed: &[u8], skip: usize, expected: usize) -> Result<Vec<u8>> {
    crate::inflate::inflate_range(compressed, skip, expected)
        .map_err(|e| Error::bad_input(path, format!("corrupt compressed data: {e}")))?
        .map_err(|holds| {
            Error::bad_input(
                path,
                format!("truncated data: the header promises {expected} bytes, the compressed stream holds {holds}"),
            )
        })
}

/// Decodes `bytes` (file order, first file axis fastest) into a C-order array in nnU-Net's order, with
/// `channel_file_axis`, when given, moved to the front.
pub(crate) fn to_array(
    bytes: &[u8],
    pixel: PixelType,
    big_endian: bool,
    file_sizes: &[usize],
    channel_file_axis: Option<usize>,
) -> ArrayD<f32> {
    let shape: Vec<usize> = file_sizes.iter().rev().copied().collect();
    let array = ArrayD::from_shape_vec(IxDyn(&shape), pixel.decode(bytes, big_endian))
        .expect("byte count checked against the sizes");
    match channel_file_axis {
        Some(axis) if axis + 1 != file_sizes.len() => {
            let channel = file_sizes.len() - 1 - axis;
            let order: Vec<usize> =
                std::iter::once(channel).chain((0..shape.len()).filter(|&a| a != channel)).collect();
            array.permuted_axes(IxDyn(&order)).as_standard_layout().into_owned()
        }
        _ => array,
    }
}

/// Refuses spacing that is not positive and finite, and geometry that is not finite.
pub(crate) fn check_geometry(path: &Path, spacing: &[f64], origin: &[f64], direction: &[f64]) -> Result<()> {
    if let Some(s) = spacing.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::bad_input(path, format!("spacing {s} is not positive and finite")));
    }
    if origin.iter().chain(direction).any(|v| !v.is_finite()) {
        return Err(Error::bad_input(path, "origin or direction is not finite"));
    }
    Ok(())
}

/// The file sizes (first file axis first) of an image the writers can store: single-channel, 2-D or 3-D.
pub(crate) fn scalar_file_sizes(path: &Path, image: &RasterImage) -> Result<Vec<usize>> {
    let n = image.data.ndim();
    if image.channel_axis || !(2..=3).contains(&n) {
        return Err(Error::runtime(path, "only single-channel 2-D and 3-D images can be written"));
    }
    if image.spacing.len() != n || image.origin.len() != n || image.direction.len() != n * n {
        return Err(Error::runtime(path, "geometry does not match the image dimension"));
    }
    Ok(image.data.shape().iter().rev().copied().collect())
}

/// The voxels of a single-channel image as little-endian bytes in file order.
pub(crate) fn encode_voxels(path: &Path, image: &RasterImage, pixel: PixelType) -> Result<Vec<u8>> {
    let standard = image.data.as_standard_layout();
    let values = standard.as_slice().expect("standard layout is contiguous");
    pixel.encode(values.iter()).map_err(|v| Error::runtime(path, format!("value {v} cannot be stored as {pixel:?}")))
}

/// Numbers with Rust's shortest exact representation, space separated, as both headers write them.
pub(crate) fn join(values: &[f64], separator: &str) -> String {
    values.iter().map(f64::to_string).collect::<Vec<_>>().join(separator)
}

/// Writes a text header followed by the voxel bytes, atomically: the layout of `.mha` and `.nrrd`.
pub(crate) fn write_header_and_data(path: &Path, header: String, data: &[u8]) -> Result<()> {
    crate::output::write_parts(path, &[header.as_bytes(), data])
}

/// The message of a reader's refusal, checked to be one line of bad input (the readers' tests).
#[cfg(test)]
pub(crate) fn refusal(outcome: Result<RasterImage>) -> String {
    let error = outcome.expect_err("must be refused");
    assert_eq!(error.kind, crate::ErrorKind::BadInput);
    assert!(!error.message.contains('\n'), "one line: {}", error.message);
    error.message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnunet_spacing_reverses_the_spatial_axes_only() {
        let four_d = RasterImage {
            channel_axis: true,
            spacing: vec![0.7, 1.3, 2.5, 1.0],
            ..RasterImage::new(ArrayD::zeros(IxDyn(&[2, 3, 4, 5])))
        };
        assert_eq!(four_d.nnunet_spacing(), [2.5, 1.3, 0.7]);
        let vector = RasterImage { channel_axis: true, ..RasterImage::new(ArrayD::zeros(IxDyn(&[2, 3, 4, 5]))) };
        let vector = RasterImage { spacing: vec![0.7, 1.3, 2.5], ..vector };
        assert_eq!(vector.nnunet_spacing(), [2.5, 1.3, 0.7]);
        let flat = RasterImage { spacing: vec![0.5, 2.0], ..RasterImage::new(ArrayD::zeros(IxDyn(&[3, 4]))) };
        assert_eq!(flat.nnunet_spacing(), [2.0, 0.5]);
        assert_eq!(identity(3), [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    }
}
