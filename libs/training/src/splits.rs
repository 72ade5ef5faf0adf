//! Cross-validation splits in nnU-Net's `splits_final.json` format, made as nnU-Net makes them:
//! sklearn's `KFold(n_splits=5, shuffle=True, random_state=12345)` over the sorted case identifiers.

use nntools_io::{Result, read_json, write_json};
use nntools_numpy::RandomState;
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// The splits in `path`, made there first if absent: nnU-Net's 5-fold split of `case_ids`, as its trainer
/// makes it on first use (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: `do_split`). Folds started
/// at once (a Slurm array) may all find it absent: each writes the same bytes under a temporary name and
/// renames it into place, so every fold reads one whole file with the same splits, never a torn one.
pub(crate) fn read_or_create_splits(path: &Path, case_ids: &[String]) -> Result<Vec<Split>> {
    if path.is_file() {
        return read_json(path);
    }
    let splits = crossval_splits(case_ids, 5, SPLIT_SEED);
    write_json(path, &splits)?;
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where [`splits_of_one_fold_process`] makes its splits; unset outside that test's child processes.
    const SPLITS_PATH_VAR: &str = "NNTOOLS_TEST_SPLITS_PATH";

    fn test_ids() -> Vec<String> {
        (0..11).map(|i| format!("case_{i:02}")).collect()
    }

    /// One fold's process of [`folds_starting_at_once_get_one_splits_file`] (ignored when run alone).
    #[test]
    #[ignore = "a child process of folds_starting_at_once_get_one_splits_file"]
    fn splits_of_one_fold_process() {
        if let Ok(path) = std::env::var(SPLITS_PATH_VAR) {
            let splits = read_or_create_splits(Path::new(&path), &test_ids()).unwrap();
            assert_eq!(splits, crossval_splits(&test_ids(), 5, SPLIT_SEED));
        }
    }

    #[test]
    fn folds_starting_at_once_get_one_splits_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("splits_final.json");
        // five processes, as five folds of a Slurm array starting together
        let children: Vec<_> = (0..5)
            .map(|_| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", "splits::tests::splits_of_one_fold_process", "--ignored", "--quiet"])
                    .env(SPLITS_PATH_VAR, &path)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success(), "a fold's process failed");
        }
        let expected = crossval_splits(&test_ids(), 5, SPLIT_SEED);
        assert_eq!(read_json::<Vec<Split>>(&path).unwrap(), expected);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["splits_final.json"], "no temporary left");
        // an existing file is read, never replaced
        let custom = vec![Split { train: test_ids()[1..].to_vec(), val: test_ids()[..1].to_vec() }];
        write_json(&path, &custom).unwrap();
        assert_eq!(read_or_create_splits(&path, &test_ids()).unwrap(), custom);
    }

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
