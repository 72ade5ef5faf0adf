//! nnU-Net's `resample_data_or_seg`: images with cubic B-splines (scipy's `zoom(order=3,
//! mode='nearest', grid_mode=True)` as skimage's `resize` calls it, clipped to the input range), label
//! maps label by label with linear interpolation and the >= 0.5 rule, and, for anisotropic data,
//! in-plane resizing slice by slice followed by nearest-neighbour interpolation along the thick axis.
//!
//! Interpolation is separable, so each changed axis is processed in turn: along an axis whose length
//! does not change the interpolant reproduces the samples exactly, and is skipped. Sample positions
//! follow grid mode: output voxel `o` of `m` reads input position `(o + 0.5) * n / m - 0.5`.

use ndarray::{Array2, Array3, ArrayView3, Axis, Zip};

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

/// Nearest-neighbour source of output voxel `o` when `n` voxels become `m` (rounding half up).
fn nearest_source(o: usize, n: usize, m: usize) -> usize {
    ((source_position(o, n, m) + 0.5).floor().max(0.0) as usize).min(n - 1)
}

/// One output voxel of a linear resize along an axis: its two sources and their weights.
type LinearTap = ([usize; 2], [f64; 2]);

/// Linear interpolation of output voxel `o` when `n` voxels become `m`: its two sources (clamped to the
/// edge) and their weights.
fn linear_tap(o: usize, n: usize, m: usize) -> LinearTap {
    let x = source_position(o, n, m);
    let i = x.floor();
    let clamp = |i: i64| i.clamp(0, n as i64 - 1) as usize;
    ([clamp(i as i64), clamp(i as i64 + 1)], [1.0 - (x - i), x - i])
}

/// Lines resampled together: the prefilter's recursions and the interpolation run across a block of
/// lines at once (vectorised, and reading a strided axis a cache line at a time instead of a value),
/// while each line's arithmetic stays in the order it has on its own.
const BLOCK: usize = 32;

/// Cubic B-spline prefilter, in place, of the `len`-sample lines of a block (row `i` holds sample `i`
/// of every line): poles of the cubic spline, half-sample symmetric boundary as scipy uses for mode
/// 'nearest'; the edge padding makes the boundary immaterial.
fn prefilter_cubic(block: &mut [f64], len: usize) {
    let z = 3f64.sqrt() - 2.0;
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    let block = &mut block[..len * BLOCK];
    for v in block.iter_mut() {
        *v *= gain;
    }
    // causal initialisation, reflect boundary
    let z_n = z.powi(len as i32);
    let row = |block: &[f64], i: usize| -> [f64; BLOCK] { block[i * BLOCK..][..BLOCK].try_into().expect("a row") };
    let (first, last) = (row(block, 0), row(block, len - 1));
    let mut sum: [f64; BLOCK] = std::array::from_fn(|b| first[b] + z_n * last[b]);
    let mut z_i = z;
    for i in 1..len {
        let (ahead, behind) = (&block[i * BLOCK..][..BLOCK], &block[(len - 1 - i) * BLOCK..][..BLOCK]);
        for ((s, &a), &b) in sum.iter_mut().zip(ahead).zip(behind) {
            *s += z_i * (a + z_n * b);
        }
        z_i *= z;
    }
    let denominator = 1.0 - z_n * z_n;
    for ((v, &s), &f) in block[..BLOCK].iter_mut().zip(&sum).zip(&first) {
        *v = s * z / denominator + f;
    }
    for i in 1..len {
        let (done, rest) = block.split_at_mut(i * BLOCK);
        for (v, &previous) in rest[..BLOCK].iter_mut().zip(&done[(i - 1) * BLOCK..]) {
            *v += z * previous;
        }
    }
    let end = z / (z - 1.0);
    for v in &mut block[(len - 1) * BLOCK..] {
        *v *= end;
    }
    for i in (0..len - 1).rev() {
        let (rest, done) = block.split_at_mut((i + 1) * BLOCK);
        for (v, &next) in rest[i * BLOCK..].iter_mut().zip(&done[..BLOCK]) {
            *v = z * (next - *v);
        }
    }
}

fn cubic_weights(t: f64) -> [f64; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    let u = 1.0 - t;
    [u * u * u / 6.0, (4.0 - 6.0 * t2 + 3.0 * t3) / 6.0, (1.0 + 3.0 * t + 3.0 * t2 - 3.0 * t3) / 6.0, t3 / 6.0]
}

/// Resamples every line of `input` along `axis` to `m` samples.
fn resample_axis<T: Copy + Into<f64>>(input: ArrayView3<T>, axis: usize, m: usize, kernel: Kernel) -> Array3<f64> {
    let input = input.as_standard_layout();
    let source = input.as_slice().expect("standard layout");
    let shape = [input.shape()[0], input.shape()[1], input.shape()[2]];
    let n = shape[axis];
    // the array as (outer, n, inner): line l starts at (l / inner) * n * inner + l % inner, step inner
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut output_shape = shape;
    output_shape[axis] = m;
    let mut output = vec![0.0; outer * m * inner];
    let pad = if kernel == Kernel::CubicSpline { SPLINE_PADDING } else { 0 };
    let len = n + 2 * pad;
    // per output sample: the rows of the (padded) block it reads, and their weights
    let taps: Vec<([usize; 4], [f64; 4])> = (0..m)
        .map(|o| match kernel {
            Kernel::Nearest => ([nearest_source(o, n, m), 0, 0, 0], [1.0, 0.0, 0.0, 0.0]),
            Kernel::Linear => {
                let ([i, j], [v, w]) = linear_tap(o, n, m);
                ([i, j, 0, 0], [v, w, 0.0, 0.0])
            }
            Kernel::CubicSpline => {
                let x = source_position(o, n, m) + SPLINE_PADDING as f64;
                let i = x.floor() as usize - 1;
                ([i, i + 1, i + 2, i + 3], cubic_weights(x - x.floor()))
            }
        })
        .collect();
    let lines = outer * inner;
    let mut block = vec![0.0; len * BLOCK];
    let mut values = [0.0; BLOCK];
    for first_line in (0..lines).step_by(BLOCK) {
        let count = BLOCK.min(lines - first_line);
        let start = |b: usize, length: usize| {
            let line = first_line + b;
            line / inner * length * inner + line % inner
        };
        for b in 0..count {
            let start = start(b, n);
            for k in 0..n {
                block[(pad + k) * BLOCK + b] = source[start + k * inner].into();
            }
        }
        if kernel == Kernel::CubicSpline {
            let (head, rest) = block.split_at_mut(pad * BLOCK);
            let (body, tail) = rest.split_at_mut(n * BLOCK);
            for row in head.chunks_exact_mut(BLOCK) {
                row.copy_from_slice(&body[..BLOCK]);
            }
            for row in tail.chunks_exact_mut(BLOCK) {
                row.copy_from_slice(&body[(n - 1) * BLOCK..]);
            }
            prefilter_cubic(&mut block, len);
        }
        let row = |i: usize| &block[i * BLOCK..][..BLOCK];
        for (o, &(rows, w)) in taps.iter().enumerate() {
            match kernel {
                Kernel::Nearest => values.copy_from_slice(row(rows[0])),
                Kernel::Linear => {
                    for (v, (&a, &b)) in values.iter_mut().zip(row(rows[0]).iter().zip(row(rows[1]))) {
                        *v = w[0] * a + w[1] * b;
                    }
                }
                Kernel::CubicSpline => {
                    let (r0, r1, r2, r3) = (row(rows[0]), row(rows[1]), row(rows[2]), row(rows[3]));
                    for (b, v) in values.iter_mut().enumerate() {
                        *v = w[0] * r0[b] + w[1] * r1[b] + w[2] * r2[b] + w[3] * r3[b];
                    }
                }
            }
            for (b, &v) in values[..count].iter().enumerate() {
                output[start(b, m) + o * inner] = v;
            }
        }
    }
    Array3::from_shape_vec(output_shape, output).expect("the output's shape")
}

/// The linear map `m x n` that resampling one line of `n` samples to `m` applies with interpolation
/// `order` (row `o` holds output sample `o`'s weights), for devices that resample by matrix products.
pub fn resampling_matrix(n: usize, m: usize, order: u32) -> Array2<f64> {
    let identity = Array3::from_shape_fn((1, n, n), |(_, j, i)| f64::from(u8::from(i == j)));
    // line j of the output is the response to unit sample j, i.e. column j of the matrix
    let responses = resample_axis(identity.view(), 2, m, Kernel::of_order(order));
    responses.index_axis_move(Axis(0), 0).reversed_axes().as_standard_layout().into_owned()
}

/// Whether resampling with `order` clips to the input's range (skimage's `clip=True` matters only for
/// the cubic spline, whose overshoot can leave it).
pub fn clips_to_input_range(order: u32) -> bool {
    Kernel::of_order(order) == Kernel::CubicSpline
}

/// skimage's `resize(order, mode='edge', clip=True, anti_aliasing=False)` of a whole array, or of
/// every slice along `slice_axis` separately (then clipped slice by slice, as nnU-Net resizes slices),
/// each clipped value converted by `finish`. The passes along axes 1 and 2 run plane by plane after
/// the pass along axis 0, so that only that one pass leaves a volume of intermediate values.
fn resize<T: Copy + Into<f64>, O>(
    input: ArrayView3<T>,
    new_shape: [usize; 3],
    order: u32,
    slice_axis: Option<usize>,
    finish: impl Fn(f64) -> O,
) -> Array3<O> {
    let kernel = Kernel::of_order(order);
    // clip=True clips to the input's range (per slice when slices are resized on their own)
    let range = |values: ndarray::ArrayView<T, _>| {
        values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v.into()), hi.max(v.into())))
    };
    let ranges: Vec<(f64, f64)> = match (clips_to_input_range(order), slice_axis) {
        (true, None) => vec![range(input.into_dyn())],
        (true, Some(axis)) => input.axis_iter(Axis(axis)).map(|slice| range(slice.into_dyn())).collect(),
        (false, _) => Vec::new(),
    };
    // the value at output voxel [z, y, x], clipped
    let clipped = |at: [usize; 3], v: f64| match (ranges.as_slice(), slice_axis) {
        ([], _) => v,
        (&[(min, max)], None) => v.clamp(min, max),
        (ranges, Some(axis)) => v.clamp(ranges[at[axis]].0, ranges[at[axis]].1),
        _ => unreachable!("one range without a slice axis"),
    };
    let resampled = |axis: usize| Some(axis) != slice_axis && input.len_of(Axis(axis)) != new_shape[axis];
    let along_0 = resampled(0).then(|| resample_axis(input, 0, new_shape[0], kernel));
    let mut output = Vec::with_capacity(new_shape.iter().product());
    // one plane through the passes along axes 1 and 2 (as f64, also where neither applies)
    fn planar<S: Copy + Into<f64>>(
        plane: ArrayView3<S>,
        new_shape: [usize; 3],
        kernel: Kernel,
        resampled: [bool; 2],
    ) -> Array3<f64> {
        let along_1 = resampled[0].then(|| resample_axis(plane, 1, new_shape[1], kernel));
        match (along_1, resampled[1]) {
            (Some(along_1), true) => resample_axis(along_1.view(), 2, new_shape[2], kernel),
            (None, true) => resample_axis(plane, 2, new_shape[2], kernel),
            (Some(along_1), false) => along_1,
            (None, false) => plane.mapv(Into::into),
        }
    }
    let axes = [resampled(1), resampled(2)];
    for z in 0..new_shape[0] {
        let plane = ndarray::s![z..z + 1, .., ..];
        let done = match &along_0 {
            Some(along_0) => planar(along_0.slice(plane), new_shape, kernel, axes),
            None => planar(input.slice(plane), new_shape, kernel, axes),
        };
        for (y, row) in done.index_axis(Axis(0), 0).rows().into_iter().enumerate() {
            output.extend(row.iter().enumerate().map(|(x, &v)| finish(clipped([z, y, x], v))));
        }
    }
    Array3::from_shape_vec(new_shape, output).expect("the output's shape")
}

/// Resamples one channel of image data (or logits/probabilities) to `new_shape`.
pub fn resample_image(
    input: ArrayView3<f32>,
    new_shape: [usize; 3],
    separate_axis: Option<usize>,
    how: Resampling,
) -> Array3<f32> {
    if input.shape() == new_shape {
        return input.to_owned();
    }
    let narrow = |v: f64| v as f32;
    match separate_axis {
        None => resize(input, new_shape, how.order, None, narrow),
        Some(axis) => {
            let plane = in_plane_shape(new_shape, axis, input.len_of(Axis(axis)));
            if plane[axis] == new_shape[axis] {
                return resize(input, plane, how.order, Some(axis), narrow);
            }
            let in_plane = resize(input, plane, how.order, Some(axis), |v| v);
            resample_axis(in_plane.view(), axis, new_shape[axis], Kernel::of_order(how.order_z)).mapv(narrow)
        }
    }
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
    input: Array3<i16>,
    new_shape: [usize; 3],
    separate_axis: Option<usize>,
    how: Resampling,
) -> Array3<i16> {
    if input.shape() == new_shape {
        return input;
    }
    match separate_axis {
        None => resize_labels(&input, new_shape, how.order, None),
        Some(axis) => {
            let plane = in_plane_shape(new_shape, axis, input.len_of(Axis(axis)));
            let in_plane = resize_labels(&input, plane, how.order, Some(axis));
            if plane[axis] == new_shape[axis] {
                return in_plane;
            }
            match Kernel::of_order(how.order_z) {
                Kernel::Nearest => resize_nearest(&in_plane, new_shape, None),
                kernel => {
                    let mut output = Array3::<i16>::zeros(new_shape);
                    for label in sorted_labels(&in_plane) {
                        let mask = in_plane.mapv(|v| u8::from(v == label));
                        let score = resample_axis(mask.view(), axis, new_shape[axis], kernel);
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

/// Per axis, the source index of each output index for a nearest-neighbour resize; an axis that is
/// not resampled (its length is kept, or it is `slice_axis`) maps each index to itself.
fn nearest_sources(input: [usize; 3], new_shape: [usize; 3], slice_axis: Option<usize>) -> [Vec<usize>; 3] {
    [0, 1, 2].map(|axis| {
        let (n, m) = (input[axis], new_shape[axis]);
        (0..m).map(|o| if Some(axis) == slice_axis || n == m { o } else { nearest_source(o, n, m) }).collect()
    })
}

/// Order-0 resize (`resize` with the nearest kernel) of labels, by index lookup: no float copies.
fn resize_nearest(input: &Array3<i16>, new_shape: [usize; 3], slice_axis: Option<usize>) -> Array3<i16> {
    let source = nearest_sources(input.dim().into(), new_shape, slice_axis);
    Array3::from_shape_fn(new_shape, |(z, y, x)| input[[source[0][z], source[1][y], source[2][x]]])
}

/// Per-label resize with the argmax rule and nearest-neighbour tie-break (see `resample_labels`).
fn resize_labels(input: &Array3<i16>, new_shape: [usize; 3], order: u32, slice_axis: Option<usize>) -> Array3<i16> {
    match Kernel::of_order(order) {
        // every indicator is 1 at its nearest neighbour and 0 elsewhere: the nearest label wins
        Kernel::Nearest => resize_nearest(input, new_shape, slice_axis),
        Kernel::Linear => resize_labels_linear(input, new_shape, slice_axis),
        Kernel::CubicSpline => resize_labels_by_indicators(input, new_shape, order, slice_axis),
    }
}

/// The linear case of `resize_labels` in one pass over the output: a label's linearly resized
/// indicator at a voxel depends only on the (up to) 8 source voxels around it, and is 0 for labels not
/// among them, so only those labels are scored. Each score is computed with the arithmetic of the
/// separable passes (axis 0, then 1, then 2), so ties fall as they do there.
fn resize_labels_linear(input: &Array3<i16>, new_shape: [usize; 3], slice_axis: Option<usize>) -> Array3<i16> {
    let shape: [usize; 3] = input.dim().into();
    let input = input.as_standard_layout();
    let source = input.as_slice().expect("standard layout");
    // per axis and output index: the two source indices and their weights (`None`: not resampled)
    let taps: [Vec<Option<LinearTap>>; 3] = [0, 1, 2].map(|axis| {
        let (n, m) = (shape[axis], new_shape[axis]);
        (0..m).map(|o| (Some(axis) != slice_axis && n != m).then(|| linear_tap(o, n, m))).collect()
    });
    let nearest = nearest_sources(shape, new_shape, slice_axis);
    let strides = [shape[1] * shape[2], shape[2], 1];
    let corners = |axis: usize, o: usize| taps[axis][o].map_or([o, o], |(i, _)| i).map(|i| i * strides[axis]);
    // a separable pass along one axis: its weights applied to the values at its two sources
    let pass = |axis: usize, o: usize, value: &dyn Fn(usize) -> f64| match taps[axis][o] {
        Some((_, w)) => w[0] * value(0) + w[1] * value(1),
        None => value(0),
    };
    let mut output = Vec::with_capacity(new_shape.iter().product());
    for z in 0..new_shape[0] {
        let zs = corners(0, z);
        for y in 0..new_shape[1] {
            let ys = corners(1, y);
            for x in 0..new_shape[2] {
                let xs = corners(2, x);
                let at = |c: usize| source[zs[c >> 2] + ys[(c >> 1) & 1] + xs[c & 1]];
                let first = at(0);
                if (1..8).all(|c| at(c) == first) {
                    output.push(first);
                    continue;
                }
                let score = |label: i16| {
                    let indicator = |c: usize| f64::from(u8::from(at(c) == label));
                    pass(2, x, &|xi| pass(1, y, &|yi| pass(0, z, &|zi| indicator(zi << 2 | yi << 1 | xi))))
                };
                let mut labels: [i16; 8] = std::array::from_fn(at);
                labels.sort_unstable();
                // the first label (in ascending order) with the highest score
                let (mut winner, mut best) = (labels[0], score(labels[0]));
                for (i, &label) in labels.iter().enumerate().skip(1) {
                    if label != labels[i - 1] {
                        let s = score(label);
                        if s > best {
                            (winner, best) = (label, s);
                        }
                    }
                }
                let nearest = source[nearest[0][z] * strides[0] + nearest[1][y] * strides[1] + nearest[2][x]];
                let nearest_score = score(nearest);
                output.push(if nearest_score > 0.0 && nearest_score == best { nearest } else { winner });
            }
        }
    }
    Array3::from_shape_vec(new_shape, output).expect("the output's shape")
}

/// `resize_labels` for any order: every label's indicator resized in full.
fn resize_labels_by_indicators(
    input: &Array3<i16>,
    new_shape: [usize; 3],
    order: u32,
    slice_axis: Option<usize>,
) -> Array3<i16> {
    let labels = sorted_labels(input);
    if labels.len() == 1 {
        return Array3::from_elem(new_shape, labels[0]);
    }
    let nearest = resize_nearest(input, new_shape, slice_axis);
    let mut best = Array3::<f64>::zeros(new_shape);
    let mut winner = Array3::<u16>::zeros(new_shape);
    let mut nearest_score = Array3::<f64>::zeros(new_shape);
    for (index, &label) in labels.iter().enumerate() {
        let indicator = input.mapv(|v| u8::from(v == label));
        let score = resize(indicator.view(), new_shape, order, slice_axis, |v| v);
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
        let out = resample_axis(input.view(), 2, 2 * n, Kernel::CubicSpline);
        for o in 30..50 {
            let x = source_position(o, n, 2 * n) - 20.0;
            assert!((out[[0, 0, o]] - x * x).abs() < 1e-6, "{o}: {} vs {}", out[[0, 0, o]], x * x);
        }
        let same = resample_axis(input.view(), 2, n, Kernel::CubicSpline);
        for i in 0..n {
            assert!((same[[0, 0, i]] - input[[0, 0, i]]).abs() < 1e-9);
        }
    }

    #[test]
    fn linear_and_nearest_grid_positions() {
        let input = Array3::from_shape_fn((1, 1, 4), |(_, _, i)| i as f64 * 10.0);
        // 4 -> 8: positions -0.25, 0.25, 0.75, ..., 3.25 (clamped at the ends)
        let linear = resample_axis(input.view(), 2, 8, Kernel::Linear);
        assert_eq!(linear.iter().copied().collect::<Vec<_>>(), [0.0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30.0]);
        // 4 -> 2: positions 0.5 and 2.5 -> nearest rounds half up: 1 and 3
        let nearest = resample_axis(input.view(), 2, 2, Kernel::Nearest);
        assert_eq!(nearest.iter().copied().collect::<Vec<_>>(), [10.0, 30.0]);
    }

    #[test]
    fn resampling_matrix_applies_what_resample_axis_does() {
        let input = Array3::from_shape_fn((1, 1, 11), |(_, _, i)| ((i * 7) % 5) as f64 - 1.5);
        for (m, order) in [(17, 3), (6, 3), (17, 1), (4, 0)] {
            let matrix = resampling_matrix(11, m, order);
            let by_matrix = matrix.dot(&input.index_axis(Axis(0), 0).index_axis(Axis(0), 0));
            let direct = resample_axis(input.view(), 2, m, Kernel::of_order(order));
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
        let up = resample_labels(input, [1, 4, 4], None, how);
        let values: std::collections::BTreeSet<i16> = up.iter().copied().collect();
        assert_eq!(values.into_iter().collect::<Vec<_>>(), [-1, 0, 1, 2]);
        assert_eq!(up[[0, 0, 0]], -1);
        assert_eq!(up[[0, 3, 3]], 2);
        // [0, 2] -> 3 voxels: the middle one scores 0.5 for both; its nearest neighbour (position 0.5
        // rounds up to 1) is the 2. No intermediate label 1 appears.
        let edge = Array3::from_shape_vec((1, 1, 2), vec![0i16, 2]).unwrap();
        let three = resample_labels(edge, [1, 1, 3], None, how);
        assert_eq!(three.iter().copied().collect::<Vec<_>>(), [0, 2, 2]);
        // [1, 2, 3, 3] -> 2 voxels at positions 0.5 and 2.5: the first ties 1 and 2 at 0.5 and its
        // nearest neighbour (index 1) is a 2, so 2 wins although 1 comes first
        let spread = Array3::from_shape_vec((1, 1, 4), vec![1i16, 2, 3, 3]).unwrap();
        let two = resample_labels(spread, [1, 1, 2], None, how);
        assert_eq!(two.iter().copied().collect::<Vec<_>>(), [2, 3]);
        // four labels meeting at a point score 0.25 each: no label reaches 0.5, the nearest one wins
        // (the old >= 0.5 rule left such voxels at 0)
        let corner = Array3::from_shape_vec((1, 2, 2), vec![1i16, 2, 3, 4]).unwrap();
        let one = resample_labels(corner, [1, 1, 1], None, how);
        assert_eq!(one[[0, 0, 0]], 4);
    }

    #[test]
    fn linear_labels_in_one_pass_equal_the_resized_indicators() {
        // random label maps, blocky (ties where blocks meet) or voxel by voxel (ties between labels that
        // are not the nearest, at the centres of 2x2x2 cells), up- and downsampled, with kept axes and
        // slice axes, through the one-pass rule and through every label's resized indicator
        let mut state = 99u64;
        let mut random = |below: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % below
        };
        let cases = [
            ([4, 6, 5], [8, 3, 5], None, 2),
            ([3, 7, 8], [3, 14, 4], Some(0), 2),
            ([5, 4, 6], [2, 9, 11], None, 2),
            ([6, 5, 4], [6, 5, 9], Some(1), 2),
            ([2, 2, 2], [5, 3, 1], None, 1),
            ([8, 8, 8], [4, 4, 4], None, 1),
        ];
        for (shape, new_shape, slice_axis, block) in cases {
            let labels: Vec<i16> = (0..shape.iter().product::<usize>()).map(|_| random(4) as i16 - 1).collect();
            let input = Array3::from_shape_fn(shape, |(z, y, x)| {
                labels[(z / block * shape[1] + y / block) * shape[2] + x / block]
            });
            let one_pass = resize_labels_linear(&input, new_shape, slice_axis);
            let indicators = resize_labels_by_indicators(&input, new_shape, 1, slice_axis);
            assert_eq!(one_pass, indicators, "{shape:?} -> {new_shape:?}, slices along {slice_axis:?}");
        }
    }
}
