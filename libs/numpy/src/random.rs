//! numpy's legacy `RandomState(seed)`, reproduced draw for draw for the calls nnU-Net makes:
//! `choice(n, k, replace=True)` (foreground intensity samples of the fingerprint) and
//! `choice(n, k, replace=False)` (class locations for foreground oversampling).
//!
//! Reproducing the generator (MT19937 with `init_genrand` seeding, masked rejection sampling of 32-bit
//! draws) gives the very same samples as nnU-Net, so derived numbers agree to float rounding instead of
//! to sampling noise.

use rand_mt::Mt;

/// A numpy `RandomState` for the integer draws `choice` makes.
pub struct RandomState(Mt);

impl RandomState {
    pub fn new(seed: u32) -> Self {
        Self(Mt::new(seed))
    }

    /// How often each of `population` elements is drawn by `choice(population, samples, replace=True)`
    /// (counted rather than listed: only the multiplicities matter to statistics).
    pub fn choice_counts(&mut self, population: usize, samples: usize) -> Vec<u32> {
        assert!(population > 0 && population <= u32::MAX as usize, "population {population} out of range");
        if population == 1 {
            return vec![samples as u32];
        }
        let max = (population - 1) as u32;
        let mask = u32::MAX >> max.leading_zeros();
        // Branch-free rejection: every masked draw is counted, rejected ones in slots past `max` that are
        // dropped at the end. A round of `remaining` draws cannot accept more than `remaining`, so the
        // accepted draws are exactly the first `samples` that numpy accepts.
        let mut counts = vec![0u32; mask as usize + 1];
        let mut accepted = 0;
        while accepted < samples {
            let mut round = 0;
            for _ in 0..samples - accepted {
                let draw = self.0.next_u32() & mask;
                counts[draw as usize] += 1;
                round += usize::from(draw <= max);
            }
            accepted += round;
        }
        counts.truncate(population);
        counts
    }

    /// `choice(population, samples, replace=False)`: the first `samples` entries of
    /// `permutation(population)`, which shuffles `arange(population)` with Fisher-Yates from the top.
    pub fn choice_without_replacement(&mut self, population: usize, samples: usize) -> Vec<usize> {
        assert!(samples <= population && population <= u32::MAX as usize, "cannot draw {samples} of {population}");
        let mut items: Vec<usize> = (0..population).collect();
        for i in (1..population).rev() {
            let j = self.interval(i as u32) as usize;
            items.swap(i, j);
        }
        items.truncate(samples);
        items
    }

    /// numpy's `random_interval(max)`: uniform in `0..=max` by masked rejection.
    fn interval(&mut self, max: u32) -> u32 {
        let mask = u32::MAX >> max.leading_zeros();
        loop {
            let draw = self.0.next_u32() & mask;
            if draw <= max {
                return draw;
            }
        }
    }

    /// numpy's `randint(0, population, samples)`: the smallest all-ones mask covering
    /// `population - 1`, draws above it rejected.
    #[cfg(test)]
    fn randint(&mut self, population: u32, samples: usize) -> Vec<u32> {
        (0..samples).map(|_| self.interval(population - 1)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values printed by numpy 2 (np.random.RandomState(1234)...).
    #[test]
    fn matches_numpy_randint() {
        let mut rs = RandomState::new(1234);
        assert_eq!(rs.randint(1000, 8), [815, 723, 294, 53, 204, 372, 664, 655]);
        let mut rs = RandomState::new(1234);
        assert_eq!(rs.randint(100_000, 5), [92975, 58067, 34086, 60620, 89460]);
    }

    #[test]
    fn matches_numpy_choice_without_replacement() {
        // np.random.RandomState(1234).choice(10, 4, replace=False) -> [7, 2, 9, 1]
        // then .choice(100000, 3, replace=False) -> [42845, 37986, 15679]
        let mut rs = RandomState::new(1234);
        assert_eq!(rs.choice_without_replacement(10, 4), [7, 2, 9, 1]);
        assert_eq!(rs.choice_without_replacement(100_000, 3), [42845, 37986, 15679]);
    }

    #[test]
    fn counts_agree_with_one_draw_at_a_time() {
        let counts = RandomState::new(99).choice_counts(5000, 200_000);
        let mut expected = vec![0u32; 5000];
        for i in RandomState::new(99).randint(5000, 200_000) {
            expected[i as usize] += 1;
        }
        assert_eq!(counts, expected);
    }

    #[test]
    fn choice_continues_the_stream_and_skips_single_element_draws() {
        // rs.choice(5, 6) -> [3, 4, 4, 0, 1, 1]; then rs.choice(7, 4) -> [1, 2, 6, 3]
        let mut rs = RandomState::new(1234);
        assert_eq!(rs.choice_counts(5, 6), [1, 2, 0, 1, 2]);
        assert_eq!(rs.choice_counts(7, 4), [0, 1, 1, 1, 0, 0, 1]);
        // rs.choice(1, 3) consumes nothing: the next choice(3, 3) is [2, 1, 0] as from a fresh state.
        let mut rs = RandomState::new(1234);
        assert_eq!(rs.choice_counts(1, 3), [3]);
        assert_eq!(rs.choice_counts(3, 3), [1, 1, 1]);
        assert_eq!(RandomState::new(1234).randint(3, 3), [2, 1, 0]);
    }
}
