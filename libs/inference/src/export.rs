//! From fold-averaged logits at the configuration's spacing to what is written (nnunet-spec 8.4):
//! logits resampled to the cropped input shape and rounded to fp16 as nnU-Net keeps them, labels by
//! argmax (or by region order), probabilities by softmax (or sigmoid), both put back into the input
//! image's extent and axis order.

use half::f16;
use ndarray::{Array3, Array4, ArrayView3, Axis};
use nntools_dataset::Labelling;
use nntools_preprocessing::{logits_to_cropped_shape, to_input_geometry, Properties, Recipe};

/// Labels and, when asked for, per-class probabilities `(c, z, y, x)`, both in the input geometry.
pub struct Exported {
    pub labels: Array3<u16>,
    pub probabilities: Option<Array4<f32>>,
}

/// Rounds to the nearest fp16 value, as nnU-Net's fp16 logits are after resampling.
fn round_to_half(values: &mut Array4<f32>) {
    values.mapv_inplace(|v| f16::from_f32(v).to_f32());
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

/// Exports fold-averaged logits `(c, z, y, x)` of a preprocessed case.
pub fn export(logits: &Array4<f32>, properties: &Properties, recipe: &Recipe, labelling: &Labelling, with_probabilities: bool) -> Exported {
    let mut cropped = logits_to_cropped_shape(logits, properties, recipe);
    round_to_half(&mut cropped);
    let needs_probabilities = with_probabilities || matches!(labelling, Labelling::Regions(_));
    let cropped_probabilities = needs_probabilities.then(|| probabilities(&cropped, labelling));
    let cropped_labels = labelling.labels(cropped_probabilities.as_ref().unwrap_or(&cropped).view());
    let labels = to_input_geometry(cropped_labels.view(), properties, recipe, 0);
    let probabilities = with_probabilities.then(|| {
        let cropped = cropped_probabilities.expect("computed when asked for");
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

    #[test]
    fn softmax_sums_to_one_per_voxel() {
        let logits = Array4::from_shape_vec((2, 1, 1, 2), vec![0.0, 3.0, 0.0, -1.0]).unwrap();
        let p = probabilities(&logits, &Labelling::Classes);
        assert!((p[[0, 0, 0, 0]] - 0.5).abs() < 1e-7);
        assert!((p[[0, 0, 0, 1]] + p[[1, 0, 0, 1]] - 1.0).abs() < 1e-6);
        assert!((p[[0, 0, 0, 1]] - 1.0 / (1.0 + (-4.0f32).exp())).abs() < 1e-6);
    }
}
