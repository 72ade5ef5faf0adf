//! 2-D "natural" images, PNG, BMP and single-page TIFF, as `nnunetv2/imageio/natural_image_reader_writer.py:
//! NaturalImage2DIO` reads them through scikit-image: grey images as 2-D arrays, RGB(A) as channels.
//!
//! `skimage.io.imread` reads PNG and BMP through imageio's Pillow plugin and TIFF through tifffile; the
//! decoders here reproduce what Pillow makes of each kind of file (palettes applied, 16-bit colour cut to
//! its high byte, 1-bit grey as 0/1), then skimage's own reshuffling of the axes.

use crate::image::Format;
use crate::raster::{PixelType, RasterImage, encode_voxels, identity};
use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use std::io::Cursor;
use std::path::Path;

/// How many times its compressed size a deflate stream can expand (zlib's worst case is about 1032:1);
/// a header claiming more pixels than this allows is refused before anything is allocated.
const DEFLATE_EXPANSION: usize = 1032;

/// Reads a PNG, BMP or TIFF file (by `format`) as a raster image: grey `[y, x]`, or RGB(A) with
/// `channel_axis` and `[c, y, x]`; its pixel type as stored (8 or 16 bits); default geometry.
pub(crate) fn read_natural(path: &Path, format: Format) -> Result<RasterImage> {
    let (array, pixel) = match format {
        Format::Png => read_png(path)?,
        Format::Bmp => read_bmp(path)?,
        Format::Tiff => crate::tiff::read_tifffile_array(path)?,
        _ => return Err(Error::bad_input(path, "not a PNG, BMP or TIFF file")),
    };
    Ok(skimage_layout(array, pixel))
}

/// What `skimage.io.imread` makes of the array its plugin returns (channels last): an array of more
/// than two axes whose last is not 3 or 4 long but whose third-last is has that axis moved last
/// (`skimage/io/_io.py: imread`). A 3-D result is then read as `[y, x, c]`
/// (`NaturalImage2DIO.read_images`), here returned channels first; any other is returned as it is.
fn skimage_layout(mut array: ArrayD<f32>, pixel: PixelType) -> RasterImage {
    let n = array.ndim();
    if n > 2 && !matches!(array.shape()[n - 1], 3 | 4) && matches!(array.shape()[n - 3], 3 | 4) {
        array.swap_axes(n - 1, n - 3);
        array.swap_axes(n - 2, n - 3);
    }
    let channel_axis = array.ndim() == 3;
    if channel_axis {
        array = array.permuted_axes(IxDyn(&[2, 0, 1]));
    }
    let data = array.as_standard_layout().into_owned();
    let spatial = data.ndim() - usize::from(channel_axis);
    RasterImage {
        pixel,
        channel_axis,
        spacing: vec![1.0; spatial],
        origin: vec![0.0; spatial],
        direction: identity(spatial),
        ..RasterImage::new(data)
    }
}

/// Refuses an image whose decoded size (`values` samples of `bytes` each) exceeds what a file of
/// `file_len` bytes can hold even fully compressed.
pub(crate) fn check_claimed_size(
    path: &Path,
    values: u128,
    bytes: usize,
    file_len: usize,
    expansion: usize,
) -> Result<()> {
    let limit = file_len as u128 * expansion as u128;
    if values * bytes as u128 > limit || values == 0 {
        return Err(Error::bad_input(
            path,
            format!("the header claims {values} samples, more than a {file_len}-byte file can hold (or none)"),
        ));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, &e))
}

fn invalid_png(path: &Path) -> impl Fn(png::DecodingError) -> Error + '_ {
    move |e| Error::bad_input(path, format!("invalid PNG: {e}"))
}

fn invalid_bmp(path: &Path) -> impl Fn(image::ImageError) -> Error + '_ {
    move |e| Error::bad_input(path, format!("invalid BMP: {e}"))
}

/// A PNG's decoder past its header chunks (`read_info`; decoding limited to what `bytes`, the file or
/// its first bytes, can hold) and the samples its header claims (width x height x samples per pixel).
fn png_header<'a>(path: &Path, bytes: &'a [u8]) -> Result<(png::Reader<Cursor<&'a [u8]>>, u128)> {
    let limit = bytes.len().saturating_mul(DEFLATE_EXPANSION);
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: limit.max(1 << 16) });
    decoder.set_transformations(png::Transformations::IDENTITY);
    let reader = decoder.read_info().map_err(invalid_png(path))?;
    let info = reader.info();
    let values = u128::from(info.width) * u128::from(info.height) * info.color_type.samples() as u128;
    Ok((reader, values))
}

/// The samples a PNG's header claims, from the file's first bytes.
pub(crate) fn png_claimed_values(path: &Path, leading_bytes: &[u8]) -> Result<u64> {
    png_header(path, leading_bytes).map(|(_, values)| saturated(values))
}

/// A count of values as a `u64`, the largest when it is more.
pub(crate) fn saturated(values: u128) -> u64 {
    u64::try_from(values).unwrap_or(u64::MAX)
}

/// A PNG as Pillow decodes it (`PIL/PngImagePlugin.py: _MODES`) and imageio returns it: grey of 1 bit as
/// 0/1 (mode "1", a bool array), of 2 and 4 bits scaled to 0..255, of 16 bits as uint16; every colour
/// image (RGB, RGBA, grey+alpha, palette) as uint8, 16-bit samples cut to their high byte; a palette
/// applied as RGB (transparency dropped: imageio converts to the palette's mode); 16-bit grey+alpha as
/// RGBA (Pillow's "LA;16B" raw mode). Returned channels last.
fn read_png(path: &Path) -> Result<(ArrayD<f32>, PixelType)> {
    use png::{BitDepth, ColorType};
    let bytes = read_file(path)?;
    let file_len = bytes.len();
    let (mut reader, values) = png_header(path, &bytes)?;
    let info = reader.info();
    let (width, height) = (info.width as usize, info.height as usize);
    let (color, depth) = (info.color_type, info.bit_depth);
    let palette: Vec<u8> = info.palette.as_deref().unwrap_or_default().to_vec();
    let samples = color.samples();
    check_claimed_size(path, values, (depth as usize).div_ceil(8), file_len, DEFLATE_EXPANSION)?;
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buffer).map_err(invalid_png(path))?;
    let line = frame.line_size;
    let bits = depth as usize;
    let sample = |row: &[u8], i: usize| -> u16 {
        match depth {
            BitDepth::Sixteen => u16::from_be_bytes([row[2 * i], row[2 * i + 1]]),
            BitDepth::Eight => u16::from(row[i]),
            _ => {
                let per_byte = 8 / bits;
                let shift = 8 - bits * (i % per_byte + 1);
                u16::from((row[i / per_byte] >> shift) & ((1 << bits) - 1) as u8)
            }
        }
    };
    let high_byte = |v: u16| if depth == BitDepth::Sixteen { f32::from(v >> 8) } else { f32::from(v) };
    let rows = buffer.chunks(line).take(height);
    let (channels, pixel, values): (usize, PixelType, Vec<f32>) = match color {
        ColorType::Grayscale => {
            let scale = match depth {
                BitDepth::Two => 85.0,
                BitDepth::Four => 17.0,
                _ => 1.0,
            };
            let pixel = if depth == BitDepth::Sixteen { PixelType::U16 } else { PixelType::U8 };
            let values = rows.flat_map(|row| (0..width).map(move |i| f32::from(sample(row, i)) * scale)).collect();
            (1, pixel, values)
        }
        ColorType::Indexed => {
            let palette = &palette;
            let values = rows
                .flat_map(|row| (0..width).map(move |i| usize::from(sample(row, i))))
                .flat_map(|index| (0..3).map(move |c| palette.get(3 * index + c).map_or(0.0, |&v| f32::from(v))))
                .collect();
            (3, PixelType::U8, values)
        }
        ColorType::GrayscaleAlpha if depth == BitDepth::Sixteen => {
            let values = rows
                .flat_map(|row| (0..width).map(move |i| (sample(row, 2 * i), sample(row, 2 * i + 1))))
                .flat_map(|(grey, alpha)| [grey, grey, grey, alpha].map(high_byte))
                .collect();
            (4, PixelType::U8, values)
        }
        ColorType::Rgb | ColorType::Rgba | ColorType::GrayscaleAlpha => {
            let values = rows.flat_map(|row| (0..width * samples).map(move |i| high_byte(sample(row, i)))).collect();
            (samples, PixelType::U8, values)
        }
    };
    let shape: Vec<usize> = if channels == 1 { vec![height, width] } else { vec![height, width, channels] };
    let array = ArrayD::from_shape_vec(IxDyn(&shape), values)
        .map_err(|_| Error::bad_input(path, "truncated PNG: fewer rows than the header claims"))?;
    Ok((array, pixel))
}

/// The colour table of a BMP file as Pillow reads it to decide between grey and palette images
/// (`PIL/BmpImagePlugin.py: BmpImageFile._bitmap`): RGB triplets, as many as the header's colour count
/// (or 2^bits); `None` for images of more than 8 bits, which have none.
fn bmp_palette(path: &Path, bytes: &[u8]) -> Result<Option<Vec<[u8; 3]>>> {
    let truncated = || Error::bad_input(path, "truncated BMP header");
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or_else(truncated);
    let u32_at =
        |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(truncated);
    let header_size = u32_at(14)? as usize;
    let core = header_size == 12;
    let bits = if core { u16_at(24)? } else { u16_at(28)? };
    if bits > 8 {
        return Ok(None);
    }
    // the `image` crate's BmpDecoder (0.24 and 0.25) gives palette indices only for uncompressed 8-bit
    // data: on run-length-encoded data (read_rle_data) it writes three bytes per one-byte pixel, and of
    // 1-, 2- and 4-bit rows (read_palettized_pixel_data) it copies the packed bytes; both can panic
    if bits != 8 || (!core && matches!(u32_at(30)?, 1 | 2)) {
        return Err(Error::bad_input(
            path,
            format!("palette BMP files of {bits} bits or run-length-encoded (RLE4/RLE8) are not supported"),
        ));
    }
    let count = if core { 0 } else { u32_at(46)? as usize };
    let count = if count == 0 || count > 1 << bits { 1 << bits } else { count };
    let entry = if core { 3 } else { 4 };
    let start = 14 + header_size;
    let table =
        bytes.get(start..start + count * entry).ok_or_else(|| Error::bad_input(path, "truncated BMP palette"))?;
    let colours = table.chunks_exact(entry).map(|bgr| [bgr[2], bgr[1], bgr[0]]).collect();
    Ok(Some(colours))
}

/// A BMP's decoder past its headers, giving palette indices where [`bmp_palette`] finds a palette, that
/// palette, and the samples the headers claim (width x height x channels as decoded).
type BmpHeader<'a> = (image::codecs::bmp::BmpDecoder<Cursor<&'a [u8]>>, Option<Vec<[u8; 3]>>, u128);

fn bmp_header<'a>(path: &Path, bytes: &'a [u8]) -> Result<BmpHeader<'a>> {
    use image::ImageDecoder;
    let mut decoder = image::codecs::bmp::BmpDecoder::new(Cursor::new(bytes)).map_err(invalid_bmp(path))?;
    let palette = bmp_palette(path, bytes)?;
    if palette.is_some() {
        decoder.set_indexed_color(true);
    }
    let (width, height) = decoder.dimensions();
    let channels = decoder.color_type().channel_count();
    let values = u128::from(width) * u128::from(height) * u128::from(channels);
    Ok((decoder, palette, values))
}

/// The samples a BMP's headers claim, from the file's first bytes.
pub(crate) fn bmp_claimed_values(path: &Path, leading_bytes: &[u8]) -> Result<u64> {
    bmp_header(path, leading_bytes).map(|(_, _, values)| saturated(values))
}

/// A BMP as Pillow decodes it: a palette image whose colours are the grey ramp (black and white for
/// two colours) as grey values (the palette index; mode "1" gives 0/1), any other palette applied as
/// RGB, true-colour images as RGB or, with an alpha mask, RGBA. Returned channels last.
fn read_bmp(path: &Path) -> Result<(ArrayD<f32>, PixelType)> {
    use image::ImageDecoder;
    let bytes = read_file(path)?;
    let (decoder, palette, values) = bmp_header(path, &bytes)?;
    let (width, height) = decoder.dimensions();
    let (width, height) = (width as usize, height as usize);
    let channels = usize::from(decoder.color_type().channel_count());
    // well above run-length encoding's 255 pixels per 2 bytes
    check_claimed_size(path, values, 1, bytes.len(), DEFLATE_EXPANSION)?;
    let mut buffer = vec![0; decoder.total_bytes() as usize];
    decoder.read_image(&mut buffer).map_err(invalid_bmp(path))?;
    let Some(colours) = palette else {
        let shape = [height, width, channels];
        return Ok((
            ArrayD::from_shape_vec(IxDyn(&shape), buffer.iter().map(|&v| f32::from(v)).collect()).expect("sized"),
            PixelType::U8,
        ));
    };
    let two = colours.len() == 2;
    let grey = colours.iter().enumerate().all(|(i, rgb)| *rgb == [if two { [0, 255][i] } else { i as u8 }; 3]);
    if grey {
        let values = buffer.iter().map(|&v| f32::from(v)).collect();
        return Ok((ArrayD::from_shape_vec(IxDyn(&[height, width]), values).expect("sized"), PixelType::U8));
    }
    let values = buffer
        .iter()
        .flat_map(|&index| colours.get(usize::from(index)).copied().unwrap_or([0; 3]))
        .map(f32::from)
        .collect();
    Ok((ArrayD::from_shape_vec(IxDyn(&[height, width, 3]), values).expect("sized"), PixelType::U8))
}

/// Writes a single-channel 2-D raster image (`[y, x]`) as PNG, BMP or TIFF (by `format`) with `pixel`
/// (U8 or U16), as `NaturalImage2DIO.write_seg` writes labels with scikit-image.
pub(crate) fn write_natural(path: &Path, format: Format, image: &RasterImage, pixel: PixelType) -> Result<()> {
    if image.channel_axis {
        return write_colour_png(path, format, image, pixel);
    }
    if image.data.ndim() != 2 {
        return Err(Error::runtime(path, "only 2-D images can be written as PNG, BMP or TIFF"));
    }
    if format != Format::Tiff && !matches!(pixel, PixelType::U8 | PixelType::U16) {
        return Err(Error::bad_input(
            path,
            format!("{pixel:?} voxels cannot be written as PNG or BMP (uint8 or uint16 only)"),
        ));
    }
    if format == Format::Bmp && pixel == PixelType::U16 {
        return Err(Error::bad_input(path, "BMP has no 16-bit grey: labels of 255 and above need .png or .tif"));
    }
    let (height, width) = (image.data.shape()[0], image.data.shape()[1]);
    let (w, h) = (dimension(path, width)?, dimension(path, height)?);
    let little_endian = encode_voxels(path, image, pixel)?;
    match format {
        Format::Png => crate::output::write_atomically(path, |tmp| {
            let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, &e))?;
            let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
            encoder.set_color(png::ColorType::Grayscale);
            let data = if pixel == PixelType::U16 {
                encoder.set_depth(png::BitDepth::Sixteen);
                little_endian.chunks_exact(2).flat_map(|b| [b[1], b[0]]).collect()
            } else {
                encoder.set_depth(png::BitDepth::Eight);
                little_endian
            };
            let failed = |e: png::EncodingError| Error::runtime(tmp, format!("cannot write PNG: {e}"));
            let mut writer = encoder.write_header().map_err(failed)?;
            writer.write_image_data(&data).map_err(failed)?;
            writer.finish().map_err(failed)
        }),
        Format::Bmp => crate::output::write_atomically(path, |tmp| {
            let mut out = Vec::new();
            image::codecs::bmp::BmpEncoder::new(&mut out)
                .encode(&little_endian, w, h, image::ColorType::L8)
                .map_err(|e| Error::runtime(tmp, format!("cannot write BMP: {e}")))?;
            std::fs::write(tmp, out).map_err(|e| Error::io(tmp, &e))
        }),
        Format::Tiff => crate::tiff::write_pages(path, &little_endian, pixel, [1, height, width], false),
        _ => Err(Error::bad_input(path, "not a PNG, BMP or TIFF file name")),
    }
}

/// Writes a `[c, y, x]` raster of 3 or 4 channels as an 8-bit RGB or RGBA PNG, the one file nnU-Net's
/// `NaturalImage2DIO` reads as that many channels.
fn write_colour_png(path: &Path, format: Format, image: &RasterImage, pixel: PixelType) -> Result<()> {
    let shape = image.data.shape();
    let colour = match (format, pixel, shape) {
        (Format::Png, PixelType::U8, [3, _, _]) => png::ColorType::Rgb,
        (Format::Png, PixelType::U8, [4, _, _]) => png::ColorType::Rgba,
        _ => {
            return Err(Error::bad_input(
                path,
                format!("only 3 or 4 uint8 channels can be written as one (PNG) file, not {:?} {pixel:?}", shape),
            ));
        }
    };
    let (w, h) = (dimension(path, shape[2])?, dimension(path, shape[1])?);
    // channels last, interleaved
    let interleaved = image.data.view().permuted_axes(IxDyn(&[1, 2, 0])).as_standard_layout().into_owned();
    let raster = RasterImage { data: interleaved, channel_axis: false, ..image.clone() };
    let bytes = encode_voxels(path, &raster, pixel)?;
    crate::output::write_atomically(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, &e))?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
        encoder.set_color(colour);
        encoder.set_depth(png::BitDepth::Eight);
        let failed = |e: png::EncodingError| Error::runtime(tmp, format!("cannot write PNG: {e}"));
        let mut writer = encoder.write_header().map_err(failed)?;
        writer.write_image_data(&bytes).map_err(failed)?;
        writer.finish().map_err(failed)
    })
}

/// An image size as the encoders take it.
pub(crate) fn dimension(path: &Path, size: usize) -> Result<u32> {
    u32::try_from(size).map_err(|_| Error::bad_input(path, format!("image size {size} is too large for the format")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skimage_moves_a_leading_colour_axis_last() {
        // Pillow's grey+alpha of 3 rows, (3, 4, 2), comes out of skimage as RGB (4, 2, 3)
        let la = ArrayD::from_shape_fn(IxDyn(&[3, 4, 2]), |i| (i[0] * 100 + i[1] * 10 + i[2]) as f32);
        let image = skimage_layout(la, PixelType::U8);
        assert!(image.channel_axis);
        assert_eq!(image.data.shape(), [3, 4, 2]);
        // skimage's (y, x, c) holds la[c, y, x]: channels first, the values keep their places
        assert_eq!(image.data[[2, 1, 0]], 210.0);
        let grey = skimage_layout(ArrayD::zeros(IxDyn(&[5, 6])), PixelType::U16);
        assert!(!grey.channel_axis);
        assert_eq!((grey.spacing.len(), grey.direction.len()), (2, 4));
    }

    #[test]
    fn claimed_sizes_beyond_the_file_are_refused() {
        let path = Path::new("x.png");
        assert!(check_claimed_size(path, 1000, 1, 1, DEFLATE_EXPANSION).is_ok());
        let error = check_claimed_size(path, 60000 * 60000, 2, 100, DEFLATE_EXPANSION).unwrap_err();
        assert_eq!(error.kind, crate::ErrorKind::BadInput);
        assert!(error.message.contains("100-byte file"), "{}", error.message);
    }
}
