//! One training case: its integrity checks (`nntools_dataset::integrity`) and its contribution to the
//! fingerprint.

use ndarray::{ArrayView3, s};
use nntools_dataset::Case;
use nntools_dataset::integrity::check_case;
use nntools_io::ReaderWriter;
use nntools_numpy::RandomState;
use nntools_preprocessing::cropping::{box_shape, nonzero_bounding_box};
use std::path::PathBuf;

/// nnU-Net re-seeds its sampler with this for every case.
const SAMPLING_SEED: u32 = 1234;

#[derive(Debug, Default)]
pub struct CaseSummary {
    pub spacing: [f64; 3],
    pub shape_after_crop: [usize; 3],
    pub relative_size: f64,
    /// Per channel: sampled foreground intensities as (value, times drawn).
    pub samples: Vec<Vec<(f32, u64)>>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks one case, read with `reader_writer`, and, with `samples_per_channel`, draws its foreground
/// intensity samples.
pub fn analyse_case(
    case: &Case,
    reader_writer: ReaderWriter,
    allowed: &[i64],
    channels: usize,
    samples_per_channel: Option<usize>,
) -> CaseSummary {
    let mut summary = CaseSummary::default();
    let files = case.present_images();
    let label_file = case.label.is_file().then_some(case.label.as_path());
    let nntools_io::CaseImages { images, label } = reader_writer.read_case(files, label_file);
    let images = match images {
        Ok(images) => images,
        Err(e) => {
            summary.problems.push(e.to_string());
            Vec::new()
        }
    };
    let label = match label {
        Some(label) => label.map_err(|e| summary.problems.push(e.to_string())).ok(),
        None => {
            summary.problems.push(format!("{}: missing label file of case {}", case.label.display(), case.id));
            None
        }
    };
    if images.len() < channels && summary.problems.is_empty() {
        let missing = &case.images[files.len()..];
        summary
            .problems
            .extend(missing.iter().map(|p| format!("{}: missing image file of case {}", p.display(), case.id)));
    }
    if !images.is_empty() && images.len() != channels && summary.problems.is_empty() {
        summary.problems.push(format!(
            "{}: case {} has {} channel(s), dataset.json declares {channels}",
            files[0].display(),
            case.id,
            images.len()
        ));
    }
    let Some(label) = label.filter(|_| summary.problems.is_empty()) else { return summary };
    // an RGB file is several channels
    let per_file = images.len() / files.len();
    let channel_paths: Vec<PathBuf> = files.iter().flat_map(|p| std::iter::repeat_n(p.clone(), per_file)).collect();

    let findings = check_case(&channel_paths, &images, Some((&case.label, &label)), allowed);
    summary.problems.extend(findings.problems.iter().map(ToString::to_string));
    summary.warnings.extend(findings.warnings.iter().map(ToString::to_string));
    if !summary.problems.is_empty() {
        return summary;
    }

    let views: Vec<ArrayView3<f32>> = images.iter().map(|i| i.data.view()).collect();
    let bbox = nonzero_bounding_box(&views);
    let shape_after_crop = box_shape(&bbox);
    summary.spacing = images[0].geometry.spacing;
    summary.shape_after_crop = shape_after_crop;
    summary.relative_size = shape_after_crop.iter().product::<usize>() as f64 / label.data.len() as f64;

    if let Some(samples) = samples_per_channel {
        let region = s![bbox[0][0]..bbox[0][1], bbox[1][0]..bbox[1][1], bbox[2][0]..bbox[2][1]];
        let seg = label.data.slice(region);
        let mut rng = RandomState::new(SAMPLING_SEED);
        summary.samples = views
            .iter()
            .map(|channel| {
                let foreground: Vec<f32> =
                    channel.slice(region).iter().zip(seg.iter()).filter(|(_, l)| **l > 0).map(|(v, _)| *v).collect();
                if foreground.is_empty() {
                    return Vec::new();
                }
                let counts = rng.choice_counts(foreground.len(), samples);
                foreground.into_iter().zip(counts).filter(|(_, c)| *c > 0).map(|(v, c)| (v, u64::from(c))).collect()
            })
            .collect();
    }
    summary
}
