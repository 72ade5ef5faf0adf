//! Overlay images for a quick look at a case: a few axial slices (array axis 0) through the largest
//! reference structure, the image in greyscale, reference contours in green and prediction contours in
//! red (yellow where they coincide), side by side in one PNG.

use ndarray::{ArrayView2, ArrayView3, Axis};
use nntools_io::{Error, Result, write_atomically};
use std::io::BufWriter;
use std::path::Path;

const SLICES: usize = 3;
/// Slices are enlarged (nearest neighbour) until the longer side is at least this many pixels.
const MIN_SIDE_PX: usize = 256;
const GAP_PX: usize = 4;
const REFERENCE_RGB: [u8; 3] = [0, 255, 0];
const PREDICTION_RGB: [u8; 3] = [255, 0, 0];
const BOTH_RGB: [u8; 3] = [255, 255, 0];

/// Writes the overlay of one case to `path` (atomically).
pub fn write_overlay(
    path: &Path,
    image: ArrayView3<f32>,
    reference: ArrayView3<i32>,
    prediction: ArrayView3<i32>,
) -> Result<()> {
    let slices = choose_slices(reference, prediction);
    let (_, ny, nx) = image.dim();
    let scale = MIN_SIDE_PX.div_ceil(ny.max(nx)).max(1);
    let (height, panel_width) = (ny * scale, nx * scale);
    let width = slices.len() * panel_width + (slices.len() - 1) * GAP_PX;
    let mut rgb = vec![0u8; width * height * 3];
    let (low, high) = window(image);
    for (panel, &z) in slices.iter().enumerate() {
        let left = panel * (panel_width + GAP_PX);
        let slice = image.index_axis(Axis(0), z);
        let reference = reference.index_axis(Axis(0), z);
        let prediction = prediction.index_axis(Axis(0), z);
        for py in 0..height {
            for px in 0..panel_width {
                let grey = ((slice[[py / scale, px / scale]] - low) / (high - low) * 255.0).clamp(0.0, 255.0) as u8;
                let colour = match (on_contour(reference, py, px, scale), on_contour(prediction, py, px, scale)) {
                    (true, true) => BOTH_RGB,
                    (true, false) => REFERENCE_RGB,
                    (false, true) => PREDICTION_RGB,
                    (false, false) => [grey; 3],
                };
                let offset = (py * width + left + px) * 3;
                rgb[offset..offset + 3].copy_from_slice(&colour);
            }
        }
    }
    write_atomically(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| Error::io(path, &e))?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| Error::runtime(path, e))?;
        writer.write_image_data(&rgb).map_err(|e| Error::runtime(path, e))?;
        writer.finish().map_err(|e| Error::runtime(path, e))
    })
}

/// Slices at a quarter, half and three quarters of the axial extent of the reference label with the
/// most voxels (else of the predicted foreground, else of the image), without repeats.
fn choose_slices(reference: ArrayView3<i32>, prediction: ArrayView3<i32>) -> Vec<usize> {
    let largest_label = {
        let mut counts = std::collections::BTreeMap::<i32, usize>::new();
        for &v in reference.iter().filter(|&&v| v != 0) {
            *counts.entry(v).or_default() += 1;
        }
        counts.into_iter().max_by_key(|&(label, count)| (count, std::cmp::Reverse(label))).map(|(label, _)| label)
    };
    let extent = |map: ArrayView3<i32>, keep: &dyn Fn(i32) -> bool| {
        let present: Vec<usize> = map
            .axis_iter(Axis(0))
            .enumerate()
            .filter(|(_, slice)| slice.iter().any(|&v| keep(v)))
            .map(|(z, _)| z)
            .collect();
        Some((*present.first()?, *present.last()?))
    };
    let nz = reference.len_of(Axis(0));
    let (first, last) = largest_label
        .and_then(|label| extent(reference, &|v| v == label))
        .or_else(|| extent(prediction, &|v| v != 0))
        .unwrap_or((0, nz - 1));
    let mut slices: Vec<usize> = (1..=SLICES)
        .map(|i| first + ((last - first) as f64 * i as f64 / (SLICES + 1) as f64).round() as usize)
        .collect();
    slices.dedup();
    slices
}

/// The intensity window: the 0.5th to 99.5th percentile, so outliers do not wash out the slice.
fn window(image: ArrayView3<f32>) -> (f32, f32) {
    let mut values: Vec<f32> = image.iter().copied().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return (0.0, 1.0);
    }
    values.sort_by(f32::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    let (low, high) = (at(0.005), at(0.995));
    if high > low { (low, high) } else { (low, low + 1.0) }
}

/// Whether output pixel (py, px) of the enlarged slice lies on the boundary of a nonzero label: its
/// label differs from a 4-neighbour pixel's (or it touches the border), so contours are one pixel wide.
fn on_contour(labels: ArrayView2<i32>, py: usize, px: usize, scale: usize) -> bool {
    let (ny, nx) = labels.dim();
    let at = |y: usize, x: usize| labels[[y / scale, x / scale]];
    let here = at(py, px);
    if here == 0 {
        return false;
    }
    let (h, w) = (ny * scale, nx * scale);
    py == 0
        || px == 0
        || py + 1 == h
        || px + 1 == w
        || at(py - 1, px) != here
        || at(py + 1, px) != here
        || at(py, px - 1) != here
        || at(py, px + 1) != here
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn slices_span_the_largest_reference_label() {
        let mut reference = Array3::<i32>::zeros((20, 4, 4));
        reference.slice_mut(ndarray::s![4..=12, .., ..]).fill(1);
        reference.slice_mut(ndarray::s![15..16, 0, 0]).fill(2);
        let prediction = Array3::<i32>::zeros((20, 4, 4));
        assert_eq!(choose_slices(reference.view(), prediction.view()), [6, 8, 10]);
        assert_eq!(choose_slices(prediction.view(), prediction.view()), [5, 10, 14]);
    }

    #[test]
    fn writes_a_png_with_both_contours() {
        let dir = tempfile::tempdir().unwrap();
        let image = Array3::from_shape_fn((9, 8, 8), |(z, y, x)| (z + y + x) as f32);
        let mut reference = Array3::<i32>::zeros((9, 8, 8));
        reference.slice_mut(ndarray::s![1..8, 2..6, 2..6]).fill(1);
        let mut prediction = Array3::<i32>::zeros((9, 8, 8));
        prediction.slice_mut(ndarray::s![1..8, 3..7, 2..6]).fill(1);
        let path = dir.path().join("case.png");
        write_overlay(&path, image.view(), reference.view(), prediction.view()).unwrap();
        let decoder = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buffer).unwrap();
        // three slices of 8×8 voxels enlarged 32 times, with two gaps
        assert_eq!((info.width, info.height), (3 * 256 + 2 * 4, 256));
        let pixels: Vec<[u8; 3]> = buffer[..info.buffer_size()].chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        for colour in [REFERENCE_RGB, PREDICTION_RGB, BOTH_RGB] {
            assert!(pixels.contains(&colour), "{colour:?} missing");
        }
    }
}
