//! The dataset fingerprint file (`dataset_fingerprint.json`), nnU-Net v2's schema: written by
//! nn-fingerprint, read by nn-plan (nnU-Net's own files read the same).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `foreground_intensity_properties_per_channel` entry of nnU-Net's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntensityStats {
    pub max: f64,
    pub mean: f64,
    pub median: f64,
    pub min: f64,
    pub percentile_00_5: f64,
    pub percentile_99_5: f64,
    pub std: f64,
}

/// `dataset_fingerprint.json`. Field order is alphabetical, as nnU-Net writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Extra key (not in nnU-Net's file): the case each entry of `spacings` and `shapes_after_crop` is for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub case_identifiers: Vec<String>,
    pub foreground_intensity_properties_per_channel: BTreeMap<String, IntensityStats>,
    pub median_relative_size_after_cropping: f64,
    /// Spatial shape after crop to nonzero, nnU-Net axis order.
    pub shapes_after_crop: Vec<[usize; 3]>,
    /// Voxel spacing in mm, nnU-Net axis order.
    pub spacings: Vec<[f64; 3]>,
}
