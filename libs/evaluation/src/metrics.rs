//! Confusion counts and overlap metrics of one class (a set of labels) in one case.

use ndarray::{ArrayView3, Zip};
use serde::Serialize;

/// nnU-Net's per-class metrics (fields in summary.json's sorted key order); Dice and IoU are NaN when
/// reference and prediction are both empty. HD95 (mm) and NSD are ours, present when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    #[serde(rename = "Dice")]
    pub dice: f64,
    #[serde(rename = "FN")]
    pub fn_: u64,
    #[serde(rename = "FP")]
    pub fp: u64,
    #[serde(rename = "HD95", skip_serializing_if = "Option::is_none")]
    pub hd95: Option<f64>,
    #[serde(rename = "IoU")]
    pub iou: f64,
    #[serde(rename = "NSD", skip_serializing_if = "Option::is_none")]
    pub nsd: Option<f64>,
    #[serde(rename = "TN")]
    pub tn: u64,
    #[serde(rename = "TP")]
    pub tp: u64,
    pub n_pred: u64,
    pub n_ref: u64,
}

/// Metrics of the class made of `labels` (one label, or the labels of a region); voxels whose
/// reference is `ignore` count nowhere.
pub fn class_metrics(
    reference: ArrayView3<i32>,
    prediction: ArrayView3<i32>,
    labels: &[i64],
    ignore: Option<i64>,
) -> ClassMetrics {
    let (mut tp, mut fp, mut fn_, mut tn) = (0u64, 0u64, 0u64, 0u64);
    let member = |v: i32| labels.contains(&i64::from(v));
    Zip::from(reference).and(prediction).for_each(|&r, &p| {
        if ignore == Some(i64::from(r)) {
            return;
        }
        match (member(r), member(p)) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
    });
    let (dice, iou) = if tp + fp + fn_ == 0 {
        (f64::NAN, f64::NAN)
    } else {
        (2.0 * tp as f64 / (2 * tp + fp + fn_) as f64, tp as f64 / (tp + fp + fn_) as f64)
    };
    ClassMetrics { dice, fn_, fp, hd95: None, iou, nsd: None, tn, tp, n_pred: tp + fp, n_ref: tp + fn_ }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn hand_computed_counts() {
        let reference = Array3::from_shape_vec((1, 2, 3), vec![0, 1, 1, 2, 2, 9]).unwrap();
        let prediction = Array3::from_shape_vec((1, 2, 3), vec![1, 1, 0, 2, 1, 1]).unwrap();
        let one = class_metrics(reference.view(), prediction.view(), &[1], Some(9));
        // voxel 5 is ignored; label 1: TP at 1, FP at 0 and 4, FN at 2, TN at 3
        assert_eq!((one.tp, one.fp, one.fn_, one.tn), (1, 2, 1, 1));
        assert_eq!(one.dice, 2.0 / 5.0);
        assert_eq!(one.iou, 1.0 / 4.0);
        let region = class_metrics(reference.view(), prediction.view(), &[1, 2], Some(9));
        assert_eq!((region.tp, region.fp, region.fn_, region.tn), (3, 1, 1, 0));
        let absent = class_metrics(reference.view(), prediction.view(), &[3], None);
        assert!(absent.dice.is_nan() && absent.iou.is_nan());
        assert_eq!(absent.tn, 6);
    }
}
