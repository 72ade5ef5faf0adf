//! The plans file (`nnUNetPlans.json`), with nnU-Net v2's layout and key names.
//!
//! Configurations are kept as JSON objects so that a configuration may inherit from another
//! (`inherits_from`, as `3d_cascade_fullres` does from `3d_fullres`); [`Plans::configuration`] resolves
//! the inheritance and gives the typed [`Configuration`] the later stages work with.

use indexmap::IndexMap;
use nntools_dataset::IntensityStats;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plans {
    pub dataset_name: String,
    pub plans_name: String,
    pub original_median_spacing_after_transp: Vec<f64>,
    pub original_median_shape_after_transp: Vec<i64>,
    pub image_reader_writer: String,
    pub transpose_forward: Vec<usize>,
    pub transpose_backward: Vec<usize>,
    pub configurations: IndexMap<String, Value>,
    pub experiment_planner_used: String,
    pub label_manager: String,
    pub foreground_intensity_properties_per_channel: BTreeMap<String, IntensityStats>,
}

/// Arguments of nnU-Net's `resample_data_or_seg_to_shape` for one kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResamplingKwargs {
    pub is_seg: bool,
    pub order: u32,
    pub order_z: u32,
    pub force_separate_z: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NormKwargs {
    pub eps: f64,
    pub affine: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonlinKwargs {
    pub inplace: bool,
}

/// `architecture.arch_kwargs`: everything needed to build the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchKwargs {
    pub n_stages: usize,
    pub features_per_stage: Vec<usize>,
    pub conv_op: String,
    pub kernel_sizes: Vec<Vec<usize>>,
    pub strides: Vec<Vec<usize>>,
    /// PlainConvUNet: convolutions per encoder stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_conv_per_stage: Option<Vec<usize>>,
    /// ResidualEncoderUNet: residual blocks per encoder stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_blocks_per_stage: Option<Vec<usize>>,
    pub n_conv_per_stage_decoder: Vec<usize>,
    pub conv_bias: bool,
    pub norm_op: String,
    pub norm_op_kwargs: NormKwargs,
    pub dropout_op: Option<String>,
    pub dropout_op_kwargs: Option<Value>,
    pub nonlin: String,
    pub nonlin_kwargs: NonlinKwargs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    pub network_class_name: String,
    pub arch_kwargs: ArchKwargs,
    pub _kw_requires_import: Vec<String>,
}

/// One configuration (2d, 3d_fullres, 3d_lowres, ...), inheritance resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    pub data_identifier: String,
    pub preprocessor_name: String,
    pub batch_size: usize,
    pub patch_size: Vec<usize>,
    pub median_image_size_in_voxels: Vec<f64>,
    pub spacing: Vec<f64>,
    pub normalization_schemes: Vec<String>,
    pub use_mask_for_norm: Vec<bool>,
    pub resampling_fn_data: String,
    pub resampling_fn_seg: String,
    pub resampling_fn_data_kwargs: ResamplingKwargs,
    pub resampling_fn_seg_kwargs: ResamplingKwargs,
    pub resampling_fn_probabilities: String,
    pub resampling_fn_probabilities_kwargs: ResamplingKwargs,
    pub architecture: Architecture,
    pub batch_dice: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stage: Option<String>,
}

impl Configuration {
    /// The consistency that every consumer relies on: one entry per axis in every per-axis list, one
    /// per stage in every per-stage list, and a patch that the network's strides divide.
    fn check(&self) -> Result<(), String> {
        let kwargs = &self.architecture.arch_kwargs;
        let axes = self.patch_size.len();
        if !(2..=3).contains(&axes) {
            return Err(format!("patch_size has {axes} axes, must have 2 or 3"));
        }
        let conv_axes = if kwargs.conv_op.ends_with("Conv3d") { 3 } else { 2 };
        if conv_axes != axes {
            return Err(format!("patch_size has {axes} axes but conv_op is {}", kwargs.conv_op));
        }
        for (key, len) in
            [("spacing", self.spacing.len()), ("median_image_size_in_voxels", self.median_image_size_in_voxels.len())]
        {
            if len != axes {
                return Err(format!("{key} has {len} entries for a {axes}-axis patch"));
            }
        }
        if self.batch_size == 0 || self.patch_size.contains(&0) || self.spacing.iter().any(|&s| s.is_nan() || s <= 0.0)
        {
            return Err("batch_size, patch_size and spacing must be positive".to_owned());
        }
        let stages = kwargs.n_stages;
        let per_stage = [
            ("features_per_stage", kwargs.features_per_stage.len()),
            ("kernel_sizes", kwargs.kernel_sizes.len()),
            ("strides", kwargs.strides.len()),
            (
                "n_conv_per_stage",
                kwargs.n_conv_per_stage.as_ref().or(kwargs.n_blocks_per_stage.as_ref()).map_or(stages, Vec::len),
            ),
            ("n_conv_per_stage_decoder", kwargs.n_conv_per_stage_decoder.len() + 1),
        ];
        if let Some((key, _)) = per_stage.iter().find(|(_, len)| *len != stages) {
            return Err(format!("architecture {key} does not match n_stages {stages}"));
        }
        if let Some(bad) = kwargs.kernel_sizes.iter().chain(&kwargs.strides).find(|k| k.len() != axes || k.contains(&0))
        {
            return Err(format!("architecture kernel size or stride {bad:?} does not fit a {axes}-axis patch"));
        }
        for axis in 0..axes {
            let downsampling: usize = kwargs.strides.iter().map(|s| s[axis]).product();
            if !self.patch_size[axis].is_multiple_of(downsampling) {
                return Err(format!(
                    "patch_size {:?} is not divisible by the strides' product {downsampling} along axis {axis}",
                    self.patch_size
                ));
            }
        }
        Ok(())
    }
}

impl Plans {
    /// The named configuration with `inherits_from` resolved (parent keys, overridden by the child's),
    /// checked for consistency.
    pub fn configuration(&self, name: &str) -> Result<Configuration, String> {
        let merged = self.resolve(name, &mut Vec::new())?;
        let configuration: Configuration =
            serde_json::from_value(Value::Object(merged)).map_err(|e| format!("configuration {name:?}: {e}"))?;
        configuration.check().map_err(|problem| format!("configuration {name:?}: {problem}"))?;
        Ok(configuration)
    }

    fn resolve(&self, name: &str, chain: &mut Vec<String>) -> Result<serde_json::Map<String, Value>, String> {
        if chain.iter().any(|c| c == name) {
            return Err(format!("configuration inheritance loops: {} -> {name}", chain.join(" -> ")));
        }
        chain.push(name.to_owned());
        let own = self.configurations.get(name).and_then(Value::as_object).ok_or_else(|| {
            format!("no configuration {name:?} (plans have: {})", self.configuration_names().join(", "))
        })?;
        let mut merged = match own.get("inherits_from").and_then(Value::as_str) {
            Some(parent) => self.resolve(parent, chain)?,
            None => serde_json::Map::new(),
        };
        for (key, value) in own {
            if key != "inherits_from" {
                merged.insert(key.clone(), value.clone());
            }
        }
        Ok(merged)
    }

    pub fn configuration_names(&self) -> Vec<String> {
        self.configurations.keys().cloned().collect()
    }
}
