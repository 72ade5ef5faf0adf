//! The cascade's previous-stage segmentation as network input (batchgeneratorsv2's
//! `transforms/nnunet/seg_to_onehot.py: MoveSegAsOneHotToDataTransform`,
//! `transforms/nnunet/random_binary_operator.py: ApplyRandomBinaryOperatorTransform` and
//! `transforms/nnunet/remove_connected_components.py: RemoveRandomConnectedComponentFromOneHotEncodingTransform`, as
//! `nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: nnUNetTrainer.get_training_transforms` sets them up): one-hot
//! channels appended to the image, randomly dilated/eroded/opened/closed and stripped of small components.

use std::collections::VecDeque;

use tch::{Device, IndexOp, Kind, Tensor};

use crate::recipe::{BinaryOperation, ComponentRemoval, Morphology, SampleParameters};
use crate::upload;

/// Components covering this fraction of the patch or more are never removed.
const LARGEST_REMOVABLE: f64 = 0.15;

/// Appends the one-hot encoding of `labels` in seg channel 1 to `data` and keeps seg channel 0.
pub(crate) fn move_to_data(data: &Tensor, seg: &Tensor, labels: &[i64]) -> (Tensor, Tensor) {
    let previous = seg.narrow(1, 1, 1);
    let mut channels = vec![data.shallow_clone()];
    channels.extend(labels.iter().map(|&l| previous.eq(l).to_kind(data.kind())));
    (Tensor::cat(&channels, 1), seg.narrow(1, 0, 1))
}

/// Applies each sample's binary operators, then its component removals, to the last `labels` channels
/// of `data` (b, c + labels, *patch); returns a new tensor.
pub(crate) fn perturb(data: &Tensor, params: &[SampleParameters], labels: usize) -> Tensor {
    let data = data.copy();
    let first = data.size()[1] - labels as i64;
    for (sample, p) in params.iter().enumerate() {
        let onehot = data.i((sample as i64, first..));
        for operation in p.binary_operators.iter().flatten() {
            apply_binary_operator(&onehot, operation);
        }
        for removal in p.component_removals.iter().flatten() {
            remove_component(&onehot, removal);
        }
    }
    data
}

/// Voxels the operation adds to its channel are taken from all other channels.
fn apply_binary_operator(onehot: &Tensor, operation: &BinaryOperation) {
    let mut channel = onehot.get(operation.channel as i64);
    let before = channel.to_kind(Kind::Bool);
    let element = structuring_element(operation.radius, before.dim(), before.device());
    let dilate = |x: &Tensor| dilation(x, &element);
    let erode = |x: &Tensor| dilation(&x.logical_not(), &element).logical_not();
    let after = match operation.operator {
        Morphology::Dilation => dilate(&before),
        Morphology::Erosion => erode(&before),
        Morphology::Closing => erode(&dilate(&before)),
        Morphology::Opening => dilate(&erode(&before)),
    };
    let added = after.logical_and(&before.logical_not());
    for other in 0..onehot.size()[0] {
        if other != operation.channel as i64 {
            let _ = onehot.get(other).masked_fill_(&added, 0.0);
        }
    }
    channel.copy_(&after.to_kind(channel.kind()));
}

/// Binary dilation by `element` with zeros outside, as batchgeneratorsv2's FFT convolution with
/// `padding='same'` (an even-sized element reaches one voxel further after its centre than before).
fn dilation(x: &Tensor, element: &Tensor) -> Tensor {
    let size = x.size();
    let kernel = element.size();
    let mut pad = Vec::with_capacity(2 * size.len());
    for &k in kernel.iter().rev() {
        pad.extend([(k - 1) / 2, k - 1 - (k - 1) / 2]);
    }
    let padded = x.to_kind(Kind::Float).pad(pad.as_slice(), "constant", 0.0);
    let extent = padded.size();
    let axes: Vec<i64> = (0..size.len() as i64).collect();
    let spectrum = padded.fft_rfftn(extent.as_slice(), axes.as_slice(), "backward")
        * element.fft_rfftn(extent.as_slice(), axes.as_slice(), "backward").conj();
    // circular cross-correlation; the padding keeps the first `size` outputs free of wrap-around
    let correlation = spectrum.fft_irfftn(extent.as_slice(), axes.as_slice(), "backward");
    let same = size.iter().enumerate().fold(correlation, |t, (a, &s)| t.narrow(a as i64, 0, s));
    same.gt(0.5)
}

/// skimage's `ball(radius)` (3d) or `disk(radius)` (2d) for a float radius: `ball` samples
/// `int(2r + 1)` points evenly over [-r, r], `disk` the points `-r, -r + 1, ...` below `r + 1`.
fn structuring_element(radius: f64, dims: usize, device: Device) -> Tensor {
    let coordinates: Vec<f64> = if dims == 3 {
        let n = (2.0 * radius + 1.0) as usize;
        (0..n).map(|i| -radius + i as f64 * 2.0 * radius / (n - 1) as f64).collect()
    } else {
        let n = (2.0 * radius + 1.0).ceil() as usize;
        (0..n).map(|i| -radius + i as f64).collect()
    };
    let n = coordinates.len();
    let voxels = n.pow(dims as u32);
    let inside: Vec<f32> = (0..voxels)
        .map(|v| {
            let squared: f64 = (0..dims).map(|a| coordinates[v / n.pow(a as u32) % n].powi(2)).sum();
            if squared <= radius * radius { 1.0 } else { 0.0 }
        })
        .collect();
    upload(Tensor::from_slice(&inside).view(vec![n as i64; dims].as_slice()), device)
}

/// Clears one component (full connectivity) smaller than 15 % of the patch, chosen by `removal.pick`.
fn remove_component(onehot: &Tensor, removal: &ComponentRemoval) {
    let channel = onehot.get(removal.channel as i64);
    let shape: Vec<usize> = channel.size().iter().map(|&s| s as usize).collect();
    let mask = Vec::<bool>::try_from(channel.to_kind(Kind::Bool).flatten(0, -1).to_device(Device::Cpu))
        .expect("a boolean mask");
    let components = components(&mask, &shape);
    let limit = mask.len() as f64 * LARGEST_REMOVABLE;
    let removable: Vec<&Vec<usize>> = components.iter().filter(|c| (c.len() as f64) < limit).collect();
    if removable.is_empty() {
        return;
    }
    let chosen = removable[((removal.pick * removable.len() as f64) as usize).min(removable.len() - 1)];
    let mut cleared = vec![false; mask.len()];
    for &v in chosen {
        cleared[v] = true;
    }
    let cleared = upload(Tensor::from_slice(&cleared).view(channel.size().as_slice()), channel.device());
    let _ = onehot.get(removal.channel as i64).masked_fill_(&cleared, 0.0);
}

/// Connected components of `mask` with full (8/26) connectivity, as voxel lists in raster order of
/// their first voxel (the order of skimage's labels).
fn components(mask: &[bool], shape: &[usize]) -> Vec<Vec<usize>> {
    let dims = shape.len();
    let strides: Vec<usize> = (0..dims).map(|a| shape[a + 1..].iter().product()).collect();
    let neighbours: Vec<Vec<i64>> = (0..3usize.pow(dims as u32))
        .map(|n| (0..dims).map(|a| (n / 3usize.pow(a as u32) % 3) as i64 - 1).collect::<Vec<_>>())
        .filter(|d| d.iter().any(|&x| x != 0))
        .collect();
    let mut seen = vec![false; mask.len()];
    let mut found = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let mut component = vec![start];
        let mut queue = VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            let position: Vec<i64> = (0..dims).map(|a| (v / strides[a] % shape[a]) as i64).collect();
            for delta in &neighbours {
                let next: Option<usize> = (0..dims).try_fold(0usize, |index, a| {
                    let p = position[a] + delta[a];
                    (0..shape[a] as i64).contains(&p).then(|| index + p as usize * strides[a])
                });
                if let Some(n) = next.filter(|&n| mask[n] && !seen[n]) {
                    seen[n] = true;
                    component.push(n);
                    queue.push_back(n);
                }
            }
        }
        found.push(component);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_use_full_connectivity_in_raster_order() {
        // 2d 4x4: a diagonal pair (one component) and a separate single voxel
        let mut mask = vec![false; 16];
        mask[0] = true;
        mask[5] = true;
        mask[3] = true;
        let found = components(&mask, &[4, 4]);
        assert_eq!(found, vec![vec![0, 5], vec![3]]);
    }

    #[test]
    fn ball_of_radius_one_is_the_six_neighbourhood() {
        let ball = structuring_element(1.0, 3, Device::Cpu);
        assert_eq!(ball.size(), [3, 3, 3]);
        assert_eq!(ball.sum(Kind::Float).double_value(&[]), 7.0);
        // a single voxel dilated by it becomes the cross
        let x = Tensor::zeros([5, 5, 5], (Kind::Bool, Device::Cpu));
        let _ = x.i((2, 2, 2)).fill_(1);
        let dilated = dilation(&x, &ball);
        assert_eq!(dilated.sum(Kind::Int64).int64_value(&[]), 7);
        assert!(dilated.i((1, 2, 2)).int64_value(&[]) == 1 && dilated.i((1, 1, 2)).int64_value(&[]) == 0);
    }

    #[test]
    fn dilation_takes_voxels_from_the_other_channels_and_small_components_go() {
        // 2d one-hot of two labels on 9 x 9: label 0 a single voxel at (4, 4), label 1 everything else
        let onehot = Tensor::zeros([2, 9, 9], (Kind::Float, Device::Cpu));
        let _ = onehot.i((0, 4, 4)).fill_(1.0);
        let _ = onehot.i(1).fill_(1.0);
        let _ = onehot.i((1, 4, 4)).fill_(0.0);
        let operation = BinaryOperation { channel: 0, operator: Morphology::Dilation, radius: 1.0 };
        apply_binary_operator(&onehot, &operation);
        // disk(1) is the 4-neighbourhood cross
        assert_eq!(onehot.i(0).sum(Kind::Float).double_value(&[]), 5.0);
        assert_eq!(onehot.i(1).sum(Kind::Float).double_value(&[]), 76.0);
        assert_eq!(onehot.i((1, 3, 4)).double_value(&[]), 0.0);
        // label 1 is one component of 76 / 81 voxels: too large; label 0's cross (5 voxels) is removed
        remove_component(&onehot, &ComponentRemoval { channel: 1, pick: 0.0 });
        assert_eq!(onehot.i(1).sum(Kind::Float).double_value(&[]), 76.0);
        remove_component(&onehot, &ComponentRemoval { channel: 0, pick: 0.9 });
        assert_eq!(onehot.i(0).sum(Kind::Float).double_value(&[]), 0.0);
    }
}
