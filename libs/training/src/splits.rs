//! Cross-validation splits in nnU-Net's `splits_final.json` format, made as nnU-Net makes them:
//! sklearn's `KFold(n_splits=5, shuffle=True, random_state=12345)` over the sorted case identifiers.

use nntools_numpy::RandomState;
use serde::{Deserialize, Serialize};

/// nnU-Net's split seed.
pub const SPLIT_SEED: u32 = 12345;

/// One fold: the cases to train on and to validate on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<String>,
    pub val: Vec<String>,
}

/// `folds`-fold splits of `case_ids` (sorted first, as nnU-Net does). Fold k validates on the k-th slice
/// of a seeded permutation (the first `n % folds` slices one case longer); both lists come out sorted.
pub fn crossval_splits(case_ids: &[String], folds: usize, seed: u32) -> Vec<Split> {
    let mut ids = case_ids.to_vec();
    ids.sort();
    let n = ids.len();
    let permutation = RandomState::new(seed).choice_without_replacement(n, n);
    let mut start = 0;
    (0..folds)
        .map(|fold| {
            let size = n / folds + usize::from(fold < n % folds);
            let mut in_val = vec![false; n];
            for &i in &permutation[start..start + size] {
                in_val[i] = true;
            }
            start += size;
            let (val, train): (Vec<_>, Vec<_>) = ids.iter().cloned().zip(in_val).partition(|(_, v)| *v);
            Split {
                train: train.into_iter().map(|(id, _)| id).collect(),
                val: val.into_iter().map(|(id, _)| id).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_cases() {
        let ids: Vec<String> = (0..13).map(|i| format!("case_{i:02}")).collect();
        let splits = crossval_splits(&ids, 5, SPLIT_SEED);
        assert_eq!(splits.iter().map(|s| s.val.len()).collect::<Vec<_>>(), [3, 3, 3, 2, 2]);
        let mut all_val: Vec<String> = splits.iter().flat_map(|s| s.val.clone()).collect();
        all_val.sort();
        assert_eq!(all_val, ids);
        for s in &splits {
            assert_eq!(s.train.len() + s.val.len(), 13);
            assert!(s.train.iter().all(|t| !s.val.contains(t)));
            assert!(s.val.windows(2).all(|w| w[0] < w[1]) && s.train.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
