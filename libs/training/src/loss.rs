//! `DC_and_CE_loss` with `MemoryEfficientSoftDiceLoss` (softmax, background excluded, smooth 1e-5)
//! and nnU-Net's deep-supervision weighting.

use tch::{Kind, Reduction, Tensor};

const SMOOTH: f64 = 1e-5;
/// torch's default `ignore_index`: no label is ignored.
const NO_IGNORE: i64 = -100;

/// Cross-entropy plus soft Dice (weights 1 and 1) for label training.
#[derive(Debug, Clone, Copy)]
pub struct DiceCeLoss {
    /// Sum Dice statistics over the batch as well as space (the plans' `batch_dice`).
    pub batch_dice: bool,
    /// The dataset's ignore label, if any: excluded from both terms.
    pub ignore_label: Option<i64>,
}

impl DiceCeLoss {
    /// Loss of `logits` `(b, c, ...)` against integer `target` `(b, 1, ...)`.
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Tensor {
        let target = target.to_kind(Kind::Int64);
        let (mask, target) = match self.ignore_label {
            Some(ignore) => {
                let mask = target.ne(ignore);
                let cleaned = target.where_self(&mask, &target.zeros_like());
                (Some(mask.to_kind(Kind::Float)), cleaned)
            }
            None => (None, target),
        };
        self.dice(logits, &target, mask.as_ref()) + self.cross_entropy(logits, &target, mask.as_ref())
    }

    fn cross_entropy(&self, logits: &Tensor, target: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let labels = target.squeeze_dim(1);
        match (mask, self.ignore_label) {
            (Some(mask), Some(ignore)) => {
                // all voxels ignored: the term is 0, not NaN
                if mask.sum(Kind::Float).double_value(&[]) == 0.0 {
                    return logits.sum(Kind::Float) * 0.0;
                }
                let original = labels.where_self(&mask.squeeze_dim(1).to_kind(Kind::Bool), &labels.full_like(ignore));
                logits.cross_entropy_loss::<Tensor>(&original, None, Reduction::Mean, ignore, 0.0)
            }
            _ => logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, NO_IGNORE, 0.0),
        }
    }

    fn dice(&self, logits: &Tensor, target: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let probabilities = logits.softmax(1, Kind::Float);
        let classes = logits.size()[1];
        let spatial: Vec<i64> = (2..logits.dim() as i64).collect();
        let sum = |t: &Tensor| t.sum_dim_intlist(spatial.as_slice(), false, Kind::Float);
        let masked = |t: Tensor| match mask {
            Some(m) => t * m,
            None => t,
        };
        // background excluded: channels 1..
        let reference_onehot =
            tch::no_grad(|| masked(probabilities.zeros_like().scatter_value(1, target, 1.0).narrow(1, 1, classes - 1)));
        let foreground = masked(probabilities.narrow(1, 1, classes - 1));
        let mut intersection = sum(&(&foreground * &reference_onehot));
        let mut predicted = sum(&foreground);
        let mut reference = sum(&reference_onehot);
        if self.batch_dice {
            let batch = [0i64];
            intersection = intersection.sum_dim_intlist(batch.as_slice(), false, Kind::Float);
            predicted = predicted.sum_dim_intlist(batch.as_slice(), false, Kind::Float);
            reference = reference.sum_dim_intlist(batch.as_slice(), false, Kind::Float);
        }
        let dice = (intersection * 2.0 + SMOOTH) / (reference + predicted + SMOOTH).clamp_min(1e-8);
        -dice.mean(Kind::Float)
    }

    /// The weighted sum over deep-supervision outputs (full resolution first); outputs whose weight
    /// is zero are not evaluated.
    pub fn deep_supervision(&self, outputs: &[Tensor], targets: &[Tensor], weights: &[f64]) -> Tensor {
        outputs
            .iter()
            .zip(targets)
            .zip(weights)
            .filter(|(_, w)| **w != 0.0)
            .map(|((o, t), &w)| self.forward(o, t) * w)
            .reduce(|a, b| a + b)
            .expect("at least one weighted output")
    }
}

/// nnU-Net's deep-supervision weights for `outputs` heads: 1/2^k, the lowest resolution set to 0,
/// normalised to sum 1 (4 stages: 0.667, 0.333, 0).
pub fn deep_supervision_weights(outputs: usize) -> Vec<f64> {
    let mut weights: Vec<f64> = (0..outputs).map(|k| 1.0 / f64::from(1u32 << k)).collect();
    if outputs > 1 {
        weights[outputs - 1] = 0.0;
    }
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_as_documented() {
        let w = deep_supervision_weights(3);
        assert!((w[0] - 2.0 / 3.0).abs() < 1e-12 && (w[1] - 1.0 / 3.0).abs() < 1e-12 && w[2] == 0.0);
        let w = deep_supervision_weights(5);
        let expected = [0.5333333, 0.2666667, 0.1333333, 0.0666667, 0.0];
        assert!(w.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{w:?}");
    }

    #[test]
    fn perfect_prediction_has_dice_minus_one() {
        let target = Tensor::from_slice(&[0i64, 1, 2, 1]).view([1, 1, 2, 2]);
        let logits = target.squeeze_dim(1).one_hot(3).permute([0, 3, 1, 2]).to_kind(Kind::Float) * 100.0;
        let loss = DiceCeLoss { batch_dice: false, ignore_label: None }.forward(&logits, &target).double_value(&[]);
        assert!((loss + 1.0).abs() < 1e-4, "{loss}");
    }
}
