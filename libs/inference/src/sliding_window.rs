//! nnU-Net's sliding-window prediction
//! (`nnunetv2/inference/predict_from_raw_data.py: nnUNetPredictor.predict_sliding_window_return_logits`, with
//! `nnunetv2/inference/sliding_window_prediction.py: compute_steps_for_sliding_window` and `compute_gaussian`): tiles
//! at half-patch steps, each prediction weighted by a Gaussian importance map and accumulated, mirrored test-time
//! augmentation averaged over the flips. Accumulation is in fp16 as nnU-Net does it, so the logits round the same
//! way.

use nntools_network::{MixedPrecision, UNet};
use tch::{Device, Kind, Tensor};

/// `scipy.ndimage.gaussian_filter` truncates its kernel at 4 standard deviations.
const GAUSSIAN_TRUNCATE: f64 = 4.0;
const GAUSSIAN_SIGMA_SCALE: f64 = 1.0 / 8.0;
/// The importance map's maximum; weights are large enough that fp16 sums stay accurate.
const GAUSSIAN_PEAK: f64 = 10.0;

/// Tile positions along each axis: `ceil((size - patch) / (patch * step)) + 1` tiles spread evenly
/// from 0 to `size - patch`. `size` must be at least `patch`.
pub fn tile_starts(size: &[usize], patch: &[usize], step: f64) -> Vec<Vec<usize>> {
    size.iter()
        .zip(patch)
        .map(|(&size, &patch)| {
            let span = (size - patch) as f64;
            let count = tiles_along(size, patch, step) as usize;
            if count == 1 {
                return vec![0];
            }
            let stride = span / (count - 1) as f64;
            (0..count).map(|i| (stride * i as f64).round_ties_even() as usize).collect()
        })
        .collect()
}

/// Refuses a step (a fraction of the patch) that moves the patch by less than one voxel along an axis:
/// nnU-Net's compute_steps_for_sliding_window then rounds several tiles to one position and predicts
/// each of them again, so such a step adds work (without bound as it nears 0) and nothing else.
pub fn check_step(patch: &[usize], step: f64) -> std::result::Result<(), String> {
    let smallest = patch.iter().map(|&p| 1.0 / p as f64).fold(0.0, f64::max);
    if step >= smallest {
        return Ok(());
    }
    Err(format!(
        "{step} moves the patch {patch:?} by less than one voxel, which predicts tiles again at the same \
         position; at least {smallest:.4} for this model"
    ))
}

/// The number of tiles along an axis of `size >= patch` voxels, in floating point: a step near 0 makes
/// more than any integer holds.
fn tiles_along(size: usize, patch: usize, step: f64) -> f64 {
    ((size - patch) as f64 / (patch as f64 * step)).ceil() + 1.0
}

/// The 1-D profile scipy's Gaussian filter gives a unit impulse at `len / 2`, normalised kernel weights
/// within the truncation radius and zero beyond.
fn impulse_response(len: usize) -> Vec<f64> {
    let sigma = len as f64 * GAUSSIAN_SIGMA_SCALE;
    let radius = (GAUSSIAN_TRUNCATE * sigma + 0.5) as i64;
    let weight = |d: i64| (-0.5 * (d * d) as f64 / (sigma * sigma)).exp();
    let total: f64 = (-radius..=radius).map(weight).sum();
    let centre = (len / 2) as i64;
    (0..len as i64)
        .map(|i| {
            let d = i - centre;
            if d.abs() <= radius { weight(d) / total } else { 0.0 }
        })
        .collect()
}

/// nnU-Net's `compute_gaussian(patch, 1/8, value_scaling_factor=10)` in fp16: a Gaussian of σ = patch/8
/// centred at `patch // 2`, peak 10, zeros replaced by the smallest non-zero weight.
pub fn importance_map(patch: &[usize], device: Device) -> Tensor {
    let profiles: Vec<Tensor> = patch.iter().map(|&len| Tensor::from_slice(&impulse_response(len))).collect();
    let mut map = profiles[0].shallow_clone();
    for profile in &profiles[1..] {
        map = map.unsqueeze(-1) * profile;
    }
    let map = (&map / map.max() * GAUSSIAN_PEAK).to_kind(Kind::Half);
    let zero = map.eq(0.0);
    let smallest = map.masked_select(&zero.logical_not()).min();
    map.masked_fill(&zero, smallest.double_value(&[])).to_device(device)
}

/// Every non-empty combination of `axes`, in `itertools.combinations` order by size.
fn mirror_combinations(axes: &[i64]) -> Vec<Vec<i64>> {
    let mut combinations = Vec::new();
    for size in 1..=axes.len() {
        let mut pick: Vec<usize> = (0..size).collect();
        loop {
            combinations.push(pick.iter().map(|&i| axes[i]).collect());
            let Some(i) = (0..size).rev().find(|&i| pick[i] != i + axes.len() - size) else { break };
            pick[i] += 1;
            for j in i + 1..size {
                pick[j] = pick[j - 1] + 1;
            }
        }
    }
    combinations
}

/// How a network is applied to a whole preprocessed image.
pub struct SlidingWindow {
    /// Spatial patch of the network (2 or 3 axes).
    pub patch: Vec<usize>,
    pub step: f64,
    /// Tensor axes of a `(1, c, ...)` tile to mirror for test-time augmentation; empty for none.
    pub mirror_axes: Vec<i64>,
    /// fp16 map over the patch.
    pub gaussian: Tensor,
    /// Autocast of the network's evaluations (`--precision`); `None` for fp32.
    pub mixed: Option<MixedPrecision>,
}

impl SlidingWindow {
    pub fn new(
        patch: &[usize],
        step: f64,
        spatial_mirror_axes: &[usize],
        device: Device,
        mixed: Option<MixedPrecision>,
    ) -> Self {
        Self {
            patch: patch.to_vec(),
            step,
            mirror_axes: spatial_mirror_axes.iter().map(|&a| a as i64 + 2).collect(),
            gaussian: importance_map(patch, device),
            mixed,
        }
    }

    /// Logits `(classes, ...)` of one tile `(1, c, ...)`: the network's output, plus with TTA the mirrored outputs
    /// flipped back, summed in nnU-Net's order and divided by the number of passes. One pass at a
    /// time: on CPU a batch of the eight mirrored tiles measured 25% slower and twice the memory.
    fn tile_logits(&self, net: &UNet, tile: &Tensor) -> Tensor {
        let forward = |tile: &Tensor| nntools_network::widen_bf16(&net.forward(tile).get(0));
        let flips = mirror_combinations(&self.mirror_axes);
        let mut sum = forward(tile);
        for axes in &flips {
            // per-sample axes lose the batch dimension
            let sample_axes: Vec<i64> = axes.iter().map(|a| a - 1).collect();
            sum += forward(&tile.flip(axes)).flip(&sample_axes);
        }
        if flips.is_empty() { sum } else { sum / (flips.len() + 1) as f64 }
    }

    /// fp16 logits `(classes, ...)` of a preprocessed image `(c, ...)` (3-D spatial, or `(c, z, y, x)`
    /// predicted slice by slice for a 2-D patch), on the image tensor's device. The network runs under
    /// `mixed`'s autocast (by default fp16 on a GPU, as nnU-Net's predictor runs it there). `keep_going` is
    /// called before every network evaluation; once it returns false the prediction stops with `None`.
    pub fn predict(
        &self,
        net: &UNet,
        image: &Tensor,
        classes: i64,
        mut keep_going: impl FnMut() -> bool,
    ) -> Option<Tensor> {
        nntools_network::autocast(self.mixed, || {
            tch::no_grad(|| {
                let spatial: Vec<usize> = image.size()[1..].iter().map(|&s| s as usize).collect();
                let planar = self.patch.len() == 2;
                let tiled = if planar { &spatial[1..] } else { &spatial[..] };
                // images smaller than the patch are padded with 0, split as nnU-Net's pad_nd_image does
                let padding: Vec<(usize, usize)> = tiled
                    .iter()
                    .zip(&self.patch)
                    .map(|(&s, &p)| {
                        let d = p.saturating_sub(s);
                        (d / 2, d - d / 2)
                    })
                    .collect();
                let offset = spatial.len() - tiled.len();
                let mut pad_spec = Vec::new();
                for &(before, after) in padding.iter().rev() {
                    pad_spec.extend([before as i64, after as i64]);
                }
                let image = if pad_spec.iter().any(|&p| p > 0) {
                    image.constant_pad_nd(&pad_spec)
                } else {
                    image.shallow_clone()
                };
                let padded: Vec<i64> = image.size()[1..].to_vec();
                let options = (Kind::Half, image.device());
                let mut shape = vec![classes];
                shape.extend(&padded);
                let logits = Tensor::zeros(&shape, options);
                let weights = Tensor::zeros(&padded, options);
                let tiled_size: Vec<usize> = padded[offset..].iter().map(|&s| s as usize).collect();
                let starts = tile_starts(&tiled_size, &self.patch, self.step);
                let slices: Vec<Option<i64>> = if planar { (0..padded[0]).map(Some).collect() } else { vec![None] };
                for slice in slices {
                    for corner in cartesian(&starts) {
                        if !keep_going() {
                            return None;
                        }
                        let window = |t: &Tensor, first_axis: i64| {
                            let t = match slice {
                                Some(z) => t.narrow(first_axis, z, 1).squeeze_dim(first_axis),
                                None => t.shallow_clone(),
                            };
                            corner.iter().zip(&self.patch).enumerate().fold(t, |t, (a, (&start, &len))| {
                                t.narrow(first_axis + a as i64, start as i64, len as i64)
                            })
                        };
                        let tile = window(&image, 1).unsqueeze(0).contiguous();
                        let prediction = self.tile_logits(net, &tile) * &self.gaussian;
                        let mut target = window(&logits, 1);
                        let _ = target.g_add_(&prediction);
                        let mut weight = window(&weights, 0);
                        let _ = weight.g_add_(&self.gaussian);
                    }
                }
                let logits = logits / weights;
                // back to the image's extent
                Some(padding.iter().enumerate().fold(logits, |t, (a, &(before, _))| {
                    t.narrow((1 + offset + a) as i64, before as i64, tiled[a] as i64)
                }))
            })
        })
    }

    /// Number of network evaluations `predict` makes for an image of `spatial` shape (for progress).
    pub fn tile_count(&self, spatial: &[usize]) -> usize {
        self.tiles(spatial) as usize
    }

    /// [`SlidingWindow::tile_count`] in floating point, for any step.
    fn tiles(&self, spatial: &[usize]) -> f64 {
        let planar = self.patch.len() == 2;
        let per_slice: f64 = spatial[usize::from(planar)..]
            .iter()
            .zip(&self.patch)
            .map(|(&s, &p)| tiles_along(s.max(p), p, self.step))
            .product();
        if planar { per_slice * spatial[0] as f64 } else { per_slice }
    }

    /// The bytes `predict` allocates at the least for an image of `spatial` shape: the tile grid (one
    /// list of starts per tile) and the fp16 logit and weight sums over the padded image.
    pub fn memory_bytes(&self, spatial: &[usize], classes: i64) -> f64 {
        let per_tile = (std::mem::size_of::<Vec<usize>>() + self.patch.len() * std::mem::size_of::<usize>()) as f64;
        let offset = spatial.len() - self.patch.len();
        let padded: f64 = spatial[offset..].iter().zip(&self.patch).map(|(&s, &p)| s.max(p) as f64).product();
        let slices: f64 = spatial[..offset].iter().map(|&s| s as f64).product();
        self.tiles(spatial) / slices * per_tile + padded * slices * (classes + 1) as f64 * 2.0
    }
}

/// Every combination of one start per axis, the last axis fastest.
fn cartesian(starts: &[Vec<usize>]) -> Vec<Vec<usize>> {
    starts.iter().fold(vec![Vec::new()], |prefixes, axis| {
        prefixes.iter().flat_map(|p| axis.iter().map(move |&s| [p.as_slice(), &[s]].concat())).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_starts_as_nnunet() {
        assert_eq!(tile_starts(&[110], &[64], 0.5), [vec![0, 23, 46]]);
        assert_eq!(tile_starts(&[64, 40], &[64, 40], 0.5), [vec![0], vec![0]]);
        assert_eq!(tile_starts(&[41], &[40], 0.5), [vec![0, 1]]);
    }

    #[test]
    fn steps_below_one_voxel_are_refused() {
        assert_eq!(check_step(&[40, 56, 40], 0.025), Ok(()));
        let refused = check_step(&[40, 56, 40], 0.02).unwrap_err();
        assert!(refused.starts_with("0.02 moves the patch [40, 56, 40] by less than one voxel"), "{refused}");
        assert!(refused.ends_with("at least 0.0250 for this model"), "{refused}");
        // at the smallest step each tile starts one voxel after the last: no position twice
        assert_eq!(tile_starts(&[45], &[40], 0.025), [vec![0, 1, 2, 3, 4, 5]]);
    }

    #[test]
    fn tiles_and_memory_of_a_window_by_hand() {
        let window = SlidingWindow::new(&[64, 40], 0.5, &[], Device::Cpu, None);
        // 3 tiles along 110 (as above), 1 along 40, on each of 7 slices
        assert_eq!(window.tile_count(&[7, 110, 40]), 21);
        // 3 tiles of two starts each, then the fp16 sums of 3 classes and the weights over 7 x 110 x 40
        let grid = 3.0 * (std::mem::size_of::<Vec<usize>>() + 2 * std::mem::size_of::<usize>()) as f64;
        assert_eq!(window.memory_bytes(&[7, 110, 40], 3), grid + 7.0 * 110.0 * 40.0 * 4.0 * 2.0);
        // a step near 0 counts tiles no integer holds, and is not rounded down to fit
        let fine = SlidingWindow { step: 1e-9, ..window };
        assert!(fine.memory_bytes(&[7, 1100, 400], 3) > 1e20);
    }

    #[test]
    fn mirror_combinations_in_itertools_order() {
        let c = mirror_combinations(&[2, 3, 4]);
        assert_eq!(c, [vec![2], vec![3], vec![4], vec![2, 3], vec![2, 4], vec![3, 4], vec![2, 3, 4]]);
        assert_eq!(mirror_combinations(&[2, 3]).len(), 3);
        assert!(mirror_combinations(&[]).is_empty());
    }

    #[test]
    fn importance_map_peaks_at_ten_in_the_centre_and_has_no_zeros() {
        let map = importance_map(&[40, 56, 40], Device::Cpu);
        assert_eq!(map.kind(), Kind::Half);
        assert_eq!(map.double_value(&[20, 28, 20]), 10.0);
        assert!(map.min().double_value(&[]) > 0.0);
        // σ = 5 along z: one σ away the weight falls to exp(-1/2) of the peak
        let ratio = map.double_value(&[25, 28, 20]) / 10.0;
        assert!((ratio - (-0.5f64).exp()).abs() < 2e-3, "{ratio}");
    }

    #[test]
    fn impulse_response_sums_to_one_within_the_truncation_radius() {
        // σ = 8, radius 32, centre 32: the patch holds offsets -32..=31, so the kernel's weight at +32
        // (equal to the one at -32, the first voxel) is the only part missing from a total of one
        let profile = impulse_response(64);
        assert!(profile[0] > 0.0);
        assert!((profile.iter().sum::<f64>() + profile[0] - 1.0).abs() < 1e-12);
        let short = impulse_response(8);
        assert!(short.iter().all(|&w| w > 0.0));
    }
}
