//! How per-class scores become a label map (nnU-Net's `LabelManager`): argmax over classes, or for
//! region-based datasets each region painted in `regions_class_order` where its probability exceeds 0.5.

use crate::Descriptor;
use ndarray::{Array3, ArrayView4, Axis, Zip};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Labelling {
    /// Softmax over classes; the label is the index of the largest score.
    Classes,
    /// Sigmoid per region; regions painted in this order where their probability exceeds 0.5.
    Regions(Vec<i64>),
}

impl Labelling {
    pub fn of(descriptor: &Descriptor) -> Result<Self, String> {
        if !descriptor.is_region_based() {
            return Ok(Self::Classes);
        }
        descriptor
            .regions_class_order
            .clone()
            .map(Self::Regions)
            .ok_or_else(|| "region-based labels need \"regions_class_order\"".to_owned())
    }

    /// Labels from scores `(c, z, y, x)`: logits or probabilities for classes (argmax is the same),
    /// probabilities for regions.
    pub fn labels(&self, scores: ArrayView4<f32>) -> Array3<u16> {
        let shape = (scores.shape()[1], scores.shape()[2], scores.shape()[3]);
        let mut labels = Array3::<u16>::zeros(shape);
        match self {
            Self::Classes => Zip::from(&mut labels).and(scores.lanes(Axis(0))).for_each(|label, lane| {
                // the first of equal maxima, as numpy's argmax
                let mut best = 0;
                for (c, &v) in lane.iter().enumerate() {
                    if v > lane[best] {
                        best = c;
                    }
                }
                *label = best as u16;
            }),
            Self::Regions(order) => {
                for (region, &label) in order.iter().enumerate() {
                    Zip::from(&mut labels).and(scores.index_axis(Axis(0), region)).for_each(|l, &p| {
                        if p > 0.5 {
                            *l = label as u16;
                        }
                    });
                }
            }
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array4, array};

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        let scores = Array4::from_shape_vec((3, 1, 1, 3), vec![1.0, 0.0, 2.0, 1.0, 5.0, 2.0, 0.5, 5.0, 1.0]).unwrap();
        assert_eq!(Labelling::Classes.labels(scores.view()), array![[[0u16, 1, 0]]]);
    }

    #[test]
    fn regions_are_painted_in_order() {
        // voxel 0: both regions fire, the later one (label 2) wins; voxel 1: only the first
        let scores = Array4::from_shape_vec((2, 1, 1, 2), vec![0.9, 0.8, 0.7, 0.2]).unwrap();
        assert_eq!(Labelling::Regions(vec![1, 2]).labels(scores.view()), array![[[2u16, 1]]]);
    }
}
