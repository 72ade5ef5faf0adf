//! 3-D TIFF stacks as `nnunetv2/imageio/tif_reader_writer.py: Tiff3DIO` reads them through tifffile:
//! pages as the first axis, spacing from a JSON sidecar.

use crate::geometry::Geometry;
use crate::natural::{check_claimed_size, dimension};
use crate::raster::{PixelType, RasterImage, encode_voxels, identity};
use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashSet;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::tags::Tag;

/// How many times its compressed size TIFF data can expand: LZW, the worst of the codecs read here,
/// emits at most 4096 bytes per 12-bit code (deflate about 1032, PackBits 64).
const MAX_EXPANSION: usize = 2731;

type TiffDecoder<R = Cursor<Vec<u8>>> = Decoder<R>;

/// What one page (IFD) holds, from its tags alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    width: usize,
    height: usize,
    samples: usize,
    /// Samples stored plane by plane (`PlanarConfiguration` 2) rather than interleaved.
    planar: bool,
    pixel: PixelType,
}

impl Page {
    /// The samples of the page.
    fn values(&self) -> u128 {
        self.width as u128 * self.height as u128 * self.samples as u128
    }
}

fn bad(path: &Path) -> impl Fn(tiff::TiffError) -> Error + '_ {
    move |e| Error::bad_input(path, format!("invalid TIFF: {e}"))
}

/// Opens a TIFF file, with decoding limited to what the file can hold.
fn open(path: &Path) -> Result<(TiffDecoder, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let file_len = bytes.len();
    Ok((decoder(path, Cursor::new(bytes), file_len)?, file_len))
}

/// A decoder of a TIFF file of `file_len` bytes read from `file`, with decoding limited to what the
/// file can hold.
fn decoder<R: Read + Seek>(path: &Path, file: R, file_len: usize) -> Result<TiffDecoder<R>> {
    let mut limits = Limits::default();
    limits.decoding_buffer_size = file_len.saturating_mul(MAX_EXPANSION).max(1 << 16);
    Ok(Decoder::new(file).map_err(bad(path))?.with_limits(limits))
}

/// The samples a TIFF file's pages claim, from the file's first bytes: its page directories as
/// [`read_tifffile_array`] checks them, no strip decoded.
pub(crate) fn claimed_values(path: &Path, leading_bytes: &[u8]) -> Result<u64> {
    let mut decoder = decoder(path, Cursor::new(leading_bytes), leading_bytes.len())?;
    let first = page(path, &mut decoder)?;
    let pages = page_count(path, &mut decoder, &first)?;
    Ok(crate::natural::saturated(first.values() * pages as u128))
}

/// The current page's layout and voxel type (`BitsPerSample`, `SampleFormat`, as tifffile maps them to
/// numpy dtypes); types nnU-Net's arrays cannot hold (1-bit, 12-bit, float16, complex) are refused.
fn page<R: Read + Seek>(path: &Path, decoder: &mut TiffDecoder<R>) -> Result<Page> {
    let (width, height) = decoder.dimensions().map_err(bad(path))?;
    let samples: usize = decoder.find_tag_unsigned(Tag::SamplesPerPixel).map_err(bad(path))?.unwrap_or(1);
    let bits: Vec<u16> = decoder.find_tag_unsigned_vec(Tag::BitsPerSample).map_err(bad(path))?.unwrap_or(vec![1]);
    let formats: Vec<u16> = decoder.find_tag_unsigned_vec(Tag::SampleFormat).map_err(bad(path))?.unwrap_or(vec![1]);
    let planar = decoder.find_tag_unsigned::<u16>(Tag::PlanarConfiguration).map_err(bad(path))?.unwrap_or(1) == 2;
    let (&bits, &format) = (bits.first().unwrap_or(&1), formats.first().unwrap_or(&1));
    let pixel = match (format, bits) {
        (1, 8) => PixelType::U8,
        (2, 8) => PixelType::I8,
        (1, 16) => PixelType::U16,
        (2, 16) => PixelType::I16,
        (1, 32) => PixelType::U32,
        (2, 32) => PixelType::I32,
        (1, 64) => PixelType::U64,
        (2, 64) => PixelType::I64,
        (3, 32) => PixelType::F32,
        (3, 64) => PixelType::F64,
        _ => {
            return Err(Error::bad_input(
                path,
                format!(
                    "unsupported TIFF samples: {bits} bits of sample format {format} (8 to 64-bit integers and 32/64-bit floats are read)"
                ),
            ));
        }
    };
    Ok(Page {
        width: width as usize,
        height: height as usize,
        samples: samples.max(1),
        planar: planar && samples > 1,
        pixel,
    })
}

/// Whether tifffile reads a single page as a stack of one: a tifffile `{"shape": [1, y, x]}`
/// description, as `Tiff3DIO.write_seg` leaves on a one-slice stack.
fn one_slice_stack(decoder: &mut TiffDecoder, page: &Page) -> bool {
    let Ok(Some(tiff::decoder::ifd::Value::Ascii(description))) = decoder.find_tag(Tag::ImageDescription) else {
        return false;
    };
    let shape = serde_json::from_str::<serde_json::Value>(&description)
        .ok()
        .and_then(|json| serde_json::from_value::<Vec<usize>>(json.get("shape")?.clone()).ok());
    page.samples == 1 && shape.as_deref() == Some(&[1, page.height, page.width])
}

/// Whether a TIFF file holds several pages (a 3-D stack) rather than one 2-D image; a single page that
/// tifffile reads as a stack of one slice counts as a stack. Reads tags only.
pub(crate) fn is_stack(path: &Path) -> Result<bool> {
    let (mut decoder, _) = open(path)?;
    let first = page(path, &mut decoder)?;
    Ok(decoder.more_images() || one_slice_stack(&mut decoder, &first))
}

/// Every page of a TIFF file as `tifffile.imread` returns it: `[z, y, x]` (one page: `[y, x]`), with
/// the samples of a multi-sample image last, or, stored plane by plane, before `y`. All pages must be
/// alike (tifffile makes one series of them).
pub(crate) fn read_tifffile_array(path: &Path) -> Result<(ArrayD<f32>, PixelType)> {
    decode(path).map(|(array, first)| (array, first.pixel))
}

/// [`read_tifffile_array`] with the first page's layout.
fn decode(path: &Path) -> Result<(ArrayD<f32>, Page)> {
    let (mut decoder, file_len) = open(path)?;
    let first = page(path, &mut decoder)?;
    let stack_of_one = one_slice_stack(&mut decoder, &first);
    let pages = page_count(path, &mut decoder, &first)?;
    check_claimed_size(path, first.values() * pages as u128, first.pixel.size(), file_len, MAX_EXPANSION)?;
    let per_page = first.width * first.height * first.samples;
    let mut values = Vec::with_capacity(per_page * pages);
    for index in 0..pages {
        decoder.seek_to_image(index).map_err(bad(path))?;
        let mut result = DecodingResult::U8(Vec::new());
        let layout = decoder.read_image_to_buffer(&mut result).map_err(bad(path))?;
        if result.as_buffer(0).as_bytes().len() < layout.complete_len {
            return Err(Error::bad_input(path, format!("page {index}: not every sample plane could be decoded")));
        }
        let before = values.len();
        append_values(&mut values, result);
        if values.len() != before + per_page {
            return Err(Error::bad_input(
                path,
                format!("page {index}: decoded {} samples, expected {per_page}", values.len() - before),
            ));
        }
    }
    let mut shape = if pages > 1 || stack_of_one { vec![pages] } else { Vec::new() };
    match (first.samples, first.planar) {
        (1, _) => shape.extend([first.height, first.width]),
        (s, true) => shape.extend([s, first.height, first.width]),
        (s, false) => shape.extend([first.height, first.width, s]),
    }
    let array = ArrayD::from_shape_vec(IxDyn(&shape), values).expect("sample count checked");
    Ok((array, first))
}

/// The pages of a file whose first page, the decoder's current one, is `first`: all must be alike, as
/// tifffile makes one series of them. Leaves the decoder at the last page.
fn page_count<R: Read + Seek>(path: &Path, decoder: &mut TiffDecoder<R>, first: &Page) -> Result<usize> {
    let mut pages = 1;
    while decoder.more_images() {
        decoder.next_image().map_err(bad(path))?;
        let next = page(path, decoder)?;
        if next != *first {
            return Err(Error::bad_input(
                path,
                format!("page {pages} is {next:?} where page 0 is {first:?}; all pages of a stack must be alike"),
            ));
        }
        pages += 1;
    }
    Ok(pages)
}

/// Appends decoded samples as `f32`, as nnU-Net casts them (`np.vstack(..., dtype=np.float32)`).
fn append_values(values: &mut Vec<f32>, result: DecodingResult) {
    match result {
        DecodingResult::U8(v) => values.extend(v.into_iter().map(f32::from)),
        DecodingResult::I8(v) => values.extend(v.into_iter().map(f32::from)),
        DecodingResult::U16(v) => values.extend(v.into_iter().map(f32::from)),
        DecodingResult::I16(v) => values.extend(v.into_iter().map(f32::from)),
        DecodingResult::U32(v) => values.extend(v.into_iter().map(|x| x as f32)),
        DecodingResult::I32(v) => values.extend(v.into_iter().map(|x| x as f32)),
        DecodingResult::U64(v) => values.extend(v.into_iter().map(|x| x as f32)),
        DecodingResult::I64(v) => values.extend(v.into_iter().map(|x| x as f32)),
        DecodingResult::F16(v) => values.extend(v.into_iter().map(f32::from)),
        DecodingResult::F32(v) => values.extend(v),
        DecodingResult::F64(v) => values.extend(v.into_iter().map(|x| x as f32)),
    }
}

/// Reads every page of a TIFF file: `[z, y, x]` for a stack of grey pages, `[y, x]` for one page, with
/// samples per pixel > 1 as a leading channel axis; default geometry.
pub(crate) fn read_tiff(path: &Path) -> Result<RasterImage> {
    let (array, first) = decode(path)?;
    let n = array.ndim();
    let (data, channel_axis) = if first.samples > 1 {
        let sample_axis = if first.planar { n - 3 } else { n - 1 };
        let order: Vec<usize> = std::iter::once(sample_axis).chain((0..n).filter(|&a| a != sample_axis)).collect();
        (array.permuted_axes(IxDyn(&order)).as_standard_layout().into_owned(), true)
    } else {
        (array, false)
    };
    let spatial = data.ndim() - usize::from(channel_axis);
    Ok(RasterImage {
        pixel: first.pixel,
        channel_axis,
        spacing: vec![1.0; spatial],
        origin: vec![0.0; spatial],
        direction: identity(spatial),
        ..RasterImage::new(data)
    })
}

/// Sidecars already warned about, so that a missing one is reported once per file.
static WARNED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// The spacing (nnU-Net order z, y, x) in a Tiff3DIO sidecar `{"spacing": [z, y, x]}`; (1, 1, 1) with a
/// warning when the file is missing, as nnU-Net does.
pub(crate) fn sidecar_spacing(path: &Path) -> Result<[f64; 3]> {
    if !path.exists() {
        let mut warned = WARNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if warned.get_or_insert_with(HashSet::new).insert(path.to_owned()) {
            eprintln!("warning: no spacing file {}; assuming spacing (1, 1, 1)", path.display());
        }
        return Ok([1.0; 3]);
    }
    let json: serde_json::Value = crate::read_json(path)?;
    let spacing = json
        .get("spacing")
        .and_then(|s| serde_json::from_value::<Vec<f64>>(s.clone()).ok())
        .and_then(|s| <[f64; 3]>::try_from(s).ok())
        .filter(|s| s.iter().all(|v| v.is_finite() && *v > 0.0));
    spacing.ok_or_else(|| Error::bad_input(path, "\"spacing\" must be 3 positive finite numbers [z, y, x]"))
}

/// Writes a 3-D single-channel image as a zlib-compressed TIFF stack of `pixel` voxels and its
/// spacing sidecar `CASE.json` (`{"spacing": [z, y, x]}`), as `Tiff3DIO.write_seg` does.
pub(crate) fn write_tiff_stack(path: &Path, image: &RasterImage, pixel: PixelType, geometry: &Geometry) -> Result<()> {
    if image.channel_axis || image.data.ndim() != 3 {
        return Err(Error::runtime(path, "only single-channel 3-D images can be written as a TIFF stack"));
    }
    let shape = [image.data.shape()[0], image.data.shape()[1], image.data.shape()[2]];
    let voxels = encode_voxels(path, image, pixel)?;
    write_pages(path, &voxels, pixel, shape, true)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let stem = crate::split_image_ending(&name).map_or(name.as_ref(), |(stem, _)| stem);
    crate::write_json(&path.with_file_name(format!("{stem}.json")), &serde_json::json!({ "spacing": geometry.spacing }))
}

/// Writes `shape` (`[pages, y, x]`) voxels (little-endian bytes of `pixel`) as grey TIFF pages; a stack is
/// zlib-compressed and, as tifffile writes it, describes its shape on page 0 (so that one page reads back
/// as a stack).
pub(crate) fn write_pages(path: &Path, voxels: &[u8], pixel: PixelType, shape: [usize; 3], stack: bool) -> Result<()> {
    use tiff::encoder::{Compression, DeflateLevel, TiffEncoder, colortype};
    let [depth, height, width] = shape;
    let (w, h) = (dimension(path, width)?, dimension(path, height)?);
    let plane = width * height * pixel.size();
    crate::write_atomically(path, |tmp| {
        let failed = |e: tiff::TiffError| Error::runtime(tmp, format!("cannot write TIFF: {e}"));
        let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, &e))?;
        let mut encoder = TiffEncoder::new(std::io::BufWriter::new(file)).map_err(failed)?;
        if stack {
            encoder = encoder.with_compression(Compression::Deflate(DeflateLevel::Balanced));
        }
        let description = format!("{{\"shape\": [{depth}, {height}, {width}]}}");
        for (z, bytes) in voxels.chunks_exact(plane.max(1)).take(depth).enumerate() {
            let description = (stack && z == 0).then_some(description.as_str());
            macro_rules! page {
                ($colour:ty, $value:ty) => {{
                    let values: Vec<$value> = bytes
                        .chunks_exact(size_of::<$value>())
                        .map(|b| <$value>::from_le_bytes(b.try_into().expect("sized")))
                        .collect();
                    let mut page = encoder.new_image::<$colour>(w, h).map_err(failed)?;
                    if let Some(description) = description {
                        page.encoder().write_tag(Tag::ImageDescription, description).map_err(failed)?;
                    }
                    page.write_data(&values).map_err(failed)?;
                }};
            }
            match pixel {
                PixelType::U8 => page!(colortype::Gray8, u8),
                PixelType::I8 => page!(colortype::GrayI8, i8),
                PixelType::U16 => page!(colortype::Gray16, u16),
                PixelType::I16 => page!(colortype::GrayI16, i16),
                PixelType::U32 => page!(colortype::Gray32, u32),
                PixelType::I32 => page!(colortype::GrayI32, i32),
                PixelType::U64 => page!(colortype::Gray64, u64),
                PixelType::I64 => page!(colortype::GrayI64, i64),
                PixelType::F32 => page!(colortype::Gray32Float, f32),
                PixelType::F64 => page!(colortype::Gray64Float, f64),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_spacing_must_be_three_positive_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = dir.path().join("case.json");
        std::fs::write(&sidecar, r#"{"spacing": [3.5, 0.5, 0.25]}"#).unwrap();
        assert_eq!(sidecar_spacing(&sidecar).unwrap(), [3.5, 0.5, 0.25]);
        for bad in [r#"{"spacing": [1, 2]}"#, r#"{"spacing": [1, 0, 2]}"#, r#"{"spacing": "1"}"#, r#"{}"#] {
            std::fs::write(&sidecar, bad).unwrap();
            let error = sidecar_spacing(&sidecar).unwrap_err();
            assert_eq!(error.kind, crate::ErrorKind::BadInput, "{bad}");
            assert!(error.message.contains("case.json"), "{}", error.message);
        }
        assert_eq!(sidecar_spacing(&dir.path().join("missing.json")).unwrap(), [1.0; 3]);
    }
}
