//! The way back from a prediction to the input image's geometry (nnU-Net's
//! `convert_predicted_logits_to_segmentation_with_correct_shape`): logits resampled from the
//! configuration's spacing to the cropped input shape with the probabilities' resampling settings, then
//! put back into the uncropped volume and transposed back to the input's axis order.

use crate::case::{Properties, Recipe};
use crate::resampling::{Resampling, resample_image, separate_z_axis};
use ndarray::{Array3, Array4, ArrayView3, Axis, s};

/// How a case's logits go from the configuration's spacing back to its shape after cropping: the
/// probabilities' resampling settings and the thick axis resampled separately, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogitsResampling {
    pub shape: [usize; 3],
    pub separate_axis: Option<usize>,
    pub how: Resampling,
}

impl LogitsResampling {
    pub fn of(properties: &Properties, recipe: &Recipe) -> Self {
        let case_spacing: Vec<f64> = recipe.transpose_forward.iter().map(|&a| properties.spacing[a]).collect();
        let mut current_spacing = recipe.configuration.spacing.clone();
        if current_spacing.len() == 2 {
            current_spacing.insert(0, case_spacing[0]);
        }
        let how = Self::probabilities_resampling(recipe);
        let separate_axis = separate_z_axis(how.force_separate_z, &current_spacing, &case_spacing);
        Self { shape: properties.shape_after_cropping_and_before_resampling, separate_axis, how }
    }

    /// Straight to `shape`, the next stage's preprocessed shape, as nnU-Net resamples a 3d_lowres
    /// prediction for 3d_cascade_fullres (`resample_and_save`): it passes this configuration's spacing
    /// as both the current and the target spacing, so that spacing alone decides the separate axis.
    pub fn to_next_stage(recipe: &Recipe, shape: [usize; 3]) -> Self {
        let how = Self::probabilities_resampling(recipe);
        let spacing = &recipe.configuration.spacing;
        Self { shape, separate_axis: separate_z_axis(how.force_separate_z, spacing, spacing), how }
    }

    fn probabilities_resampling(recipe: &Recipe) -> Resampling {
        let kwargs = &recipe.configuration.resampling_fn_probabilities_kwargs;
        Resampling { order: kwargs.order, order_z: kwargs.order_z, force_separate_z: kwargs.force_separate_z }
    }

    /// Resamples per-class logits `(c, z, y, x)` of a preprocessed case to its shape after cropping.
    pub fn apply(&self, logits: &Array4<f32>) -> Array4<f32> {
        let shape = self.shape;
        let mut output = Array4::<f32>::zeros((logits.shape()[0], shape[0], shape[1], shape[2]));
        for (mut out, channel) in output.axis_iter_mut(Axis(0)).zip(logits.axis_iter(Axis(0))) {
            out.assign(&resample_image(channel, shape, self.separate_axis, self.how));
        }
        output
    }
}

/// Puts a volume of the cropped shape back into the uncropped one (`outside` elsewhere) and transposes
/// it back to the input image's axis order.
pub fn to_input_geometry<T: Clone>(
    cropped: ArrayView3<T>,
    properties: &Properties,
    recipe: &Recipe,
    outside: T,
) -> Array3<T> {
    let mut full = Array3::from_elem(properties.shape_before_cropping, outside);
    let b = properties.bbox_used_for_cropping;
    full.slice_mut(s![b[0][0]..b[0][1], b[1][0]..b[1][1], b[2][0]..b[2][1]]).assign(&cropped);
    transpose_back(full, recipe.transpose_forward)
}

/// Undoes `array.permuted_axes(forward)`.
fn transpose_back<T: Clone>(array: Array3<T>, forward: [usize; 3]) -> Array3<T> {
    let backward = [0, 1, 2].map(|a| forward.iter().position(|&f| f == a).expect("a permutation"));
    array.permuted_axes(backward).as_standard_layout().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposing_back_restores_the_input_order() {
        let input = Array3::from_shape_fn((2, 3, 4), |(z, y, x)| z * 100 + y * 10 + x);
        for forward in [[0, 1, 2], [2, 0, 1], [1, 0, 2], [1, 2, 0]] {
            let moved = input.clone().permuted_axes(forward).as_standard_layout().into_owned();
            assert_eq!(transpose_back(moved, forward), input, "{forward:?}");
        }
    }
}
