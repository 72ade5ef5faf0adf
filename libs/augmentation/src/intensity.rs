//! The intensity transforms of nnU-Net's pipeline
//! (`nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: nnUNetTrainer.get_training_transforms`: batchgeneratorsv2's
//! `GaussianNoiseTransform`, `GaussianBlurTransform`, `MultiplicativeBrightnessTransform`, `ContrastTransform`,
//! `SimulateLowResolutionTransform`, `GammaTransform` inverted and plain, in `transforms/intensity/`,
//! `transforms/noise/` and `transforms/spatial/`), batched over the images of all samples and channels ("rows"); rows
//! a transform does not touch are left bit for bit.

use tch::{Kind, Tensor};

use crate::recipe::SampleParameters;
use crate::upload;

const EPSILON: f64 = 1e-7;

/// Noise, blur, brightness, contrast, low resolution, inverted gamma and gamma on `data` (b, c, *patch).
/// `keep_axis0` leaves spatial axis 0 at full resolution in the low-resolution simulation (dummy 2d).
pub(crate) fn transform(data: &Tensor, params: &[SampleParameters], keep_axis0: bool) -> Tensor {
    let size = data.size();
    let channels = size[1] as usize;
    let mut rows_shape = vec![size[0] * size[1]];
    rows_shape.extend_from_slice(&size[2..]);
    let x = data.reshape(rows_shape.as_slice());

    let (rows, sigmas) = select(params, channels, |p| p.noise_sigma.map(|s| vec![Some(s); channels]));
    let x = on_rows(&x, &rows, |r| r + r.randn_like() * per_row(&sigmas, r));
    let (rows, sigmas) = select(params, channels, |p| p.blur.clone());
    let x = on_rows(&x, &rows, |r| blur(r, &sigmas));
    let (rows, factors) = select(params, channels, |p| every_channel(&p.brightness));
    let x = on_rows(&x, &rows, |r| r * per_row(&factors, r));
    let (rows, factors) = select(params, channels, |p| every_channel(&p.contrast));
    let x = on_rows(&x, &rows, |r| contrast(r, &factors));
    let (rows, zooms) = select(params, channels, |p| p.low_resolution.clone());
    let x = on_rows(&x, &rows, |r| low_resolution(r, &zooms, keep_axis0));
    let (rows, gammas) = select(params, channels, |p| every_channel(&p.inverted_gamma));
    let x = on_rows(&x, &rows, |r| -gamma(&-r, &gammas));
    let (rows, gammas) = select(params, channels, |p| every_channel(&p.gamma));
    let x = on_rows(&x, &rows, |r| gamma(r, &gammas));
    x.view(size.as_slice())
}

fn every_channel(values: &Option<Vec<f64>>) -> Option<Vec<Option<f64>>> {
    values.as_ref().map(|v| v.iter().map(|&f| Some(f)).collect())
}

/// The rows (sample * channels + channel) a transform touches, with their parameters.
fn select<T>(
    params: &[SampleParameters],
    channels: usize,
    per_channel: impl Fn(&SampleParameters) -> Option<Vec<Option<T>>>,
) -> (Vec<i64>, Vec<T>) {
    let mut rows = Vec::new();
    let mut values = Vec::new();
    for (sample, p) in params.iter().enumerate() {
        for (channel, value) in per_channel(p).into_iter().flatten().enumerate() {
            if let Some(value) = value {
                rows.push((sample * channels + channel) as i64);
                values.push(value);
            }
        }
    }
    (rows, values)
}

fn on_rows(x: &Tensor, rows: &[i64], f: impl FnOnce(&Tensor) -> Tensor) -> Tensor {
    if rows.is_empty() {
        return x.shallow_clone();
    }
    let index = upload(Tensor::from_slice(rows), x.device());
    x.index_copy(0, &index, &f(&x.index_select(0, &index)))
}

/// One value per row, shaped to broadcast over the row's voxels.
fn per_row(values: &[f64], like: &Tensor) -> Tensor {
    let mut shape = vec![values.len() as i64];
    shape.resize(like.dim(), 1);
    let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    upload(Tensor::from_slice(&values).view(shape.as_slice()), like.device())
}

fn voxel_axes(x: &Tensor) -> Vec<i64> {
    (1..x.dim() as i64).collect()
}

/// Separable Gaussian blur, axis by axis, with reflect padding. Kernels of different lengths are centred
/// in the longest one: the zero taps make the wider reflect padding irrelevant.
fn blur(x: &Tensor, sigmas: &[Vec<f64>]) -> Tensor {
    let rows = sigmas.len();
    let dims = x.dim() - 1;
    (0..dims).fold(x.shallow_clone(), |x, axis| {
        let kernels: Vec<Vec<f64>> = sigmas.iter().map(|s| gaussian_kernel(s[axis])).collect();
        let taps = kernels.iter().map(Vec::len).max().expect("at least one row");
        let mut weights = vec![0f32; rows * taps];
        for (row, kernel) in kernels.iter().enumerate() {
            let start = row * taps + (taps - kernel.len()) / 2;
            for (w, &k) in weights[start..start + kernel.len()].iter_mut().zip(kernel) {
                *w = k as f32;
            }
        }
        let mut shape = vec![rows as i64, 1];
        shape.resize(dims + 2, 1);
        shape[2 + axis] = taps as i64;
        let weight = upload(Tensor::from_slice(&weights).view(shape.as_slice()), x.device());
        // torch's pad list runs from the last axis backwards
        let mut pad = vec![0i64; 2 * dims];
        pad[2 * (dims - 1 - axis)] = taps as i64 / 2;
        pad[2 * (dims - 1 - axis) + 1] = taps as i64 / 2;
        let padded = x.unsqueeze(0).pad(pad.as_slice(), "reflect", None);
        let ones = vec![1i64; dims];
        let zeros = vec![0i64; dims];
        let none = None::<Tensor>;
        let blurred = if dims == 3 {
            padded.conv3d(&weight, none, &ones, &zeros, &ones, rows as i64)
        } else {
            padded.conv2d(&weight, none, &ones, &zeros, &ones, rows as i64)
        };
        blurred.squeeze_dim(0)
    })
}

/// batchgeneratorsv2's kernel: the odd length nearest to `6 sigma + 0.5` (ties away from the rounding
/// direction as `_round_to_nearest_odd`), sampled Gaussian normalised to sum 1.
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let n = sigma * 6.0 + 0.5;
    let rounded = n.round_ties_even() as i64;
    let length = if rounded % 2 == 1 {
        rounded
    } else if n - rounded as f64 >= 0.0 {
        rounded + 1
    } else {
        rounded - 1
    };
    let half = (length - 1) as f64 / 2.0;
    let pdf: Vec<f64> = (0..length).map(|i| (-0.5 * ((i as f64 - half) / sigma).powi(2)).exp()).collect();
    let total: f64 = pdf.iter().sum();
    pdf.iter().map(|p| p / total).collect()
}

/// `(x - mean) * factor + mean`, clipped to the row's range before the transform.
fn contrast(x: &Tensor, factors: &[f64]) -> Tensor {
    let axes = voxel_axes(x);
    let mean = x.mean_dim(axes.as_slice(), true, Kind::Float);
    let (low, high) = (x.amin(axes.as_slice(), true), x.amax(axes.as_slice(), true));
    ((x - &mean) * per_row(factors, x) + &mean).clamp_tensor(Some(&low), Some(&high))
}

/// Downsampling by `zoom` (nearest-exact) and back up (linear, align_corners=False), row by row since
/// every row has its own intermediate shape.
fn low_resolution(x: &Tensor, zooms: &[f64], keep_axis0: bool) -> Tensor {
    let shape = &x.size()[1..];
    let rows: Vec<Tensor> = zooms
        .iter()
        .enumerate()
        .map(|(row, &zoom)| {
            // the zoom is a float32 tensor in batchgeneratorsv2; Python's round() rounds half to even
            let zoom = zoom as f32 as f64;
            let low: Vec<i64> = shape
                .iter()
                .enumerate()
                .map(|(a, &s)| if keep_axis0 && a == 0 { s } else { (s as f64 * zoom).round_ties_even() as i64 })
                .collect();
            let image = x.narrow(0, row as i64, 1).unsqueeze(0);
            let up = if shape.len() == 3 {
                image
                    .internal_upsample_nearest_exact3d(&low, None, None, None)
                    .upsample_trilinear3d(shape, false, None, None, None)
            } else {
                image.internal_upsample_nearest_exact2d(&low, None, None).upsample_bilinear2d(shape, false, None, None)
            };
            up.squeeze_dim(0)
        })
        .collect();
    Tensor::cat(&rows, 0)
}

/// Gamma on the row's range `[min, max]`, then the row's mean and (unbiased) standard deviation restored.
fn gamma(x: &Tensor, gammas: &[f64]) -> Tensor {
    let axes = voxel_axes(x);
    let axes = axes.as_slice();
    let (mean, std) = (x.mean_dim(axes, true, Kind::Float), x.std_dim(axes, true, true));
    let low = x.amin(axes, true);
    let range = x.amax(axes, true) - &low;
    let y = ((x - &low) / range.clamp_min(EPSILON)).pow(&per_row(gammas, x)) * &range + &low;
    let (mean_y, std_y) = (y.mean_dim(axes, true, Kind::Float), y.std_dim(axes, true, true));
    (y - mean_y) * (std / std_y.clamp_min(EPSILON)) + mean
}
