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
        if kwargs.features_per_stage.contains(&0) {
            return Err(format!(
                "architecture features_per_stage {:?} must be positive (a stage of no feature maps has no convolution)",
                kwargs.features_per_stage
            ));
        }
        let encoder_convs = kwargs.n_conv_per_stage.as_ref().or(kwargs.n_blocks_per_stage.as_ref());
        for (key, counts) in [("encoder", encoder_convs), ("decoder", Some(&kwargs.n_conv_per_stage_decoder))] {
            if let Some(counts) = counts.filter(|c| c.contains(&0)) {
                // nnU-Net's StackedConvBlocks indexes its first convolution's channels and fails
                return Err(format!("architecture {key} convolutions per stage {counts:?} must be at least 1"));
            }
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

/// Whether `axes` is a permutation of 0..3, as nnU-Net's `transpose_forward` (and its inverse
/// `transpose_backward`, `np.argsort` of it) always is: the planner sorts the three image axes by
/// spacing (nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py:
/// `determine_transpose`), for 2d configurations too.
fn is_axis_permutation(axes: &[usize]) -> bool {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    sorted == [0, 1, 2]
}

impl Plans {
    /// What every configuration relies on besides its own keys: the axis order images are transposed to.
    fn check(&self) -> Result<(), String> {
        for (key, axes) in
            [("transpose_forward", &self.transpose_forward), ("transpose_backward", &self.transpose_backward)]
        {
            if !is_axis_permutation(axes) {
                return Err(format!("{key} {axes:?} is not a permutation of the axes 0, 1, 2"));
            }
        }
        Ok(())
    }

    /// The named configuration with `inherits_from` resolved (parent keys, overridden by the child's),
    /// checked for consistency, with the plans' own keys it is used with. Every tool takes its
    /// configuration here, so that a plans file is refused before any work.
    pub fn configuration(&self, name: &str) -> Result<Configuration, String> {
        self.check()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const CASCADE: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/nnunet_plans/ct_lowres_cascade/nnUNetPlans.json");

    fn read(path: &str) -> Plans {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Every configuration of nnU-Net's own plans (the fixtures and the reference datasets) is taken.
    #[test]
    fn nnunet_plans_pass() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/nnunet_plans");
        let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference");
        let mut checked = 0;
        for folder in [fixtures, reference] {
            let Ok(entries) = std::fs::read_dir(folder) else { continue };
            for entry in entries {
                let path = entry.unwrap().path().join("nnUNetPlans.json");
                if !path.exists() {
                    continue;
                }
                let plans = read(path.to_str().unwrap());
                for name in plans.configuration_names() {
                    plans.configuration(&name).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    checked += 1;
                }
            }
        }
        assert!(checked >= 4, "only {checked} configurations found");
    }

    #[test]
    fn transposes_that_are_not_permutations_are_refused() {
        for (key, axes) in [
            ("transpose_forward", vec![0, 0, 1]),
            ("transpose_forward", vec![0, 1, 5]),
            ("transpose_forward", vec![0, 1]),
            ("transpose_backward", vec![2, 2, 2]),
        ] {
            let mut plans = read(CASCADE);
            match key {
                "transpose_forward" => plans.transpose_forward = axes.clone(),
                _ => plans.transpose_backward = axes.clone(),
            }
            let error = plans.configuration("3d_fullres").unwrap_err();
            assert_eq!(error, format!("{key} {axes:?} is not a permutation of the axes 0, 1, 2"));
        }
        let mut plans = read(CASCADE);
        plans.transpose_forward = vec![2, 0, 1];
        plans.transpose_backward = vec![1, 2, 0];
        assert!(plans.configuration("3d_fullres").is_ok());
    }

    #[test]
    fn a_stage_without_features_is_refused() {
        let mut plans = read(CASCADE);
        plans.configurations["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"][2] = Value::from(0);
        let error = plans.configuration("3d_fullres").unwrap_err();
        assert!(error.starts_with("configuration \"3d_fullres\": architecture features_per_stage ["), "{error}");
        assert!(error.contains(", 0, ") && error.contains("must be positive"), "{error}");
        // The cascade's later stage inherits the spoilt architecture.
        assert!(plans.configuration("3d_cascade_fullres").unwrap_err().contains("features_per_stage"));
    }

    #[test]
    fn a_stage_without_convolutions_is_refused() {
        for (key, stage, expected) in [("n_conv_per_stage", 0, "encoder"), ("n_conv_per_stage_decoder", 1, "decoder")] {
            let mut plans = read(CASCADE);
            plans.configurations["3d_fullres"]["architecture"]["arch_kwargs"][key][stage] = Value::from(0);
            let error = plans.configuration("3d_fullres").unwrap_err();
            let expected = format!("configuration \"3d_fullres\": architecture {expected} convolutions per stage [");
            assert!(error.starts_with(&expected) && error.ends_with("] must be at least 1"), "{error}");
        }
    }
}
