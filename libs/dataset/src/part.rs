//! One part of a case list split over several processes, as nnU-Net's `-part_id`/`-num_parts`
//! (`nnunetv2/inference/predict_from_raw_data.py: nnUNetPredictor._manage_input_and_output_lists`
//! takes `list_of_lists_or_source_folder[part_id::num_parts]` of the cases that
//! `nnunetv2/utilities/utils.py: get_identifiers_from_splitted_dataset_folder` lists sorted by
//! identifier, `np.unique`).

/// Part `index` of `count`: the cases at positions `index`, `index + count`, ... of the sorted
/// identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    index: usize,
    count: usize,
}

impl Part {
    /// Every case: part 0 of 1.
    pub const WHOLE: Part = Part { index: 0, count: 1 };

    /// Part `index` of `count`, if `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self, String> {
        if index >= count {
            return Err(format!("part {index} of {count} does not exist: K must be 0 to N-1 (counting from 0)"));
        }
        Ok(Self { index, count })
    }

    /// Whether this is all the cases (part 0 of 1).
    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// This part's cases: `cases` sorted by `id` (Rust's `str` order, the code-point order of numpy's
    /// `np.unique`), then every `count`-th from position `index`.
    pub fn select<T>(self, mut cases: Vec<T>, id: impl Fn(&T) -> &str) -> Vec<T> {
        cases.sort_by(|a, b| id(a).cmp(id(b)));
        cases.into_iter().skip(self.index).step_by(self.count).collect()
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parts_take_every_nth_sorted_identifier_as_nnunet_slices_them() {
        // given unsorted, as a folder lists them; nnU-Net sorts identifiers, then [part_id::num_parts]
        let cases = ids(&["case_4", "case_0", "case_2", "case_6", "case_1", "case_5", "case_3"]);
        let part = |k, n| Part::new(k, n).unwrap().select(cases.clone(), String::as_str);
        assert_eq!(part(0, 2), ids(&["case_0", "case_2", "case_4", "case_6"]));
        assert_eq!(part(1, 2), ids(&["case_1", "case_3", "case_5"]));
        assert_eq!(part(2, 3), ids(&["case_2", "case_5"]));
        assert_eq!(part(6, 7), ids(&["case_6"]));
        assert_eq!(part(7, 8), ids(&[]));
        assert_eq!(Part::WHOLE.select(cases.clone(), String::as_str).len(), 7);
        // code-point order: upper case before lower case, "a10" before "a9", as numpy sorts strings
        let mixed = ids(&["b", "a9", "B", "a10"]);
        assert_eq!(Part::new(0, 2).unwrap().select(mixed.clone(), String::as_str), ids(&["B", "a9"]));
        assert_eq!(Part::new(1, 2).unwrap().select(mixed, String::as_str), ids(&["a10", "b"]));
    }

    #[test]
    fn the_parts_partition_the_cases() {
        let cases: Vec<String> = (0..11).map(|i| format!("c{i:02}")).collect();
        for n in 1..=12 {
            let mut union: Vec<String> =
                (0..n).flat_map(|k| Part::new(k, n).unwrap().select(cases.clone(), String::as_str)).collect();
            union.sort();
            assert_eq!(union, cases, "{n} parts");
        }
    }

    #[test]
    fn a_part_past_the_count_does_not_exist() {
        assert!(Part::new(2, 2).is_err());
        assert!(Part::new(0, 0).is_err());
        assert_eq!(Part::new(1, 2).unwrap().to_string(), "1/2");
        assert!(!Part::new(1, 2).unwrap().is_whole() && Part::new(0, 1).unwrap().is_whole());
    }
}
