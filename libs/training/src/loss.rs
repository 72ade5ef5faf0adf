//! nnU-Net's losses with `MemoryEfficientSoftDiceLoss` (smooth 1e-5): `DC_and_CE_loss` for labels
//! (softmax, background excluded from the Dice), `DC_and_BCE_loss` for regions (sigmoid, every region),
//! both honouring an ignore label; and nnU-Net's deep-supervision weighting.

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
                // the mean over unignored voxels, 0 when all are ignored (as nnU-Net skips the term),
                // without reading the count back from the device
                let original = labels.where_self(&mask.squeeze_dim(1).to_kind(Kind::Bool), &labels.full_like(ignore));
                let per_voxel = logits.cross_entropy_loss::<Tensor>(&original, None, Reduction::None, ignore, 0.0);
                per_voxel.sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0)
            }
            _ => logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, NO_IGNORE, 0.0),
        }
    }

    fn dice(&self, logits: &Tensor, target: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let probabilities = logits.softmax(1, Kind::Float);
        let classes = logits.size()[1];
        // background excluded: channels 1..; the one-hot is boolean (a quarter of nnU-Net's float32
        // y_onehot in MemoryEfficientSoftDiceLoss, kept until the backward pass): products and sums with
        // it promote to float32 with the same values
        let reference = tch::no_grad(|| {
            Tensor::zeros(probabilities.size(), (Kind::Bool, probabilities.device()))
                .scatter_value(1, target, 1)
                .narrow(1, 1, classes - 1)
        });
        soft_dice(&probabilities.narrow(1, 1, classes - 1), &reference, mask, self.batch_dice)
    }
}

/// `MemoryEfficientSoftDiceLoss` on probabilities and a one-hot reference `(b, c, ...)`, float or bool,
/// inside `mask` `(b, 1, ...)` if given: minus the mean Dice over channels (and samples, unless
/// `batch_dice`).
fn soft_dice(probabilities: &Tensor, reference: &Tensor, mask: Option<&Tensor>, batch_dice: bool) -> Tensor {
    let spatial: Vec<i64> = (2..probabilities.dim() as i64).collect();
    let sum = |t: &Tensor| t.sum_dim_intlist(spatial.as_slice(), false, Kind::Float);
    let masked = |t: &Tensor| match mask {
        Some(m) => t * m,
        None => t.shallow_clone(),
    };
    let reference = tch::no_grad(|| masked(reference));
    let probabilities = masked(probabilities);
    let mut intersection = sum(&(&probabilities * &reference));
    let mut predicted = sum(&probabilities);
    let mut reference = sum(&reference);
    if batch_dice {
        let batch = [0i64];
        intersection = intersection.sum_dim_intlist(batch.as_slice(), false, Kind::Float);
        predicted = predicted.sum_dim_intlist(batch.as_slice(), false, Kind::Float);
        reference = reference.sum_dim_intlist(batch.as_slice(), false, Kind::Float);
    }
    let dice = (intersection * 2.0 + SMOOTH) / (reference + predicted + SMOOTH).clamp_min(1e-8);
    -dice.mean(Kind::Float)
}

/// Binary cross-entropy plus soft Dice (weights 1 and 1) for region training, on sigmoid outputs.
#[derive(Debug, Clone, Copy)]
pub struct DiceBceLoss {
    pub batch_dice: bool,
    /// The target's last channel marks ignored voxels (the dataset has an ignore label).
    pub ignore_channel: bool,
}

impl DiceBceLoss {
    /// Loss of `logits` `(b, r, ...)` against region masks `target` `(b, r, ...)`, or `(b, r + 1, ...)`
    /// with the ignored voxels last.
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Tensor {
        let regions = logits.size()[1];
        let target = target.to_kind(Kind::Float);
        let (target, mask) = if self.ignore_channel {
            (target.narrow(1, 0, regions), Some(1.0 - target.narrow(1, regions, 1)))
        } else {
            (target, None)
        };
        let dice = soft_dice(&logits.sigmoid(), &target, mask.as_ref(), self.batch_dice);
        let cross_entropy = match &mask {
            Some(mask) => {
                let elementwise =
                    logits.binary_cross_entropy_with_logits::<Tensor>(&target, None, None, Reduction::None);
                (elementwise * mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1e-8)
            }
            None => logits.binary_cross_entropy_with_logits::<Tensor>(&target, None, None, Reduction::Mean),
        };
        dice + cross_entropy
    }
}

/// The training objective: labels (softmax) or regions (sigmoid).
#[derive(Debug, Clone, Copy)]
pub enum Objective {
    Labels(DiceCeLoss),
    Regions(DiceBceLoss),
}

impl Objective {
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Tensor {
        match self {
            Self::Labels(loss) => loss.forward(logits, target),
            Self::Regions(loss) => loss.forward(logits, target),
        }
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
    fn fixture() -> serde_json::Value {
        serde_json::from_str(include_str!("../../../tests/fixtures/losses/losses.json")).unwrap()
    }

    fn fixture_tensor(fixture: &serde_json::Value, key: &str, shape: &[i64]) -> Tensor {
        let values: Vec<f32> = fixture[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        Tensor::from_slice(&values).view(shape)
    }

    /// nnU-Net 2.8.1's `DC_and_BCE_loss` on the same inputs (tests/fixtures/losses/make_fixture.py),
    /// with and without batch Dice and the ignore channel. Its quirk is kept: with an ignore label the
    /// cross-entropy is summed over regions but divided by the count of unignored voxels once.
    #[test]
    fn region_loss_matches_nnunet() {
        let fixture = fixture();
        let logits = fixture_tensor(&fixture, "logits", &[2, 3, 4, 5, 6]);
        let target = fixture_tensor(&fixture, "target", &[2, 4, 4, 5, 6]);
        for batch_dice in [false, true] {
            for ignore in [false, true] {
                let key = format!(
                    "batch_dice={},ignore={}",
                    if batch_dice { "True" } else { "False" },
                    if ignore { "True" } else { "False" }
                );
                let expected = fixture["losses"][&key].as_f64().unwrap();
                let target = if ignore { target.shallow_clone() } else { target.narrow(1, 0, 3) };
                let loss =
                    DiceBceLoss { batch_dice, ignore_channel: ignore }.forward(&logits, &target).double_value(&[]);
                assert!((loss - expected).abs() < 1e-5, "{key}: {loss} vs nnU-Net's {expected}");
            }
        }
    }

    /// nnU-Net 2.8.1's `DC_and_CE_loss` with ignore label 3 on the same inputs, and on a label map
    /// ignored everywhere (only the Dice's smoothing term is left: -1).
    #[test]
    fn label_loss_with_an_ignore_label_matches_nnunet() {
        let fixture = fixture();
        let logits = fixture_tensor(&fixture, "logits", &[2, 3, 4, 5, 6]);
        let labels = fixture_tensor(&fixture, "labels", &[2, 1, 4, 5, 6]).to_kind(Kind::Int64);
        for batch_dice in [false, true] {
            let loss = DiceCeLoss { batch_dice, ignore_label: Some(3) };
            let python = if batch_dice { "True" } else { "False" };
            for (suffix, target) in [("", labels.shallow_clone()), (",all_ignored", labels.full_like(3))] {
                let key = format!("labels,batch_dice={python}{suffix}");
                let expected = fixture["losses"][&key].as_f64().unwrap();
                let value = loss.forward(&logits, &target).double_value(&[]);
                assert!((value - expected).abs() < 1e-5, "{key}: {value} vs nnU-Net's {expected}");
            }
        }
    }
}
