//! From fold-averaged logits at the configuration's spacing to what is written
//! (`nnunetv2/inference/export_prediction.py: convert_predicted_logits_to_segmentation_with_correct_shape`): logits
//! resampled to the cropped input shape and rounded to fp16 as nnU-Net keeps them, labels by argmax (or by region
//! order), probabilities by softmax (or sigmoid), both put back into the input image's extent and axis order.
//!
//! On a CPU the logits are resampled line by line as nnU-Net does. On a GPU they are resampled there,
//! by one matrix product per axis, one slab of the output at a time, and only the slab's labels (and
//! probabilities, when asked for) come back to the host: the full-resolution logits, nnU-Net's largest
//! buffer at inference (its issue #2912), never exist in host memory.

use half::f16;
use ndarray::{Array3, Array4, ArrayView3, Axis, s};
use nntools_dataset::Labelling;
use nntools_preprocessing::resampling::{clips_to_input_range, resampling_matrix};
use nntools_preprocessing::{LogitsResampling, Properties, Recipe, to_input_geometry};
use tch::{Device, Kind, Tensor};

/// Output voxels (times classes) resampled at once on a GPU: 2^27 float64 values, 1 GiB per buffer.
const DEVICE_SLAB_VALUES: usize = 1 << 27;

/// Labels and, when asked for, per-class probabilities `(c, z, y, x)`, both in the input geometry.
pub struct Exported {
    pub labels: Array3<u16>,
    pub probabilities: Option<Array4<f32>>,
}

/// Labels and probabilities in the cropped shape, before they are put back into the input geometry.
struct Cropped {
    labels: Array3<u16>,
    probabilities: Option<Array4<f32>>,
}

/// Exports fold-averaged logits `(c, z, y, x)` of a preprocessed case, on the logits' device.
pub fn export(
    logits: &Tensor,
    properties: &Properties,
    recipe: &Recipe,
    labelling: &Labelling,
    with_probabilities: bool,
) -> Exported {
    let cropped = cropped(logits, &LogitsResampling::of(properties, recipe), labelling, with_probabilities);
    to_input(cropped, properties, recipe, labelling)
}

/// A 3d_lowres case's labels on the next stage's preprocessed grid of `shape`, as nnU-Net's validation
/// writes them for training 3d_cascade_fullres (`resample_and_save`): the logits resampled straight to
/// that shape, rounded and argmaxed as for export, and left in the preprocessed geometry.
pub fn labels_for_next_stage(
    logits: &Tensor,
    recipe: &Recipe,
    labelling: &Labelling,
    shape: [usize; 3],
) -> Array3<u16> {
    cropped(logits, &LogitsResampling::to_next_stage(recipe, shape), labelling, false).labels
}

fn cropped(logits: &Tensor, plan: &LogitsResampling, labelling: &Labelling, with_probabilities: bool) -> Cropped {
    match logits.device() {
        Device::Cpu => cropped_on_host(&to_array(logits), plan, labelling, with_probabilities),
        _ => cropped_on_device(logits, plan, labelling, with_probabilities, DEVICE_SLAB_VALUES),
    }
}

fn to_array(logits: &Tensor) -> Array4<f32> {
    let logits = logits.to_kind(Kind::Float).contiguous();
    let shape: Vec<usize> = logits.size().iter().map(|&s| s as usize).collect();
    let values = Vec::<f32>::try_from(logits.view(-1)).expect("float tensor");
    Array4::from_shape_vec((shape[0], shape[1], shape[2], shape[3]), values).expect("logits shape")
}

/// Rounds to the nearest fp16 value, as nnU-Net's fp16 logits are after resampling.
fn round_to_half(values: &mut Array4<f32>) {
    values.mapv_inplace(|v| f16::from_f32(v).to_f32());
}

/// Whether labels are taken from probabilities (always for regions) rather than from logits.
fn needs_probabilities(labelling: &Labelling, with_probabilities: bool) -> bool {
    with_probabilities || matches!(labelling, Labelling::Regions(_))
}

/// Class probabilities of cropped logits, softmax or sigmoid.
fn probabilities(logits: &Array4<f32>, labelling: &Labelling) -> Array4<f32> {
    let mut probabilities = logits.clone();
    match labelling {
        Labelling::Regions(_) => probabilities.mapv_inplace(|v| 1.0 / (1.0 + (-v).exp())),
        Labelling::Classes => {
            for mut lane in probabilities.lanes_mut(Axis(0)) {
                let max = lane.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                lane.mapv_inplace(|v| (v - max).exp());
                let total = lane.sum();
                lane.mapv_inplace(|v| v / total);
            }
        }
    }
    probabilities
}

fn cropped_on_host(
    logits: &Array4<f32>,
    plan: &LogitsResampling,
    labelling: &Labelling,
    with_probabilities: bool,
) -> Cropped {
    let mut cropped = plan.apply(logits);
    round_to_half(&mut cropped);
    let probabilities = needs_probabilities(labelling, with_probabilities).then(|| probabilities(&cropped, labelling));
    let labels = labelling.labels(probabilities.as_ref().unwrap_or(&cropped).view());
    Cropped { labels, probabilities: probabilities.filter(|_| with_probabilities) }
}

/// One spatial axis of the device resampling: the matrix that resamples it (none when its length
/// stays), as a float64 tensor on the device.
fn axis_matrix(n: usize, m: usize, order: u32, device: Device) -> Option<Tensor> {
    (n != m).then(|| {
        let matrix = resampling_matrix(n, m, order);
        Tensor::from_slice(matrix.as_slice().expect("standard layout")).view([m as i64, n as i64]).to_device(device)
    })
}

/// Contracts spatial axis `axis` (1..=3) of `t` `(c, a, b, d)` with `matrix` `(m, n)`.
fn contract(t: Tensor, matrix: Option<&Tensor>, axis: usize) -> Tensor {
    let Some(matrix) = matrix else { return t };
    let equation = ["mn,cnyx->cmyx", "mn,cznx->czmx", "mn,czyn->czym"][axis - 1];
    Tensor::einsum(equation, &[matrix, &t], None::<i64>)
}

/// `cropped_on_host`'s result computed on the logits' device: the same resampling (matrix products in
/// float64 built from the host's line resampler, the same clipping to the input range), rounding,
/// probabilities and labels, about `slab_values` float64 values at a time: output slabs along the slab
/// axis (the thick axis when it is resampled separately, otherwise the first), classes in chunks.
fn cropped_on_device(
    logits: &Tensor,
    plan: &LogitsResampling,
    labelling: &Labelling,
    with_probabilities: bool,
    slab_values: usize,
) -> Cropped {
    tch::no_grad(|| {
        let device = logits.device();
        let classes = logits.size()[0] as usize;
        let slab_axis = plan.separate_axis.unwrap_or(0);
        // the slab axis first: `order[k]` is the spatial axis at position k
        let order: Vec<usize> = std::iter::once(slab_axis).chain((0..3).filter(|&a| a != slab_axis)).collect();
        let logits = logits.permute([0, 1 + order[0] as i64, 1 + order[1] as i64, 1 + order[2] as i64]);
        let input_shape: Vec<usize> = logits.size()[1..].iter().map(|&s| s as usize).collect();
        let output_shape: Vec<usize> = order.iter().map(|&a| plan.shape[a]).collect();
        let axis_order = |position: usize| {
            if plan.separate_axis == Some(order[position]) { plan.how.order_z } else { plan.how.order }
        };
        let matrices: Vec<Option<Tensor>> =
            (0..3).map(|k| axis_matrix(input_shape[k], output_shape[k], axis_order(k), device)).collect();
        // clipping to the input's range: per class, and per slice when slices are resized on their own
        let clip = clips_to_input_range(plan.how.order) && matrices.iter().any(Option::is_some);
        let range_dims: &[i64] = if plan.separate_axis.is_some() { &[2, 3] } else { &[1, 2, 3] };
        let ranges = clip.then(|| {
            (logits.amin(range_dims, true).to_kind(Kind::Double), logits.amax(range_dims, true).to_kind(Kind::Double))
        });
        let clamp = |t: Tensor, classes: (i64, i64), slices: Option<(i64, i64)>| match &ranges {
            None => t,
            Some((low, high)) => {
                let part = |r: &Tensor| {
                    let r = r.narrow(0, classes.0, classes.1);
                    slices.map_or(r.shallow_clone(), |(first, count)| r.narrow(1, first, count))
                };
                t.clamp_tensor(Some(&part(low)), Some(&part(high)))
            }
        };

        let input_voxels: usize = input_shape.iter().product();
        let class_chunk = (slab_values / input_voxels.max(1)).clamp(1, classes);
        let plane = output_shape[1].max(input_shape[1]) * output_shape[2].max(input_shape[2]);
        let slab = (slab_values / (class_chunk * plane).max(1)).clamp(1, output_shape[0]);
        let mut labels = Array3::<u16>::zeros((output_shape[0], output_shape[1], output_shape[2]));
        let mut probabilities = with_probabilities
            .then(|| Array4::<f32>::zeros((classes, output_shape[0], output_shape[1], output_shape[2])));
        for start in (0..output_shape[0]).step_by(slab) {
            let len = slab.min(output_shape[0] - start);
            let rows = matrices[0].as_ref().map(|m| m.narrow(0, start as i64, len as i64));
            let resample = |first_class: usize| {
                let chunk = (first_class as i64, class_chunk.min(classes - first_class) as i64);
                let input = logits.narrow(0, chunk.0, chunk.1).to_kind(Kind::Double);
                let in_plane = |t: Tensor| contract(contract(t, matrices[1].as_ref(), 2), matrices[2].as_ref(), 3);
                let resampled = match (plan.separate_axis, &rows) {
                    (None, Some(rows)) => clamp(in_plane(contract(input, Some(rows), 1)), chunk, None),
                    (None, None) => clamp(in_plane(input.narrow(1, start as i64, len as i64)), chunk, None),
                    (Some(_), None) => {
                        let slices = (start as i64, len as i64);
                        clamp(in_plane(input.narrow(1, slices.0, slices.1)), chunk, Some(slices))
                    }
                    (Some(_), Some(rows)) => {
                        // only the input slices the slab's rows read are resized in plane
                        let slices = support(rows);
                        let t = clamp(in_plane(input.narrow(1, slices.0, slices.1)), chunk, Some(slices));
                        contract(t, Some(&rows.narrow(1, slices.0, slices.1)), 1)
                    }
                };
                resampled.to_kind(Kind::Half).to_kind(Kind::Float)
            };
            let chunks: Vec<Tensor> = (0..classes).step_by(class_chunk).map(resample).collect();
            let rounded = Tensor::cat(&chunks, 0);
            let slab_probabilities = needs_probabilities(labelling, with_probabilities).then(|| match labelling {
                Labelling::Regions(_) => rounded.sigmoid(),
                Labelling::Classes => rounded.softmax(0, Kind::Float),
            });
            let scores = slab_probabilities.as_ref().unwrap_or(&rounded);
            let slab_labels = match labelling {
                // the first of equal maxima, as numpy's argmax
                Labelling::Classes => scores.argmax(0, false),
                Labelling::Regions(order) => {
                    let mut labels = scores.select(0, 0).zeros_like().to_kind(Kind::Int64);
                    for (region, &label) in order.iter().enumerate() {
                        labels = labels.masked_fill(&scores.select(0, region as i64).gt(0.5), label);
                    }
                    labels
                }
            };
            let host_labels = Vec::<i32>::try_from(slab_labels.to_kind(Kind::Int).to_device(Device::Cpu).view(-1))
                .expect("int tensor");
            let host_labels = Array3::from_shape_vec(
                (len, output_shape[1], output_shape[2]),
                host_labels.into_iter().map(|l| l as u16).collect(),
            )
            .expect("slab shape");
            labels.slice_mut(s![start..start + len, .., ..]).assign(&host_labels);
            if let (Some(all), Some(slab)) = (probabilities.as_mut(), slab_probabilities) {
                all.slice_mut(s![.., start..start + len, .., ..]).assign(&to_array(&slab.to_device(Device::Cpu)));
            }
        }
        // back to the spatial axis order
        let back = [0, 1, 2].map(|a| order.iter().position(|&o| o == a).expect("a permutation"));
        let labels = labels.permuted_axes(back).as_standard_layout().into_owned();
        let probabilities = probabilities
            .map(|p| p.permuted_axes([0, 1 + back[0], 1 + back[1], 1 + back[2]]).as_standard_layout().into_owned());
        Cropped { labels, probabilities }
    })
}

/// The input slices (first, count) that rows `(m, n)` of a resampling matrix give non-zero weight.
fn support(rows: &Tensor) -> (i64, i64) {
    let used = Vec::<bool>::try_from(rows.ne(0.0).any_dim(0, false).to_device(Device::Cpu)).expect("bool tensor");
    let first = used.iter().position(|&u| u).unwrap_or(0);
    let last = used.iter().rposition(|&u| u).unwrap_or(first);
    (first as i64, (last - first + 1) as i64)
}

/// Puts cropped labels and probabilities back into the input image's extent and axis order.
fn to_input(cropped: Cropped, properties: &Properties, recipe: &Recipe, labelling: &Labelling) -> Exported {
    let labels = to_input_geometry(cropped.labels.view(), properties, recipe, 0);
    let probabilities = cropped.probabilities.map(|cropped| {
        let channels: Vec<Array3<f32>> = cropped
            .axis_iter(Axis(0))
            .enumerate()
            .map(|(c, channel)| {
                // outside the crop the prediction is certain background (for regions: no region)
                let outside = if c == 0 && matches!(labelling, Labelling::Classes) { 1.0 } else { 0.0 };
                to_input_geometry(channel, properties, recipe, outside)
            })
            .collect();
        stack_channels(&channels)
    });
    Exported { labels, probabilities }
}

fn stack_channels(channels: &[Array3<f32>]) -> Array4<f32> {
    let views: Vec<ArrayView3<f32>> = channels.iter().map(|c| c.view()).collect();
    ndarray::stack(Axis(0), &views).expect("channels share the input's shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nntools_preprocessing::resampling::Resampling;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn softmax_sums_to_one_per_voxel() {
        let logits = Array4::from_shape_vec((2, 1, 1, 2), vec![0.0, 3.0, 0.0, -1.0]).unwrap();
        let p = probabilities(&logits, &Labelling::Classes);
        assert!((p[[0, 0, 0, 0]] - 0.5).abs() < 1e-7);
        assert!((p[[0, 0, 0, 1]] + p[[1, 0, 0, 1]] - 1.0).abs() < 1e-6);
        assert!((p[[0, 0, 0, 1]] - 1.0 / (1.0 + (-4.0f32).exp())).abs() < 1e-6);
    }

    /// Smooth random logits, so that the spline's overshoot and the clipping both occur.
    fn logits(classes: usize, shape: [usize; 3], seed: u64) -> Array4<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = Array4::from_shape_fn((classes, shape[0], shape[1], shape[2]), |_| rng.random_range(0.0f32..1.0));
        Array4::from_shape_fn(noise.dim(), |(c, z, y, x)| {
            let wave =
                ((z as f32 * 0.7 + c as f32).sin() + (y as f32 * 0.4).cos() * (x as f32 * 0.3 - c as f32).sin()) * 4.0;
            wave + 3.0 * noise[[c, z, y, x]]
        })
    }

    /// The device path, run here on the CPU, gives the host path's labels and probabilities: with and
    /// without a separate thick axis (first or second), up- and downsampling, unchanged axes,
    /// classes and regions, one slab or many.
    #[test]
    fn device_resampling_matches_the_host_path() {
        let cubic = Resampling { order: 3, order_z: 0, force_separate_z: None };
        let cases = [
            ([9, 11, 10], [14, 7, 10], None, cubic),
            ([5, 12, 9], [12, 20, 15], Some(0), cubic),
            ([12, 4, 9], [7, 11, 15], Some(1), Resampling { order_z: 1, ..cubic }),
            ([6, 8, 7], [6, 8, 7], None, cubic),
            ([6, 8, 7], [6, 13, 7], None, Resampling { order: 1, ..cubic }),
        ];
        let labellings = [Labelling::Classes, Labelling::Regions(vec![1, 2, 3])];
        for (index, (input_shape, shape, separate_axis, how)) in cases.into_iter().enumerate() {
            let plan = LogitsResampling { shape, separate_axis, how };
            // fp16, as the sliding window accumulates them
            let mut logits = logits(3, input_shape, index as u64);
            round_to_half(&mut logits);
            let shape = [3, input_shape[0] as i64, input_shape[1] as i64, input_shape[2] as i64];
            let tensor = Tensor::from_slice(logits.as_slice().unwrap()).view(shape).to_kind(Kind::Half);
            for labelling in &labellings {
                let host = cropped_on_host(&logits, &plan, labelling, true);
                for slab_values in [1, 2 * 20 * 15 * 3, 3 * 12 * 20 * 15, DEVICE_SLAB_VALUES] {
                    let device = cropped_on_device(&tensor, &plan, labelling, true, slab_values);
                    let context = format!("case {index}, {labelling:?}, slab {slab_values}");
                    let differing = device.labels.iter().zip(&host.labels).filter(|(a, b)| a != b).count();
                    assert_eq!(differing, 0, "{context}: {differing} of {} labels differ", host.labels.len());
                    let (device_p, host_p) =
                        (device.probabilities.unwrap(), host.probabilities.as_ref().unwrap().clone());
                    assert_eq!(device_p.shape(), host_p.shape(), "{context}");
                    let worst = device_p.iter().zip(&host_p).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                    assert!(worst < 1e-6, "{context}: probabilities differ by {worst}");
                }
                let without = cropped_on_device(&tensor, &plan, labelling, false, DEVICE_SLAB_VALUES);
                assert!(without.probabilities.is_none());
                assert_eq!(without.labels, host.labels);
            }
        }
    }

    /// The labels nnU-Net v2.8.1's `resample_and_save` wrote for the same fp16 logits
    /// (tests/fixtures/next_stage/make_fixture.py), on the host and through the device path (run here
    /// on the CPU). nnU-Net passes the lowres spacing as both current and target spacing, so that
    /// spacing alone decides whether the first axis is resampled on its own (nearest): it is not for
    /// the planned (3.46, 1.78, 1.78), it is for a thick (6, 1.78, 1.78), and the labels differ.
    #[test]
    fn next_stage_labels_match_nnunet() {
        use ndarray_npy::ReadNpyExt;
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let plans: nntools_planning::Plans = serde_json::from_str(
            &std::fs::read_to_string(fixtures.join("nnunet_plans/ct_lowres_cascade/nnUNetPlans.json")).unwrap(),
        )
        .unwrap();
        let read = |name: &str| std::fs::File::open(fixtures.join("next_stage").join(name)).unwrap();
        let logits = Array4::<f32>::read_npy(read("logits.npy")).unwrap();
        let shape: Vec<i64> = logits.shape().iter().map(|&s| s as i64).collect();
        let tensor = Tensor::from_slice(logits.as_slice().unwrap()).view(shape.as_slice()).to_kind(Kind::Half);
        let mut recipe = Recipe::new(&plans, "3d_lowres", None).unwrap();
        for (name, spacing) in [("planned", None), ("thick_z", Some(vec![6.0, 1.78, 1.78]))] {
            if let Some(spacing) = spacing {
                recipe.configuration.spacing = spacing;
            }
            let expected = Array3::<u8>::read_npy(read(&format!("labels_{name}.npy"))).unwrap().mapv(u16::from);
            let shape = [expected.shape()[0], expected.shape()[1], expected.shape()[2]];
            let host = labels_for_next_stage(&tensor, &recipe, &Labelling::Classes, shape);
            let differing = host.iter().zip(&expected).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{name}: {differing} of {} labels differ from nnU-Net's", expected.len());
            let plan = LogitsResampling::to_next_stage(&recipe, shape);
            assert_eq!(
                cropped_on_device(&tensor, &plan, &Labelling::Classes, false, 3000).labels,
                expected,
                "{name}: device path"
            );
        }
    }
}
