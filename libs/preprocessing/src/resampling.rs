//! nnU-Net's `resample_data_or_seg`: images with cubic B-splines (scipy's `zoom(order=3,
//! mode='nearest', grid_mode=True)` as skimage's `resize` calls it, clipped to the input range), label
//! maps label by label with linear interpolation and the >= 0.5 rule, and, for anisotropic data,
//! in-plane resizing slice by slice followed by nearest-neighbour interpolation along the thick axis.
//!
//! Interpolation is separable, so each changed axis is processed in turn: along an axis whose length
//! does not change the interpolant reproduces the samples exactly, and is skipped. Sample positions
//! follow grid mode: output voxel `o` of `m` reads input position `(o + 0.5) * n / m - 0.5`.

use ndarray::{Array2, Array3, Axis, Zip};

/// Spacing ratio above which an axis counts as anisotropic (nnU-Net's `ANISO_THRESHOLD`).
const ANISOTROPY_THRESHOLD: f64 = 3.0;
/// scipy pads by this many edge values before the spline prefilter (`_prepad_for_spline_filter`), so
/// the filter's boundary handling does not reach the image.
const SPLINE_PADDING: usize = 12;

/// How an array is resampled; nnU-Net's resampling kwargs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resampling {
    /// In-plane (or 3-D) interpolation order: 3 (cubic B-spline), 1 (linear) or 0 (nearest).
    pub order: u32,
    /// Interpolation order along the thick axis when resampling separately: 0 (nearest) or 1.
    pub order_z: u32,
    /// Resample the thick axis separately: forced on or off, or decided by the anisotropy rule.
    pub force_separate_z: Option<bool>,
}

/// The thick axis to resample separately, if any (nnU-Net's `determine_do_sep_z_and_axis`).
pub fn separate_z_axis(force: Option<bool>, current_spacing: &[f64], new_spacing: &[f64]) -> Option<usize> {
    let anisotropic = |s: &[f64]| {
        let max = s.iter().copied().fold(f64::MIN, f64::max);
        let min = s.iter().copied().fold(f64::MAX, f64::min);
        max / min > ANISOTROPY_THRESHOLD
    };
    let coarsest_axes = |s: &[f64]| {
        let max = s.iter().copied().fold(f64::MIN, f64::max);
        s.iter().enumerate().filter(|(_, v)| max / **v == 1.0).map(|(i, _)| i).collect::<Vec<_>>()
    };
    let axes = match force {
        Some(false) => return None,
        Some(true) => coarsest_axes(current_spacing),
        None if anisotropic(current_spacing) => coarsest_axes(current_spacing),
        None if anisotropic(new_spacing) => coarsest_axes(new_spacing),
        None => return None,
    };
    (axes.len() == 1).then(|| axes[0])
}

/// Interpolation along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Nearest,
    Linear,
    CubicSpline,
}

impl Kernel {
    fn of_order(order: u32) -> Self {
        match order {
            0 => Self::Nearest,
            1 => Self::Linear,
            _ => Self::CubicSpline,
        }
    }
}

/// Grid-mode source position of output voxel `o` when `n` voxels become `m`.
fn source_position(o: usize, n: usize, m: usize) -> f64 {
    (o as f64 + 0.5) * (n as f64 / m as f64) - 0.5
}

/// Cubic B-spline prefilter of one line in place (poles of the cubic spline, half-sample symmetric
/// boundary as scipy uses for mode 'nearest'; the edge padding makes the boundary immaterial).
fn prefilter_cubic(line: &mut [f64]) {
    let n = line.len();
    if n < 2 {
        return;
    }
    let z = 3f64.sqrt() - 2.0;
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    for v in line.iter_mut() {
        *v *= gain;
    }
    // causal initialisation, reflect boundary
    let z_n = z.powi(n as i32);
    let first = line[0];
    let mut sum = line[0] + z_n * line[n - 1];
    let mut z_i = z;
    for i in 1..n {
        sum += z_i * (line[i] + z_n * line[n - 1 - i]);
        z_i *= z;
    }
    line[0] = sum * z / (1.0 - z_n * z_n) + first;
    for i in 1..n {
        line[i] += z * line[i - 1];
    }
    line[n - 1] *= z / (z - 1.0);
    for i in (0..n - 1).rev() {
        line[i] = z * (line[i + 1] - line[i]);
    }
}

fn cubic_weights(t: f64) -> [f64; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    let u = 1.0 - t;
    [u * u * u / 6.0, (4.0 - 6.0 * t2 + 3.0 * t3) / 6.0, (1.0 + 3.0 * t + 3.0 * t2 - 3.0 * t3) / 6.0, t3 / 6.0]
}

/// Resamples every line of `input` along `axis` to `m` samples.
fn resample_axis(input: &Array3<f64>, axis: usize, m: usize, kernel: Kernel) -> Array3<f64> {
    let n = input.len_of(Axis(axis));
    let mut shape = [input.shape()[0], input.shape()[1], input.shape()[2]];
    shape[axis] = m;
    let mut output = Array3::<f64>::zeros(shape);
    let clamp = |i: i64| i.clamp(0, n as i64 - 1) as usize;
    // per output sample: first source index and weights
    let taps: Vec<(i64, [f64; 4])> = (0..m)
        .map(|o| {
            let x = source_position(o, n, m);
            match kernel {
                Kernel::Nearest => ((x + 0.5).floor() as i64, [1.0, 0.0, 0.0, 0.0]),
                Kernel::Linear => {
                    let i = x.floor();
                    (i as i64, [1.0 - (x - i), x - i, 0.0, 0.0])
                }
                Kernel::CubicSpline => {
                    let x = x + SPLINE_PADDING as f64;
                    let i = x.floor();
                    (i as i64 - 1, cubic_weights(x - i))
                }
            }
        })
        .collect();
    let mut line = vec![0.0; n + 2 * SPLINE_PADDING];
    Zip::from(output.lanes_mut(Axis(axis))).and(input.lanes(Axis(axis))).for_each(|mut out, src| match kernel {
        Kernel::Nearest => {
            for (o, &(i, _)) in out.iter_mut().zip(&taps) {
                *o = src[clamp(i)];
            }
        }
        Kernel::Linear => {
            for (o, &(i, w)) in out.iter_mut().zip(&taps) {
                *o = w[0] * src[clamp(i)] + w[1] * src[clamp(i + 1)];
            }
        }
        Kernel::CubicSpline => {
            let (first, last) = (src[0], src[n - 1]);
            line[..SPLINE_PADDING].fill(first);
            for (l, &s) in line[SPLINE_PADDING..SPLINE_PADDING + n].iter_mut().zip(src.iter()) {
                *l = s;
            }
            line[SPLINE_PADDING + n..].fill(last);
            prefilter_cubic(&mut line);
            for (o, &(i, w)) in out.iter_mut().zip(&taps) {
                let i = i as usize;
                *o = w[0] * line[i] + w[1] * line[i + 1] + w[2] * line[i + 2] + w[3] * line[i + 3];
            }
        }
    });
    output
}

/// The linear map `m x n` that resampling one line of `n` samples to `m` applies with interpolation
/// `order` (row `o` holds output sample `o`'s weights), for devices that resample by matrix products.
pub fn resampling_matrix(n: usize, m: usize, order: u32) -> Array2<f64> {
    let identity = Array3::from_shape_fn((1, n, n), |(_, j, i)| f64::from(u8::from(i == j)));
    // line j of the output is the response to unit sample j, i.e. column j of the matrix
    let responses = resample_axis(&identity, 2, m, Kernel::of_order(order));
    responses.index_axis_move(Axis(0), 0).reversed_axes().as_standard_layout().into_owned()
}

/// Whether resampling with `order` clips to the input's range (skimage's `clip=True` matters only for
/// the cubic spline, whose overshoot can leave it).
pub fn clips_to_input_range(order: u32) -> bool {
    Kernel::of_order(order) == Kernel::CubicSpline
}

/// skimage's `resize(order, mode='edge', clip=True, anti_aliasing=False)` of a whole array, or of
/// every slice along `slice_axis` separately (then clipped slice by slice, as nnU-Net resizes slices).
fn resize(input: Array3<f64>, new_shape: [usize; 3], order: u32, slice_axis: Option<usize>) -> Array3<f64> {
    let kernel = Kernel::of_order(order);
    // clip=True clips to the input's range (per slice when slices are resized on their own); taken
    // first, so that the input can be dropped as soon as the first axis is resampled
    let range = |values: ndarray::ArrayView<f64, _>| {
        values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
    };
    let ranges: Vec<(f64, f64)> = match (clips_to_input_range(order), slice_axis) {
        (true, None) => vec![range(input.view().into_dyn())],
        (true, Some(axis)) => input.axis_iter(Axis(axis)).map(|slice| range(slice.into_dyn())).collect(),
        (false, _) => Vec::new(),
    };
    let mut current = input;
    for (axis, &size) in new_shape.iter().enumerate() {
        if Some(axis) != slice_axis && current.len_of(Axis(axis)) != size {
            current = resample_axis(&current, axis, size, kernel);
        }
    }
    match (ranges.as_slice(), slice_axis) {
        ([], _) => {}
        (&[(min, max)], None) => current.mapv_inplace(|v| v.clamp(min, max)),
        (ranges, Some(axis)) => {
            for (mut out, &(min, max)) in current.axis_iter_mut(Axis(axis)).zip(ranges) {
                out.mapv_inplace(|v| v.clamp(min, max));
            }
        }
        _ => unreachable!("one range without a slice axis"),
    }
    current
}

/// Resamples one channel of image data (or logits/probabilities) to `new_shape`.
pub fn resample_image(
    input: &Array3<f32>,
    new_shape: [usize; 3],
    separate_axis: Option<usize>,
    how: Resampling,
) -> Array3<f32> {
    if input.shape() == new_shape {
        return input.clone();
    }
    let data = input.mapv(f64::from);
    let resized = match separate_axis {
        None => resize(data, new_shape, how.order, None),
        Some(axis) => {
            let in_plane =
                resize(data, in_plane_shape(new_shape, axis, input.len_of(Axis(axis))), how.order, Some(axis));
            if in_plane.len_of(Axis(axis)) == new_shape[axis] {
                in_plane
            } else {
                resample_axis(&in_plane, axis, new_shape[axis], Kernel::of_order(how.order_z))
            }
        }
    };
    resized.mapv(|v| v as f32)
}

fn in_plane_shape(new_shape: [usize; 3], axis: usize, current: usize) -> [usize; 3] {
    let mut shape = new_shape;
    shape[axis] = current;
    shape
}

/// Resamples a label map as batchgenerators' `resize_segmentation` does: every label's 0/1 indicator
/// is resized with `order` and each voxel takes the label with the highest score (the first such
/// label on ties), unless the nearest-neighbour label is among the tied best, which then wins. Along a
/// separate thick axis labels are looked up by nearest neighbour (order_z 0) or, with order_z 1, by
/// nnU-Net's rounded-indicator rule.
pub fn resample_labels(
    input: &Array3<i16>,
    new_shape: [usize; 3],
    separate_axis: Option<usize>,
    how: Resampling,
) -> Array3<i16> {
    if input.shape() == new_shape {
        return input.clone();
    }
    match separate_axis {
        None => resize_labels(input, new_shape, how.order, None),
        Some(axis) => {
            let plane = in_plane_shape(new_shape, axis, input.len_of(Axis(axis)));
            let in_plane = resize_labels(input, plane, how.order, Some(axis));
            if plane[axis] == new_shape[axis] {
                return in_plane;
            }
            match Kernel::of_order(how.order_z) {
                Kernel::Nearest => {
                    resample_axis(&in_plane.mapv(f64::from), axis, new_shape[axis], Kernel::Nearest).mapv(|v| v as i16)
                }
                kernel => {
                    let mut output = Array3::<i16>::zeros(new_shape);
                    for label in sorted_labels(&in_plane) {
                        let mask = in_plane.mapv(|v| f64::from(u8::from(v == label)));
                        let score = resample_axis(&mask, axis, new_shape[axis], kernel);
                        Zip::from(&mut output).and(&score).for_each(|o, &s| {
                            if s.round_ties_even() > 0.5 {
                                *o = label;
                            }
                        });
                    }
                    output
                }
            }
        }
    }
}

fn sorted_labels(labels: &Array3<i16>) -> Vec<i16> {
    // a presence table rather than a sorted copy of every voxel
    let mut present = vec![false; 1 << 16];
    labels.iter().for_each(|&v| present[usize::from(v as u16)] = true);
    let mut values: Vec<i16> = (0..1usize << 16).filter(|&i| present[i]).map(|i| i as u16 as i16).collect();
    values.sort_unstable();
    values
}

/// Per-label resize with the argmax rule and nearest-neighbour tie-break (see `resample_labels`).
/// Order-0 resize (`resize` with the nearest kernel) of labels, by index lookup: no float copies.
fn resize_nearest(input: &Array3<i16>, new_shape: [usize; 3], slice_axis: Option<usize>) -> Array3<i16> {
    let source: Vec<Vec<usize>> = (0..3)
        .map(|axis| {
            let (n, m) = (input.len_of(Axis(axis)), new_shape[axis]);
            (0..m)
                .map(|o| {
                    if Some(axis) == slice_axis || n == m {
                        o
                    } else {
                        ((source_position(o, n, m) + 0.5).floor().max(0.0) as usize).min(n - 1)
                    }
                })
                .collect()
        })
        .collect();
    Array3::from_shape_fn(new_shape, |(z, y, x)| input[[source[0][z], source[1][y], source[2][x]]])
}

fn resize_labels(input: &Array3<i16>, new_shape: [usize; 3], order: u32, slice_axis: Option<usize>) -> Array3<i16> {
    let labels = sorted_labels(input);
    if labels.len() == 1 {
        return Array3::from_elem(new_shape, labels[0]);
    }
    let nearest = resize_nearest(input, new_shape, slice_axis);
    let mut best = Array3::<f64>::zeros(new_shape);
    let mut winner = Array3::<u16>::zeros(new_shape);
    let mut nearest_score = Array3::<f64>::zeros(new_shape);
    for (index, &label) in labels.iter().enumerate() {
        let score = resize(input.mapv(|v| f64::from(u8::from(v == label))), new_shape, order, slice_axis);
        Zip::from(&mut best).and(&mut winner).and(&mut nearest_score).and(&score).and(&nearest).for_each(
            |best, winner, nearest_score, &score, &nearest| {
                if index == 0 || score > *best {
                    *best = score;
                    *winner = index as u16;
                }
                if nearest == label {
                    *nearest_score = score;
                }
            },
        );
    }
    let mut output = Array3::<i16>::zeros(new_shape);
    Zip::from(&mut output).and(&winner).and(&best).and(&nearest_score).and(&nearest).for_each(
        |out, &winner, &best, &nearest_score, &nearest| {
            *out = if nearest_score > 0.0 && nearest_score == best { nearest } else { labels[usize::from(winner)] };
        },
    );
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separate_z_rule() {
        assert_eq!(separate_z_axis(None, &[4.0, 1.0, 1.0], &[3.0, 1.0, 1.0]), Some(0));
        assert_eq!(separate_z_axis(None, &[1.0, 1.0, 1.0], &[1.0, 5.0, 1.0]), Some(1));
        assert_eq!(separate_z_axis(None, &[2.0, 1.0, 1.0], &[2.0, 1.0, 1.0]), None);
        // two equally coarse axes: no single thick axis, no separate resampling
        assert_eq!(separate_z_axis(None, &[4.0, 4.0, 1.0], &[1.0, 1.0, 1.0]), None);
        assert_eq!(separate_z_axis(Some(false), &[4.0, 1.0, 1.0], &[1.0, 1.0, 1.0]), None);
    }

    #[test]
    fn cubic_spline_reproduces_samples_and_quadratics() {
        // Cubic B-spline interpolation reproduces a quadratic exactly, except within a few samples of
        // the edges, where the edge padding bends it (the error decays like 0.268^distance).
        let n = 40;
        let input = Array3::from_shape_fn((1, 1, n), |(_, _, i)| (i as f64 - 20.0).powi(2));
        let out = resample_axis(&input, 2, 2 * n, Kernel::CubicSpline);
        for o in 30..50 {
            let x = source_position(o, n, 2 * n) - 20.0;
            assert!((out[[0, 0, o]] - x * x).abs() < 1e-6, "{o}: {} vs {}", out[[0, 0, o]], x * x);
        }
        let same = resample_axis(&input, 2, n, Kernel::CubicSpline);
        for i in 0..n {
            assert!((same[[0, 0, i]] - input[[0, 0, i]]).abs() < 1e-9);
        }
    }

    #[test]
    fn linear_and_nearest_grid_positions() {
        let input = Array3::from_shape_fn((1, 1, 4), |(_, _, i)| i as f64 * 10.0);
        // 4 -> 8: positions -0.25, 0.25, 0.75, ..., 3.25 (clamped at the ends)
        let linear = resample_axis(&input, 2, 8, Kernel::Linear);
        assert_eq!(linear.iter().copied().collect::<Vec<_>>(), [0.0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30.0]);
        // 4 -> 2: positions 0.5 and 2.5 -> nearest rounds half up: 1 and 3
        let nearest = resample_axis(&input, 2, 2, Kernel::Nearest);
        assert_eq!(nearest.iter().copied().collect::<Vec<_>>(), [10.0, 30.0]);
    }

    #[test]
    fn resampling_matrix_applies_what_resample_axis_does() {
        let input = Array3::from_shape_fn((1, 1, 11), |(_, _, i)| ((i * 7) % 5) as f64 - 1.5);
        for (m, order) in [(17, 3), (6, 3), (17, 1), (4, 0)] {
            let matrix = resampling_matrix(11, m, order);
            let by_matrix = matrix.dot(&input.index_axis(Axis(0), 0).index_axis(Axis(0), 0));
            let direct = resample_axis(&input, 2, m, Kernel::of_order(order));
            for o in 0..m {
                assert!((by_matrix[o] - direct[[0, 0, o]]).abs() < 1e-12, "m {m} order {order} at {o}");
            }
        }
        // linear weights of each output sample sum to one
        assert!(resampling_matrix(5, 9, 1).rows().into_iter().all(|r| (r.sum() - 1.0).abs() < 1e-12));
    }

    #[test]
    fn labels_take_the_argmax_and_nearest_neighbour_breaks_ties() {
        let how = Resampling { order: 1, order_z: 0, force_separate_z: None };
        let input = Array3::from_shape_fn((1, 2, 2), |(_, y, x)| (y * 2 + x) as i16 - 1);
        let up = resample_labels(&input, [1, 4, 4], None, how);
        let values: std::collections::BTreeSet<i16> = up.iter().copied().collect();
        assert_eq!(values.into_iter().collect::<Vec<_>>(), [-1, 0, 1, 2]);
        assert_eq!(up[[0, 0, 0]], -1);
        assert_eq!(up[[0, 3, 3]], 2);
        // [0, 2] -> 3 voxels: the middle one scores 0.5 for both; its nearest neighbour (position 0.5
        // rounds up to 1) is the 2. No intermediate label 1 appears.
        let edge = Array3::from_shape_vec((1, 1, 2), vec![0i16, 2]).unwrap();
        let three = resample_labels(&edge, [1, 1, 3], None, how);
        assert_eq!(three.iter().copied().collect::<Vec<_>>(), [0, 2, 2]);
        // [1, 2, 3, 3] -> 2 voxels at positions 0.5 and 2.5: the first ties 1 and 2 at 0.5 and its
        // nearest neighbour (index 1) is a 2, so 2 wins although 1 comes first
        let spread = Array3::from_shape_vec((1, 1, 4), vec![1i16, 2, 3, 3]).unwrap();
        let two = resample_labels(&spread, [1, 1, 2], None, how);
        assert_eq!(two.iter().copied().collect::<Vec<_>>(), [2, 3]);
        // four labels meeting at a point score 0.25 each: no label reaches 0.5, the nearest one wins
        // (the old >= 0.5 rule left such voxels at 0)
        let corner = Array3::from_shape_vec((1, 2, 2), vec![1i16, 2, 3, 4]).unwrap();
        let one = resample_labels(&corner, [1, 1, 1], None, how);
        assert_eq!(one[[0, 0, 0]], 4);
    }
}
