//! Dataset integrity checks and nnU-Net v2's dataset fingerprint, computed in one pass over the cases.
//!
//! The fingerprint has the keys and meaning of nnU-Net's `dataset_fingerprint.json`: per-case spacings
//! and shapes after cropping to nonzero, the median relative size after cropping, and per-channel
//! statistics of foreground intensities sampled exactly as nnU-Net samples them.

mod case;
mod stats;

pub use nntools_dataset::{Fingerprint, IntensityStats};

use nntools_dataset::Dataset;
use nntools_io::{Error, Result};
use nntools_layout::DATASET_JSON;
use nntools_numpy::stats::median;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// nnU-Net's foreground-intensity sample budget over the whole dataset (written `10e7` in its source).
const FOREGROUND_SAMPLES_PER_DATASET: usize = 100_000_000;

/// What a pass over the dataset found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Absent when only verifying, or when there were problems.
    pub fingerprint: Option<Fingerprint>,
    /// Integrity errors, one line each, naming the file.
    pub problems: Vec<String>,
    /// Things nnU-Net also only warns about (origin and direction mismatches).
    pub warnings: Vec<String>,
}

impl Outcome {
    /// The fingerprint, or every problem as one bad-input error.
    pub fn into_fingerprint(self) -> Result<Fingerprint> {
        if !self.problems.is_empty() {
            return Err(Error::bad_input_lines(self.problems));
        }
        Ok(self.fingerprint.expect("fingerprint is computed when there are no problems"))
    }
}

/// How to run the pass.
#[derive(Default)]
pub struct Options<'a> {
    /// Check integrity only; skip the intensity sampling.
    pub verify_only: bool,
    /// Called once per finished case (for progress display), from worker threads.
    pub on_case_done: Option<&'a (dyn Fn() + Sync)>,
}

/// Checks every case and, unless `verify_only` or a problem was found, computes the fingerprint.
/// Cases are processed in parallel on the current rayon pool, each worker holding one case at a time.
pub fn analyse(dataset: &Dataset, options: &Options) -> Outcome {
    let descriptor = &dataset.descriptor;
    let mut problems = dataset.layout_problems.clone();
    if dataset.cases.len() != descriptor.num_training {
        problems.push(format!(
            "{}: numTraining is {} but {} training cases were found",
            dataset.root.join(DATASET_JSON).display(),
            descriptor.num_training,
            dataset.cases.len()
        ));
    }
    if dataset.cases.is_empty() {
        problems.push(format!("{}: no training cases found", dataset.root.display()));
        return Outcome { problems, ..Outcome::default() };
    }
    let reader_writer = match dataset.reader_writer() {
        Ok(rw) => rw,
        Err(e) => {
            problems.push(e.to_string());
            return Outcome { problems, ..Outcome::default() };
        }
    };
    let samples_per_case = FOREGROUND_SAMPLES_PER_DATASET / dataset.cases.len();
    let allowed = descriptor.allowed_label_values();
    let cases: Vec<case::CaseSummary> = dataset
        .cases
        .par_iter()
        .map(|c| {
            let sampling = (!options.verify_only).then_some(samples_per_case);
            let summary = case::analyse_case(c, reader_writer, &allowed, descriptor.channel_names.len(), sampling);
            if let Some(done) = options.on_case_done {
                done();
            }
            summary
        })
        .collect();

    let mut warnings = Vec::new();
    for summary in &cases {
        problems.extend(summary.problems.iter().cloned());
        warnings.extend(summary.warnings.iter().cloned());
    }
    if !problems.is_empty() || options.verify_only {
        return Outcome { fingerprint: None, problems, warnings };
    }
    match assemble(dataset, cases) {
        Ok(fingerprint) => Outcome { fingerprint: Some(fingerprint), problems, warnings },
        Err(problem) => Outcome { fingerprint: None, problems: vec![problem], warnings },
    }
}

fn assemble(dataset: &Dataset, cases: Vec<case::CaseSummary>) -> std::result::Result<Fingerprint, String> {
    let channels = dataset.descriptor.channel_names.len();
    let relative_sizes: Vec<f64> = cases.iter().map(|c| c.relative_size).collect();
    let mut per_channel: Vec<Vec<(f32, u64)>> = vec![Vec::new(); channels];
    let mut case_identifiers = Vec::with_capacity(cases.len());
    let mut spacings = Vec::with_capacity(cases.len());
    let mut shapes_after_crop = Vec::with_capacity(cases.len());
    for (summary, case) in cases.into_iter().zip(&dataset.cases) {
        case_identifiers.push(case.id.clone());
        spacings.push(summary.spacing);
        shapes_after_crop.push(summary.shape_after_crop);
        for (all, samples) in per_channel.iter_mut().zip(summary.samples) {
            all.extend(samples);
        }
    }
    let mut foreground_intensity_properties_per_channel = BTreeMap::new();
    for (channel, samples) in per_channel.into_iter().enumerate() {
        let stats = stats::intensity_stats(&stats::merge_counts(samples))
            .ok_or_else(|| format!("{}: no training case has foreground voxels (label > 0)", dataset.root.display()))?;
        foreground_intensity_properties_per_channel.insert(channel.to_string(), stats);
    }
    Ok(Fingerprint {
        case_identifiers,
        foreground_intensity_properties_per_channel,
        median_relative_size_after_cropping: median(&relative_sizes),
        shapes_after_crop,
        spacings,
    })
}
