//! Per-channel intensity normalisation, nnU-Net's schemes (applied before resampling).

use ndarray::{ArrayView3, ArrayViewMut3, Zip};
use nntools_dataset::IntensityStats;

/// nnU-Net's epsilon guarding divisions by a standard deviation or range (float32 data).
const EPS: f64 = 1e-8;

/// A normalisation scheme by its nnU-Net class name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Clip to the dataset's foreground 0.5/99.5 percentiles, subtract its mean, divide by its std.
    Ct,
    /// Per-image z-score, over the nonzero region when the mask is used.
    ZScore,
    /// Shift to minimum 0, divide by the maximum.
    RescaleTo01,
    /// Divide by 255.
    RgbTo01,
    /// Leave as it is.
    None,
}

impl Scheme {
    pub fn from_class_name(name: &str) -> Option<Self> {
        Some(match name {
            "CTNormalization" => Self::Ct,
            "ZScoreNormalization" => Self::ZScore,
            "RescaleTo01Normalization" => Self::RescaleTo01,
            "RGBTo01Normalization" => Self::RgbTo01,
            "NoNormalization" => Self::None,
            _ => return None,
        })
    }
}

/// Normalises one channel in place. `inside` marks the nonzero region (label map >= 0); it is used by
/// z-score when `use_mask` is set. `stats` are the fingerprint's foreground statistics (CT only).
pub fn normalize(
    image: &mut ArrayViewMut3<f32>,
    inside: &ArrayView3<bool>,
    scheme: Scheme,
    use_mask: bool,
    stats: &IntensityStats,
) -> Result<(), String> {
    match scheme {
        Scheme::Ct => {
            let (lo, hi) = (stats.percentile_00_5 as f32, stats.percentile_99_5 as f32);
            let (mean, std) = (stats.mean as f32, stats.std.max(EPS) as f32);
            image.mapv_inplace(|v| (v.clamp(lo, hi) - mean) / std);
        }
        Scheme::ZScore if use_mask => {
            let (mean, std) = mean_std(image.view(), Some(inside));
            let (mean, std) = (mean as f32, std.max(EPS) as f32);
            Zip::from(image).and(inside).for_each(|v, &m| {
                if m {
                    *v = (*v - mean) / std;
                }
            });
        }
        Scheme::ZScore => {
            let (mean, std) = mean_std(image.view(), None);
            let (mean, std) = (mean as f32, std.max(EPS) as f32);
            image.mapv_inplace(|v| (v - mean) / std);
        }
        Scheme::RescaleTo01 => {
            let min = image.iter().copied().fold(f32::INFINITY, f32::min);
            image.mapv_inplace(|v| v - min);
            let max = image.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let max = f64::from(max).max(EPS) as f32;
            image.mapv_inplace(|v| v / max);
        }
        Scheme::RgbTo01 => {
            if image.iter().any(|v| !(0.0..=255.0).contains(v)) {
                return Err("RGBTo01Normalization needs intensities in 0..255".into());
            }
            image.mapv_inplace(|v| v / 255.0);
        }
        Scheme::None => {}
    }
    Ok(())
}

/// Mean and population standard deviation of the values `keep` selects (all without it), accumulated
/// in f64 over two passes.
fn mean_std(values: ArrayView3<f32>, keep: Option<&ArrayView3<bool>>) -> (f64, f64) {
    let values = values.as_standard_layout();
    let values = values.as_slice().expect("standard layout");
    let keep = keep.map(|keep| keep.as_standard_layout());
    let keep = keep.as_ref().map(|keep| keep.as_slice().expect("standard layout"));
    let (sum, count) = kept_sum(values, keep, f64::from);
    if count == 0 {
        return (0.0, 0.0);
    }
    let mean = sum / count as f64;
    let (squares, _) = kept_sum(values, keep, |v| (f64::from(v) - mean).powi(2));
    (mean, (squares / count as f64).sqrt())
}

/// The sum of `term` over the values `keep` selects (all without it), and their count; in eight
/// running sums, so that the loop vectorises.
fn kept_sum(values: &[f32], keep: Option<&[bool]>, term: impl Fn(f32) -> f64) -> (f64, usize) {
    const LANES: usize = 8;
    let mut sums = [0.0; LANES];
    let mut counts = [0usize; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    match keep {
        Some(keep) => {
            let keep_chunks = keep.chunks_exact(LANES);
            let keep_rest = keep_chunks.remainder();
            for (v, k) in chunks.zip(keep_chunks) {
                for lane in 0..LANES {
                    sums[lane] += if k[lane] { term(v[lane]) } else { 0.0 };
                    counts[lane] += usize::from(k[lane]);
                }
            }
            for (&v, &k) in rest.iter().zip(keep_rest) {
                sums[0] += if k { term(v) } else { 0.0 };
                counts[0] += usize::from(k);
            }
        }
        None => {
            for v in chunks {
                for lane in 0..LANES {
                    sums[lane] += term(v[lane]);
                }
            }
            sums[0] += rest.iter().map(|&v| term(v)).sum::<f64>();
            counts[0] = values.len();
        }
    }
    (sums.iter().sum(), counts.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn stats() -> IntensityStats {
        IntensityStats {
            max: 0.0,
            mean: 50.0,
            median: 0.0,
            min: 0.0,
            percentile_00_5: 0.0,
            percentile_99_5: 100.0,
            std: 25.0,
        }
    }

    #[test]
    fn ct_clips_then_standardises_with_dataset_values() {
        let mut image = Array3::from_shape_vec((1, 1, 4), vec![-500.0, 0.0, 75.0, 3000.0]).unwrap();
        let inside = Array3::from_elem((1, 1, 4), true);
        normalize(&mut image.view_mut(), &inside.view(), Scheme::Ct, true, &stats()).unwrap();
        assert_eq!(image.into_raw_vec_and_offset().0, [-2.0, -2.0, 1.0, 2.0]);
    }

    #[test]
    fn masked_zscore_leaves_outside_untouched() {
        // inside values 2, 4, 6: mean 4, population std sqrt(8/3)
        let mut image = Array3::from_shape_vec((1, 1, 4), vec![0.0, 2.0, 4.0, 6.0]).unwrap();
        let inside = Array3::from_shape_vec((1, 1, 4), vec![false, true, true, true]).unwrap();
        normalize(&mut image.view_mut(), &inside.view(), Scheme::ZScore, true, &stats()).unwrap();
        let s = (8.0f32 / 3.0).sqrt();
        assert_eq!(image.into_raw_vec_and_offset().0, [0.0, -2.0 / s, 0.0, 2.0 / s]);
    }

    #[test]
    fn rescale_and_rgb() {
        let mut image = Array3::from_shape_vec((1, 1, 3), vec![10.0, 20.0, 30.0]).unwrap();
        let inside = Array3::from_elem((1, 1, 3), true);
        normalize(&mut image.view_mut(), &inside.view(), Scheme::RescaleTo01, false, &stats()).unwrap();
        assert_eq!(image.into_raw_vec_and_offset().0, [0.0, 0.5, 1.0]);
        let mut rgb = Array3::from_shape_vec((1, 1, 2), vec![0.0, 300.0]).unwrap();
        assert!(
            normalize(&mut rgb.view_mut(), &inside.slice(ndarray::s![.., .., ..2]), Scheme::RgbTo01, false, &stats())
                .is_err()
        );
    }
}
