//! Intensity statistics over a multiset given as (value, multiplicity) pairs, with numpy's
//! definitions: population standard deviation, linearly interpolated percentiles.

use nntools_dataset::IntensityStats;
use nntools_numpy::stats::{Interpolation, percentile_of_sorted};

/// Sorts and merges (value, count) pairs so every value appears once.
pub fn merge_counts(mut pairs: Vec<(f32, u64)>) -> Vec<(f32, u64)> {
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f32, u64)> = Vec::with_capacity(pairs.len());
    for (value, count) in pairs {
        match merged.last_mut() {
            Some(last) if last.0 == value => last.1 += count,
            _ => merged.push((value, count)),
        }
    }
    merged
}

/// Statistics of merged pairs (sorted, unique values, positive counts); `None` for an empty multiset.
/// Results are rounded to `f32`, as numpy computes them on nnU-Net's float32 samples.
pub fn intensity_stats(sorted: &[(f32, u64)]) -> Option<IntensityStats> {
    let total: u64 = sorted.iter().map(|p| p.1).sum();
    if total == 0 {
        return None;
    }
    let n = total as f64;
    let mean = sorted.iter().map(|&(v, c)| f64::from(v) * c as f64).sum::<f64>() / n;
    let variance = sorted.iter().map(|&(v, c)| (f64::from(v) - mean).powi(2) * c as f64).sum::<f64>() / n;
    let percentile = |q: f64| {
        percentile_of_sorted(total as usize, q, Interpolation::Linear, |rank| {
            f64::from(value_at_rank(sorted, rank as u64))
        })
    };
    let as_f32 = |v: f64| f64::from(v as f32);
    Some(IntensityStats {
        max: f64::from(sorted[sorted.len() - 1].0),
        mean: as_f32(mean),
        median: as_f32(percentile(50.0)),
        min: f64::from(sorted[0].0),
        percentile_00_5: as_f32(percentile(0.5)),
        percentile_99_5: as_f32(percentile(99.5)),
        std: as_f32(variance.sqrt()),
    })
}

/// The value at 0-based `rank` in the sorted expansion of the pairs.
fn value_at_rank(sorted: &[(f32, u64)], rank: u64) -> f32 {
    let mut seen = 0;
    for &(value, count) in sorted {
        seen += count;
        if rank < seen {
            return value;
        }
    }
    sorted[sorted.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_on_a_small_sample() {
        // numpy: a = [3, 1, 4, 1, 5, 9, 2, 6] (float32); percentile 0.5 / 50 / 99.5 -> 1.0, 3.5, 8.895;
        // mean 3.875, std 2.5708704
        let pairs = merge_counts([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0].map(|v| (v, 1)).to_vec());
        assert_eq!(pairs.len(), 7);
        let s = intensity_stats(&pairs).unwrap();
        assert_eq!((s.min, s.max, s.mean, s.median), (1.0, 9.0, 3.875, 3.5));
        assert_eq!(s.percentile_00_5, 1.0);
        assert_eq!(s.percentile_99_5 as f32, 8.895_f32);
        assert_eq!(s.std as f32, 2.570_870_4_f32);
    }

    #[test]
    fn counts_weight_values() {
        // [0, 0, 0, 10]: mean 2.5, median 0, std sqrt(18.75)
        let s = intensity_stats(&merge_counts(vec![(10.0, 1), (0.0, 2), (0.0, 1)])).unwrap();
        assert_eq!((s.mean, s.median, s.max), (2.5, 0.0, 10.0));
        assert_eq!(s.std as f32, 18.75f64.sqrt() as f32);
        assert!(intensity_stats(&[]).is_none());
    }
}
