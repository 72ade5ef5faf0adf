//! Voxel locations per class for foreground oversampling, sampled as nnU-Net samples them: per case
//! a `RandomState(1234)`; per class (or region) with N voxels, `max(min(10000, N), ceil(N / 100))`
//! locations drawn without replacement from the class's voxels in C order.

use ndarray::Array3;
use nntools_numpy::RandomState;
use std::collections::BTreeMap;

const SEED: u32 = 1234;
const MIN_SAMPLES: usize = 10_000;
const MIN_COVERAGE: f64 = 0.01;

/// Sampled `[z, y, x]` locations for each class, in the order the classes were given.
pub fn sample_class_locations(seg: &Array3<i16>, classes: &[Vec<i16>]) -> Vec<Vec<[u32; 3]>> {
    // one pass: the voxels of every requested label, in C order
    let mut wanted: Vec<i16> = classes.iter().flatten().copied().collect();
    wanted.sort_unstable();
    wanted.dedup();
    // a table from every i16 value to its place in `wanted` (+1; 0: not wanted)
    let mut place = vec![0u16; 1 << 16];
    for (i, &label) in wanted.iter().enumerate() {
        place[usize::from(label as u16)] = i as u16 + 1;
    }
    let mut voxels: Vec<Vec<[u32; 3]>> = vec![Vec::new(); wanted.len()];
    let ny = seg.shape()[1];
    for (row_index, row) in seg.rows().into_iter().enumerate() {
        let (z, y) = ((row_index / ny) as u32, (row_index % ny) as u32);
        for (x, &label) in row.iter().enumerate() {
            if let Some(i) = place[usize::from(label as u16)].checked_sub(1) {
                voxels[usize::from(i)].push([z, y, x as u32]);
            }
        }
    }
    let voxels_of: BTreeMap<i16, Vec<[u32; 3]>> = wanted.into_iter().zip(voxels).collect();
    let mut rng = RandomState::new(SEED);
    classes
        .iter()
        .map(|labels| {
            // a region's voxels grouped by label in ascending label order
            let mut sorted_labels = labels.clone();
            sorted_labels.sort_unstable();
            sorted_labels.dedup();
            let voxels: Vec<[u32; 3]> = sorted_labels.iter().flat_map(|l| voxels_of[l].iter().copied()).collect();
            if voxels.is_empty() {
                return Vec::new();
            }
            let total = voxels.len();
            let samples = total.min(MIN_SAMPLES).max((total as f64 * MIN_COVERAGE).ceil() as usize);
            rng.choice_without_replacement(total, samples).into_iter().map(|i| voxels[i]).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_classes_are_kept_whole_and_absent_ones_empty() {
        let mut seg = Array3::<i16>::zeros((4, 5, 6));
        seg[[1, 2, 3]] = 1;
        seg[[3, 4, 5]] = 1;
        seg[[0, 0, 1]] = 2;
        let locations = sample_class_locations(&seg, &[vec![1], vec![2], vec![3], vec![1, 2]]);
        let mut ones = locations[0].clone();
        ones.sort();
        assert_eq!(ones, [[1, 2, 3], [3, 4, 5]]);
        assert_eq!(locations[1], [[0, 0, 1]]);
        assert!(locations[2].is_empty());
        assert_eq!(locations[3].len(), 3, "a region takes the union of its labels");
    }

    #[test]
    fn large_classes_take_ten_thousand_or_one_percent() {
        let seg = Array3::<i16>::ones((10, 100, 1200)); // 1.2 M voxels -> 12,000 (1%)
        assert_eq!(sample_class_locations(&seg, &[vec![1]])[0].len(), 12_000);
        let seg = Array3::<i16>::ones((10, 100, 500)); // 500 k voxels -> 10,000
        assert_eq!(sample_class_locations(&seg, &[vec![1]])[0].len(), 10_000);
    }
}
