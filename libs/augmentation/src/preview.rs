//! A PNG of one augmented sample, to look at what the network is fed (`nn-train --dump-augmented N`).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use tch::{Device, Kind, Tensor};

/// Label colours: background black, then distinct hues, repeating for many labels.
const PALETTE: [[u8; 3]; 9] = [
    [0, 0, 0],
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
];

/// Writes the middle axial slice (middle of axis 0 in 3d; 2d as is) of each channel of `data`
/// (c, *patch), each scaled to its own range in grey, and of `seg` (1, *patch) in colour, side by side.
pub fn write_mid_slice_png(path: &Path, data: &Tensor, seg: &Tensor) -> std::io::Result<()> {
    let slice = |t: &Tensor| {
        let t = t.to_device(Device::Cpu);
        if t.dim() == 4 { t.select(1, t.size()[1] / 2) } else { t }
    };
    let (data, seg) = (slice(data).to_kind(Kind::Float), slice(seg).to_kind(Kind::Int64));
    let size = data.size();
    let (channels, height, width) = (size[0] as usize, size[1] as usize, size[2] as usize);
    let values = Vec::<f32>::try_from(data.flatten(0, -1)).expect("float data");
    let labels = Vec::<i64>::try_from(seg.flatten(0, -1)).expect("integer labels");
    let panels = channels + 1;
    let mut pixels = vec![0u8; panels * width * height * 3];
    for c in 0..channels {
        let image = &values[c * height * width..(c + 1) * height * width];
        let low = image.iter().copied().fold(f32::INFINITY, f32::min);
        let high = image.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let span = (high - low).max(f32::EPSILON);
        for (v, &value) in image.iter().enumerate() {
            let grey = ((value - low) / span * 255.0).round() as u8;
            put(&mut pixels, panels, width, c, v, [grey; 3]);
        }
    }
    for (v, &label) in labels.iter().enumerate() {
        put(&mut pixels, panels, width, channels, v, PALETTE[label.rem_euclid(PALETTE.len() as i64) as usize]);
    }
    let mut encoder = png::Encoder::new(BufWriter::new(File::create(path)?), (panels * width) as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&pixels).map_err(std::io::Error::other)
}

/// Sets voxel `v` (row-major within a panel) of panel `panel` in the side-by-side RGB image.
fn put(pixels: &mut [u8], panels: usize, width: usize, panel: usize, v: usize, rgb: [u8; 3]) {
    let (row, column) = (v / width, v % width);
    let at = ((row * panels + panel) * width + column) * 3;
    pixels[at..at + 3].copy_from_slice(&rgb);
}
