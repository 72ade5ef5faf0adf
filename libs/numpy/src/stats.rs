//! numpy's statistics as nnU-Net calls them, to the last bit: `np.median`, `np.percentile` and
//! `np.allclose` (numpy/lib/_function_base_impl.py: `_median`, `_quantile`, `_lerp`;
//! numpy/_core/numeric.py: `isclose`).

/// How `np.percentile` picks a value between two neighbouring ranks (its `method` argument). nnU-Net
/// only ever calls the default, so that is the one reproduced here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// numpy's default `'linear'`: rank `q / 100 * (n - 1)`, interpolated between its two neighbours.
    Linear,
}

/// `np.allclose`'s default relative tolerance, which nnU-Net's integrity checks use.
pub const DEFAULT_RTOL: f64 = 1e-5;
/// `np.allclose`'s default absolute tolerance, which nnU-Net's integrity checks use.
pub const DEFAULT_ATOL: f64 = 1e-8;

/// `np.percentile(values, q, method=interpolation)` of unsorted values, `q` in 0..=100; NaN for no values.
pub fn percentile(values: &[f64], q: f64, interpolation: Interpolation) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    percentile_of_sorted(sorted.len(), q, interpolation, |rank| sorted[rank])
}

/// `np.percentile` of `len` values known only by rank: `at(rank)` is the value at 0-based `rank` in
/// ascending order. For multisets too large to expand, such as values with multiplicities.
pub fn percentile_of_sorted(len: usize, q: f64, interpolation: Interpolation, at: impl Fn(usize) -> f64) -> f64 {
    if len == 0 {
        return f64::NAN;
    }
    match interpolation {
        Interpolation::Linear => {
            let position = (len - 1) as f64 * (q / 100.0);
            let below = position.floor() as usize;
            let (a, b) = (at(below), at((below + 1).min(len - 1)));
            lerp(a, b, position - below as f64)
        }
    }
}

/// numpy's `_lerp`: from `b` backwards for `t >= 0.5`, so that `t = 1` gives `b` exactly. This differs
/// from `a + (b - a) * t` in the last bit for some values.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let difference = b - a;
    if t >= 0.5 { b - difference * (1.0 - t) } else { a + difference * t }
}

/// `np.median`: the middle value, or the mean of the two middle ones for an even count (which may
/// differ in the last bit from `percentile(values, 50.0, Linear)`); NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `np.allclose(a, b, rtol, atol)`: every `|a - b| <= atol + rtol * |b|` (not symmetric: `b` is the
/// reference), with equal infinities close and NaN close to nothing.
pub fn allclose<const N: usize>(a: &[f64; N], b: &[f64; N], rtol: f64, atol: f64) -> bool {
    a.iter().zip(b).all(|(&x, &y)| ((x - y).abs() <= atol + rtol * y.abs() && y.is_finite()) || x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Interpolation::Linear;

    // Expected values printed by numpy 2.
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
        assert_eq!(median(&[7.5]), 7.5);
        // the mean of the middle two, not percentile 50's interpolation: np.percentile gives -1.9000000000000001
        assert_eq!(median(&[-0.8, -3.0]), -1.9);
        assert_eq!(percentile(&[-0.8, -3.0], 50.0, Linear), -1.900_000_000_000_000_1);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn percentile_interpolates_linearly_between_ranks() {
        // np.percentile([8, 1, 4, 2], 10) = 1.3 (rank 0.3); [8, 1, 4, 2, 16] at 10: rank 0.4 -> 1.4
        assert_eq!(percentile(&[8.0, 1.0, 4.0, 2.0], 10.0, Linear), 1.3);
        assert_eq!(percentile(&[8.0, 1.0, 4.0, 2.0, 16.0], 10.0, Linear), 1.4);
        assert_eq!(percentile(&[8.0, 1.0, 4.0, 2.0], 50.0, Linear), 3.0);
        assert_eq!(percentile(&[8.0, 1.0, 4.0, 2.0, 16.0], 50.0, Linear), 4.0);
        assert_eq!(percentile(&[8.0, 1.0, 4.0, 2.0], 95.0, Linear), 7.399999999999999);
    }

    #[test]
    fn percentile_at_the_ends_is_the_extremes() {
        let values = [5.0, -1.0, 3.0, 0.25];
        assert_eq!(percentile(&values, 0.0, Linear), -1.0);
        assert_eq!(percentile(&values, 100.0, Linear), 5.0);
        assert_eq!(percentile(&[5.0], 10.0, Linear), 5.0);
        assert!(percentile(&[], 50.0, Linear).is_nan());
    }

    #[test]
    fn percentile_rounds_as_numpy_lerp_does() {
        // rank 0.75 between 0.1 and 1.3 (t >= 0.5, from the top): 1.0, where a + (b - a) * t gives
        // 0.9999999999999999; rank 0.6 between 0.1 and 5.1: 3.0999999999999996, not 3.1
        assert_eq!(percentile(&[1.3, 0.1], 75.0, Linear), 1.0);
        assert_eq!(percentile(&[0.1, 5.1], 60.0, Linear), 3.099_999_999_999_999_6);
    }

    #[test]
    fn percentile_of_sorted_reads_values_by_rank() {
        // [0, 0, 0, 10] given as 0 three times and 10 once: np.percentile at 90 (rank 2.7) = 7.000000000000002
        let at = |rank: usize| if rank < 3 { 0.0 } else { 10.0 };
        assert_eq!(percentile_of_sorted(4, 90.0, Linear, at), 7.000_000_000_000_002);
        assert_eq!(percentile_of_sorted(4, 50.0, Linear, at), 0.0);
    }

    #[test]
    fn allclose_is_relative_to_the_second_argument() {
        let (rtol, atol) = (DEFAULT_RTOL, DEFAULT_ATOL);
        assert!(allclose(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], rtol, atol));
        // np.allclose(1, 2, rtol=0.5, atol=0) is True, np.allclose(2, 1, rtol=0.5, atol=0) False
        assert!(allclose(&[1.0], &[2.0], 0.5, 0.0));
        assert!(!allclose(&[2.0], &[1.0], 0.5, 0.0));
        assert!(allclose(&[1e-9], &[0.0], rtol, atol));
        assert!(!allclose(&[1.0, 1.5], &[1.0, 1.0], rtol, atol));
        assert!(allclose(&[f64::INFINITY], &[f64::INFINITY], rtol, atol));
        assert!(!allclose(&[f64::NAN], &[f64::NAN], rtol, atol));
        assert!(!allclose(&[1.0], &[f64::INFINITY], rtol, atol));
    }
}
