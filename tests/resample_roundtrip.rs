//! The way back: preprocess a case, turn its label map into one-hot logits in the preprocessed
//! geometry, and export them to the input geometry (resample, uncrop, transpose back). Without
//! resampling this must give the input label map exactly; with resampling (anisotropic separate-z
//! data) almost everywhere.

use ndarray::{Array4, Axis};
use nntools_dataset::Dataset;
use nntools_io::read_label_map;
use nntools_planning::Plans;
use nntools_preprocessing::{CaseFiles, LogitsResampling, Recipe, preprocess_case, to_input_geometry};
use nntools_tests::{read_json, shared};

fn round_trip(dataset: &str, configuration: &str, min_agreement: f64) {
    let Some(shared) = shared() else { return };
    let plans: Plans =
        serde_json::from_value(read_json(&shared.join("reference").join(dataset).join("nnUNetPlans.json"))).unwrap();
    let raw = Dataset::open(&shared.join("data").join(dataset)).unwrap();
    let recipe = Recipe::new(&plans, configuration, Some(&raw.descriptor)).unwrap();
    let classes = raw.descriptor.all_labels().len();
    for case in raw.cases.iter().take(3) {
        let files = CaseFiles {
            id: case.id.clone(),
            images: case.images.clone(),
            label: Some(case.label.clone()),
            reader_writer: None,
        };
        let pre = preprocess_case(&recipe, &files).unwrap();
        let seg = pre.seg.unwrap();
        let (z, y, x) = seg.dim();
        let logits = Array4::from_shape_fn((classes, z, y, x), |(c, z, y, x)| {
            f32::from(u8::from(i64::from(seg[[z, y, x]].max(0)) == c as i64))
        });
        let back = LogitsResampling::of(&pre.properties, &recipe).apply(&logits);
        let labels = back.map_axis(Axis(0), |scores| {
            scores
                .iter()
                .enumerate()
                .fold((0u8, f32::MIN), |best, (c, &s)| if s > best.1 { (c as u8, s) } else { best })
                .0
        });
        let exported = to_input_geometry(labels.view(), &pre.properties, &recipe, 0u8);
        let original = read_label_map(&case.label).unwrap().data;
        assert_eq!(exported.shape(), original.shape(), "{dataset} {}: input shape", case.id);
        let agreement = exported.iter().zip(&original).filter(|(a, b)| i32::from(**a) == **b).count() as f64
            / original.len() as f64;
        assert!(agreement >= min_agreement, "{dataset} {configuration} {}: agreement {agreement}", case.id);
    }
}

#[test]
fn ct_without_resampling_is_exact() {
    round_trip("Dataset006_TotalSegCTmini", "3d_fullres", 1.0);
}

#[test]
fn hippocampus_without_resampling_is_exact() {
    round_trip("Dataset004_Hippocampus", "3d_fullres", 1.0);
}

#[test]
fn anisotropic_separate_z_there_and_back() {
    round_trip("Dataset104_HippocampusAniso", "3d_fullres", 0.99);
}

#[test]
fn two_d_configuration_there_and_back() {
    round_trip("Dataset104_HippocampusAniso", "2d", 0.99);
}
