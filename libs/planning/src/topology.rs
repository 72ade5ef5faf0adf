//! Network topology from spacing and patch size (nnU-Net's `get_pool_and_conv_props`): how often each
//! axis is pooled, the per-stage strides and kernel sizes, and the patch padded to a valid size.

/// Smallest edge length of a bottleneck feature map.
pub const MIN_FEATURE_MAP_EDGE: f64 = 4.0;

/// The topology of a U-Net for one patch size.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Per stage, per axis: 1 or 2 (the first stage is all ones).
    pub strides: Vec<Vec<usize>>,
    /// Per stage, per axis: 1 or 3.
    pub kernel_sizes: Vec<Vec<usize>>,
    /// The patch padded up to a multiple of `divisor`.
    pub patch_size: Vec<usize>,
    /// Per axis, 2^(number of poolings).
    pub divisor: Vec<usize>,
}

/// Plans pooling axis by axis: an axis is pooled while its feature map is at least 8 voxels and its
/// spacing is less than twice the finest spacing among the poolable axes; a lone poolable axis needs
/// 12 voxels. An axis gets 3-wide kernels once its spacing is within 2x of the finest spacing.
///
/// `patch_size` may hold fractional values (nnU-Net clips the initial patch to a median shape that can
/// end in .5); padding truncates after rounding up, as numpy's `astype(int)` does.
pub fn plan_topology(spacing: &[f64], patch_size: &[f64]) -> Topology {
    let dim = spacing.len();
    let mut current_spacing = spacing.to_vec();
    let mut current_size = patch_size.to_vec();
    let mut pools_per_axis = vec![0u32; dim];
    let mut kernel = vec![1usize; dim];
    let mut strides = vec![vec![1usize; dim]];
    let mut kernel_sizes = Vec::new();
    loop {
        let poolable: Vec<usize> = (0..dim).filter(|&i| current_size[i] >= 2.0 * MIN_FEATURE_MAP_EDGE).collect();
        if poolable.is_empty() {
            break;
        }
        let finest = poolable.iter().map(|&i| current_spacing[i]).fold(f64::INFINITY, f64::min);
        let poolable: Vec<usize> = poolable.into_iter().filter(|&i| current_spacing[i] / finest < 2.0).collect();
        if poolable.len() == 1 && current_size[poolable[0]] < 3.0 * MIN_FEATURE_MAP_EDGE {
            break;
        }
        if poolable.is_empty() {
            break;
        }
        let finest_overall = current_spacing.iter().copied().fold(f64::INFINITY, f64::min);
        for d in 0..dim {
            if kernel[d] != 3 && current_spacing[d] / finest_overall < 2.0 {
                kernel[d] = 3;
            }
        }
        let mut stride = vec![1usize; dim];
        for &axis in &poolable {
            stride[axis] = 2;
            pools_per_axis[axis] += 1;
            current_spacing[axis] *= 2.0;
            current_size[axis] = (current_size[axis] / 2.0).ceil();
        }
        strides.push(stride);
        kernel_sizes.push(kernel.clone());
    }
    kernel_sizes.push(vec![3; dim]);
    let divisor: Vec<usize> = pools_per_axis.iter().map(|&p| 1usize << p).collect();
    let patch_size = patch_size.iter().zip(&divisor).map(|(&size, &d)| pad_to_multiple(size, d as f64)).collect();
    Topology { strides, kernel_sizes, patch_size, divisor }
}

/// nnU-Net's `pad_shape`: the next multiple of `divisor` at or above `size`.
fn pad_to_multiple(size: f64, divisor: f64) -> usize {
    let remainder = size % divisor;
    let padded = if remainder == 0.0 { size } else { size + divisor - remainder };
    padded as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotropic_hippocampus_patch() {
        // Worked by hand from the rule (and nnU-Net's Dataset004 plans): 40x56x40 at 1 mm pools 3 times.
        let t = plan_topology(&[1.0, 1.0, 1.0], &[36.0, 50.0, 35.0]);
        assert_eq!(t.strides, vec![vec![1, 1, 1], vec![2, 2, 2], vec![2, 2, 2], vec![2, 2, 2]]);
        assert_eq!(t.kernel_sizes, vec![vec![3, 3, 3]; 4]);
        assert_eq!(t.divisor, vec![8, 8, 8]);
        assert_eq!(t.patch_size, vec![40, 56, 40]);
    }

    #[test]
    fn anisotropic_axis_joins_late_with_in_plane_kernels_first() {
        // spacing (2.5, 0.8, 0.8): axis 0 is not pooled until the others reach 1.6 mm, and keeps 1-wide
        // kernels until then (a CT-like spacing under the rule of `nnunetv2/experiment_planning/experiment_planners/
        // network_topology.py: get_pool_and_conv_props`: strides [1,2,2] then [2,2,2]).
        let t = plan_topology(&[2.5, 0.8, 0.8], &[64.0, 192.0, 160.0]);
        assert_eq!(t.strides[1], vec![1, 2, 2]);
        assert_eq!(t.strides[2], vec![2, 2, 2]);
        assert_eq!(t.kernel_sizes[0], vec![1, 3, 3]);
        assert_eq!(t.kernel_sizes[1], vec![3, 3, 3]);
        assert_eq!(t.strides.len(), 6);
    }

    #[test]
    fn padding_keeps_exact_multiples_and_rounds_fractions_up() {
        assert_eq!(pad_to_multiple(40.0, 8.0), 40);
        assert_eq!(pad_to_multiple(35.5, 8.0), 40);
        assert_eq!(pad_to_multiple(33.0, 8.0), 40);
    }
}
