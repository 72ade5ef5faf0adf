//! nnU-Net v2's `ExperimentPlanner` and its ResEnc presets: from a fingerprint and `dataset.json` to the plans, rule
//! for rule. nnU-Net: `nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py:
//! ExperimentPlanner.plan_experiment` and `get_plans_for_configuration`; the presets in
//! `experiment_planners/residual_unets/residual_encoder_unet_planners.py: nnUNetPlannerResEncM/L/XL`.

use crate::feature_maps::{Encoder, Network};
use crate::plans::{ArchKwargs, Architecture, Configuration, NonlinKwargs, NormKwargs, Plans, ResamplingKwargs};
use crate::topology::{Topology, plan_topology};
use indexmap::IndexMap;
use nntools_dataset::Descriptor;
use nntools_dataset::Fingerprint;
use nntools_io::{Error, Result};
use nntools_numpy::stats::{Interpolation, median, percentile};
use std::collections::HashMap;
use std::path::Path;

/// nnU-Net's `ANISO_THRESHOLD`.
const ANISOTROPY_THRESHOLD: f64 = 3.0;
const BASE_FEATURES: usize = 32;
const MAX_FEATURES_3D: usize = 320;
const MAX_FEATURES_2D: usize = 512;
const MIN_BATCH_SIZE: usize = 2;
const REFERENCE_BATCH_SIZE_3D: f64 = 2.0;
const REFERENCE_BATCH_SIZE_2D: f64 = 12.0;
/// 3d_lowres is planned while the fullres patch covers less than this share of the median image.
const LOWRES_CREATION_THRESHOLD: f64 = 0.25;
const LOWRES_SPACING_STEP: f64 = 1.03;
/// No sane dataset needs this many 1.03 steps (1.03^2000 is about 5e25).
const MAX_LOWRES_STEPS: usize = 2000;

/// The planners nn-plan offers: nnU-Net's default and its residual-encoder presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Default,
    ResEncM,
    ResEncL,
    ResEncXL,
}

impl Preset {
    pub const NAMES: [&'static str; 4] = ["default", "resenc-m", "resenc-l", "resenc-xl"];

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "default" => Self::Default,
            "resenc-m" => Self::ResEncM,
            "resenc-l" => Self::ResEncL,
            "resenc-xl" => Self::ResEncXL,
            _ => return None,
        })
    }

    pub fn plans_name(self) -> &'static str {
        match self {
            Self::Default => "nnUNetPlans",
            Self::ResEncM => "nnUNetResEncUNetMPlans",
            Self::ResEncL => "nnUNetResEncUNetLPlans",
            Self::ResEncXL => "nnUNetResEncUNetXLPlans",
        }
    }

    fn planner_class(self) -> &'static str {
        match self {
            Self::Default => "ExperimentPlanner",
            Self::ResEncM => "nnUNetPlannerResEncM",
            Self::ResEncL => "nnUNetPlannerResEncL",
            Self::ResEncXL => "nnUNetPlannerResEncXL",
        }
    }

    /// The GPU memory the preset plans for, and the memory its reference values were measured at.
    pub fn default_gpu_memory_gb(self) -> f64 {
        match self {
            Self::Default | Self::ResEncM => 8.0,
            Self::ResEncL => 24.0,
            Self::ResEncXL => 40.0,
        }
    }

    /// Feature-map-size reference values (3D, 2D) that fill `default_gpu_memory_gb`.
    fn reference_values(self) -> (f64, f64) {
        match self {
            Self::Default => (560_000_000.0, 85_000_000.0),
            Self::ResEncM => (680_000_000.0, 135_000_000.0),
            Self::ResEncL => (2_100_000_000.0, 380_000_000.0),
            Self::ResEncXL => (3_600_000_000.0, 560_000_000.0),
        }
    }

    fn encoder(self) -> Encoder {
        if self == Self::Default { Encoder::Plain } else { Encoder::Residual }
    }

    /// Largest share of the dataset one batch may cover (the ResEnc presets do not cap).
    fn max_dataset_covered(self) -> f64 {
        if self == Self::Default { 0.05 } else { 1.0 }
    }

    fn encoder_blocks(self, stages: usize) -> Vec<usize> {
        match self.encoder() {
            Encoder::Plain => vec![2; stages],
            Encoder::Residual => [1, 3, 4].into_iter().chain(std::iter::repeat(6)).take(stages).collect(),
        }
    }

    fn decoder_convs(self, stages: usize) -> Vec<usize> {
        let per_stage = if self.encoder() == Encoder::Plain { 2 } else { 1 };
        vec![per_stage; stages - 1]
    }

    /// The data identifier of a configuration. ResEnc presets share the default plans' preprocessed
    /// 2d and 3d_fullres data (same spacing, same preprocessing).
    fn data_identifier(self, configuration: &str) -> String {
        let plans = match (self, configuration) {
            (Self::Default, _) | (_, "3d_lowres") => self.plans_name(),
            _ => Preset::Default.plans_name(),
        };
        format!("{plans}_{configuration}")
    }

    /// Whether a patch's estimate is still too large: the default planner leaves room for batch size 2
    /// at the reference batch size, the ResEnc planners compare directly (identical in 3D).
    fn too_large(self, estimate: f64, reference: f64, reference_batch: f64) -> bool {
        match self {
            Self::Default => estimate / reference_batch * 2.0 > reference,
            _ => estimate > reference,
        }
    }
}

/// What the planner needs besides the fingerprint.
pub struct PlanRequest<'a> {
    /// Name of the dataset folder (`DatasetXXX_Name`).
    pub dataset_name: String,
    pub descriptor: &'a Descriptor,
    /// The file the descriptor was read from, named by errors about it.
    pub dataset_json: &'a Path,
    pub fingerprint: &'a Fingerprint,
    /// The file the fingerprint was read from (`-`: stdin), named by errors about it.
    pub fingerprint_path: &'a Path,
    pub preset: Preset,
    /// GPU memory to plan for (nnU-Net's `-gpu_memory_target`); the preset's default when `None`.
    pub gpu_memory_gb: Option<f64>,
    /// The dataset's reader-writer class, recorded as `image_reader_writer` for every later stage.
    pub reader_writer: nntools_io::ReaderWriter,
}

fn column(rows: &[[f64; 3]], axis: usize) -> Vec<f64> {
    rows.iter().map(|r| r[axis]).collect()
}

fn transpose<T: Copy>(values: &[T], order: &[usize]) -> Vec<T> {
    order.iter().map(|&i| values[i]).collect()
}

/// The first axis holding the largest value (numpy's argmax).
fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Median spacing per axis, except that a strongly anisotropic axis (spacing and voxel count both
/// over 3x off the others) takes the 10th percentile of its spacings, so that few thick-slice cases
/// do not push the whole dataset to their resolution.
pub fn fullres_target_spacing(fingerprint: &Fingerprint) -> [f64; 3] {
    let spacings: Vec<[f64; 3]> = fingerprint.spacings.clone();
    let shapes: Vec<[f64; 3]> = fingerprint.shapes_after_crop.iter().map(|s| s.map(|v| v as f64)).collect();
    let mut target = [0, 1, 2].map(|a| percentile(&column(&spacings, a), 50.0, Interpolation::Linear));
    let target_size = [0, 1, 2].map(|a| percentile(&column(&shapes, a), 50.0, Interpolation::Linear));
    let worst = argmax(&target);
    let others: Vec<usize> = (0..3).filter(|&a| a != worst).collect();
    let max_other_spacing = others.iter().map(|&a| target[a]).fold(f64::MIN, f64::max);
    let min_other_size = others.iter().map(|&a| target_size[a]).fold(f64::MAX, f64::min);
    let anisotropic_spacing = target[worst] > ANISOTROPY_THRESHOLD * max_other_spacing;
    let anisotropic_voxels = target_size[worst] * ANISOTROPY_THRESHOLD < min_other_size;
    if anisotropic_spacing && anisotropic_voxels {
        let mut spacing = percentile(&column(&spacings, worst), 10.0, Interpolation::Linear);
        if spacing < max_other_spacing {
            spacing = max_other_spacing.max(spacing) + 1e-5;
        }
        target[worst] = spacing;
    }
    target
}

/// nnU-Net's `compute_new_shape`: voxel counts after resampling, Python-rounded (half to even).
fn resampled_shape(shape: &[usize; 3], spacing: &[f64; 3], target: &[f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|a| (spacing[a] / target[a] * shape[a] as f64).round_ties_even())
}

fn normalization_scheme(channel_name: &str) -> &'static str {
    match channel_name.to_lowercase().as_str() {
        "ct" => "CTNormalization",
        "nonorm" => "NoNormalization",
        "zscore" => "ZScoreNormalization",
        "rescale_to_0_1" => "RescaleTo01Normalization",
        "rgb_to_0_1" => "RGBTo01Normalization",
        _ => "ZScoreNormalization",
    }
}

struct Planner<'a> {
    request: &'a PlanRequest<'a>,
    normalization_schemes: Vec<String>,
    use_mask_for_norm: Vec<bool>,
    /// Output channels the memory estimate counts: every `labels` entry of dataset.json.
    num_classes: usize,
    gpu_memory_gb: f64,
    estimates: HashMap<(Vec<usize>, Vec<Vec<usize>>), f64>,
}

impl Planner<'_> {
    fn estimate(&mut self, topology: &Topology) -> f64 {
        let key = (topology.patch_size.clone(), topology.strides.clone());
        if let Some(&known) = self.estimates.get(&key) {
            return known;
        }
        let preset = self.request.preset;
        let stages = topology.strides.len();
        let max_features = if topology.patch_size.len() == 2 { MAX_FEATURES_2D } else { MAX_FEATURES_3D };
        let features = features_per_stage(stages, max_features);
        let network = Network {
            encoder: preset.encoder(),
            features_per_stage: &features,
            strides: &topology.strides,
            blocks_per_stage: &preset.encoder_blocks(stages),
            convs_per_decoder_stage: &preset.decoder_convs(stages),
            num_classes: self.num_classes,
        };
        let estimate = network.feature_map_size(&topology.patch_size) as f64;
        self.estimates.insert(key, estimate);
        estimate
    }

    /// nnU-Net's `get_plans_for_configuration`; `batch_dice` is set by the caller.
    fn configuration(
        &mut self,
        spacing: &[f64],
        median_shape: &[f64],
        name: &str,
        dataset_voxels: f64,
    ) -> Result<Configuration> {
        let preset = self.request.preset;
        let dim = spacing.len();
        let inverse: Vec<f64> = spacing.iter().map(|s| 1.0 / s).collect();
        let product: f64 = inverse.iter().product();
        let scale = if dim == 3 {
            (256.0f64.powi(3) / product).powf(1.0 / 3.0)
        } else {
            (2048.0f64.powi(2) / product).powf(1.0 / 2.0)
        };
        let initial: Vec<f64> =
            inverse.iter().zip(median_shape).map(|(v, &m)| (v * scale).round_ties_even().min(m)).collect();
        let mut topology = plan_topology(spacing, &initial);
        let mut estimate = self.estimate(&topology);

        let (reference_3d, reference_2d) = preset.reference_values();
        let reference = (if dim == 2 { reference_2d } else { reference_3d })
            * (self.gpu_memory_gb / preset.default_gpu_memory_gb());
        let reference_batch = if dim == 2 { REFERENCE_BATCH_SIZE_2D } else { REFERENCE_BATCH_SIZE_3D };
        while preset.too_large(estimate, reference, reference_batch) {
            // shrink the axis that covers the largest share of the median image
            let ratios: Vec<f64> = topology.patch_size.iter().zip(median_shape).map(|(&p, m)| p as f64 / m).collect();
            let axis = (0..dim).fold(0, |best, a| if ratios[a] >= ratios[best] { a } else { best });
            let mut trial: Vec<f64> = topology.patch_size.iter().map(|&p| p as f64).collect();
            trial[axis] -= topology.divisor[axis] as f64;
            let step = plan_topology(spacing, &trial).divisor[axis] as f64;
            let mut shrunk: Vec<f64> = topology.patch_size.iter().map(|&p| p as f64).collect();
            shrunk[axis] -= step;
            if shrunk[axis] < 1.0 {
                return Err(Error::bad_input(
                    "--gpu-memory-gb",
                    format!("{name}: no patch size fits {} GB of GPU memory", self.gpu_memory_gb),
                ));
            }
            topology = plan_topology(spacing, &shrunk);
            estimate = self.estimate(&topology);
        }

        let patch_voxels: f64 = topology.patch_size.iter().map(|&p| p as f64).product();
        let batch_size = (reference / estimate * reference_batch).round_ties_even();
        let cap = (dataset_voxels * preset.max_dataset_covered() / patch_voxels).round_ties_even();
        let batch_size = (batch_size.min(cap) as usize).max(MIN_BATCH_SIZE);

        let stages = topology.strides.len();
        let max_features = if dim == 2 { MAX_FEATURES_2D } else { MAX_FEATURES_3D };
        let (conv_op, norm_op) = if dim == 2 {
            ("torch.nn.modules.conv.Conv2d", "torch.nn.modules.instancenorm.InstanceNorm2d")
        } else {
            ("torch.nn.modules.conv.Conv3d", "torch.nn.modules.instancenorm.InstanceNorm3d")
        };
        let (network_class_name, n_conv_per_stage, n_blocks_per_stage) = match preset.encoder() {
            Encoder::Plain => (
                "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                Some(preset.encoder_blocks(stages)),
                None,
            ),
            Encoder::Residual => (
                "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                None,
                Some(preset.encoder_blocks(stages)),
            ),
        };
        let data_kwargs = ResamplingKwargs { is_seg: false, order: 3, order_z: 0, force_separate_z: None };
        let seg_kwargs = ResamplingKwargs { is_seg: true, order: 1, order_z: 0, force_separate_z: None };
        let probabilities_kwargs = ResamplingKwargs { is_seg: false, order: 1, order_z: 0, force_separate_z: None };
        let resampling_fn = "resample_data_or_seg_to_shape".to_owned();
        Ok(Configuration {
            data_identifier: preset.data_identifier(name),
            preprocessor_name: "DefaultPreprocessor".into(),
            batch_size,
            patch_size: topology.patch_size.clone(),
            median_image_size_in_voxels: median_shape.to_vec(),
            spacing: spacing.to_vec(),
            normalization_schemes: self.normalization_schemes.clone(),
            use_mask_for_norm: self.use_mask_for_norm.clone(),
            resampling_fn_data: resampling_fn.clone(),
            resampling_fn_seg: resampling_fn.clone(),
            resampling_fn_data_kwargs: data_kwargs,
            resampling_fn_seg_kwargs: seg_kwargs,
            resampling_fn_probabilities: resampling_fn,
            resampling_fn_probabilities_kwargs: probabilities_kwargs,
            architecture: Architecture {
                network_class_name: network_class_name.into(),
                arch_kwargs: ArchKwargs {
                    n_stages: stages,
                    features_per_stage: features_per_stage(stages, max_features),
                    conv_op: conv_op.into(),
                    kernel_sizes: topology.kernel_sizes.clone(),
                    strides: topology.strides.clone(),
                    n_conv_per_stage,
                    n_blocks_per_stage,
                    n_conv_per_stage_decoder: preset.decoder_convs(stages),
                    conv_bias: true,
                    norm_op: norm_op.into(),
                    norm_op_kwargs: NormKwargs { eps: 1e-5, affine: true },
                    dropout_op: None,
                    dropout_op_kwargs: None,
                    nonlin: "torch.nn.LeakyReLU".into(),
                    nonlin_kwargs: NonlinKwargs { inplace: true },
                },
                _kw_requires_import: ["conv_op", "norm_op", "dropout_op", "nonlin"].map(String::from).to_vec(),
            },
            batch_dice: false,
            next_stage: None,
            previous_stage: None,
        })
    }
}

fn features_per_stage(stages: usize, max_features: usize) -> Vec<usize> {
    (0..stages).map(|s| (BASE_FEATURES << s).min(max_features)).collect()
}

/// Checks that a fingerprint can be planned from; the problem, if any, as one line naming its file
/// (or flag).
fn validate(request: &PlanRequest) -> Result<()> {
    let f = request.fingerprint;
    let fingerprint_error = |problem: String| Err(Error::bad_input(request.fingerprint_path, problem));
    if f.spacings.is_empty() {
        return fingerprint_error("fingerprint has no cases (empty \"spacings\")".into());
    }
    if f.spacings.len() != f.shapes_after_crop.len() {
        return fingerprint_error(format!(
            "fingerprint has {} spacings but {} shapes_after_crop",
            f.spacings.len(),
            f.shapes_after_crop.len()
        ));
    }
    if let Some((case, s)) = f.spacings.iter().enumerate().find(|(_, s)| s.iter().any(|v| !v.is_finite() || *v <= 0.0))
    {
        return fingerprint_error(format!("fingerprint spacing of case {case} is not positive: {s:?}"));
    }
    if let Some((case, s)) = f.shapes_after_crop.iter().enumerate().find(|(_, s)| s.contains(&0)) {
        return fingerprint_error(format!("fingerprint shape of case {case} is empty: {s:?}"));
    }
    let channels = request.descriptor.channel_names.len();
    let stats = &f.foreground_intensity_properties_per_channel;
    if (0..channels).any(|c| !stats.contains_key(&c.to_string())) {
        return fingerprint_error(format!(
            "fingerprint has intensity statistics for {} channel(s), dataset.json declares {channels}",
            stats.len()
        ));
    }
    if request.descriptor.all_labels().len() < 2 {
        return Err(Error::bad_input(request.dataset_json, "declares no foreground label"));
    }
    if let Some(gb) = request.gpu_memory_gb.filter(|gb| !gb.is_finite() || *gb <= 0.0) {
        return Err(Error::bad_input("--gpu-memory-gb", format!("GPU memory must be positive, got {gb}")));
    }
    Ok(())
}

/// Plans every configuration for a dataset, as nnU-Net's `plan_experiment` does.
pub fn plan(request: &PlanRequest) -> Result<Plans> {
    validate(request)?;
    let fingerprint = request.fingerprint;
    let descriptor = request.descriptor;
    let normalization_schemes: Vec<String> =
        descriptor.channel_names.iter().map(|n| normalization_scheme(n).to_owned()).collect();
    let use_mask_for_norm = normalization_schemes
        .iter()
        .map(|s| fingerprint.median_relative_size_after_cropping < 0.75 && s == "ZScoreNormalization")
        .collect();
    let mut planner = Planner {
        request,
        normalization_schemes,
        use_mask_for_norm,
        num_classes: descriptor.labels.len() + usize::from(descriptor.ignore_label.is_some()),
        gpu_memory_gb: request.gpu_memory_gb.unwrap_or(request.preset.default_gpu_memory_gb()),
        estimates: HashMap::new(),
    };

    let fullres_spacing = fullres_target_spacing(fingerprint);
    let worst = argmax(&fullres_spacing);
    let transpose_forward: Vec<usize> = std::iter::once(worst).chain((0..3).filter(|&a| a != worst)).collect();
    let transpose_backward: Vec<usize> =
        (0..3).map(|a| transpose_forward.iter().position(|&t| t == a).expect("a permutation")).collect();
    let spacing_t = transpose(&fullres_spacing, &transpose_forward);
    let new_shapes: Vec<[f64; 3]> = fingerprint
        .shapes_after_crop
        .iter()
        .zip(&fingerprint.spacings)
        .map(|(shape, spacing)| resampled_shape(shape, spacing, &fullres_spacing))
        .collect();
    let median_shape = [0, 1, 2].map(|a| median(&column(&new_shapes, a)));
    let median_shape_t = transpose(&median_shape, &transpose_forward);
    let median_voxels: f64 = median_shape_t.iter().product();
    let dataset_voxels = median_voxels * descriptor.num_training as f64;

    let mut configurations = IndexMap::new();
    let mut fullres = None;
    let mut lowres = None;
    if median_shape_t[0] != 1.0 {
        let mut plan_fullres = planner.configuration(&spacing_t, &median_shape_t, "3d_fullres", dataset_voxels)?;
        let mut patch_voxels: f64 = plan_fullres.patch_size.iter().map(|&p| p as f64).product();
        let mut lowres_spacing = spacing_t.clone();
        let mut lowres_median_voxels = median_voxels;
        let mut steps = 0;
        while patch_voxels / lowres_median_voxels < LOWRES_CREATION_THRESHOLD {
            steps += 1;
            if steps > MAX_LOWRES_STEPS {
                return Err(Error::bad_input(request.fingerprint_path, "3d_lowres planning does not converge"));
            }
            let max_spacing = lowres_spacing.iter().copied().fold(f64::MIN, f64::max);
            let coarse_first = lowres_spacing.iter().any(|s| max_spacing / s > 2.0);
            for s in lowres_spacing.iter_mut() {
                if !coarse_first || max_spacing / *s > 2.0 {
                    *s *= LOWRES_SPACING_STEP;
                }
            }
            let lowres_shape: Vec<f64> = (0..3).map(|a| spacing_t[a] / lowres_spacing[a] * median_shape_t[a]).collect();
            lowres_median_voxels = lowres_shape.iter().product();
            let rounded: Vec<f64> = lowres_shape.iter().map(|v| v.round_ties_even()).collect();
            let dataset_voxels = lowres_median_voxels * descriptor.num_training as f64;
            let plan_lowres = planner.configuration(&lowres_spacing, &rounded, "3d_lowres", dataset_voxels)?;
            patch_voxels = plan_lowres.patch_size.iter().map(|&p| p as f64).product();
            lowres = Some(plan_lowres);
        }
        if median_voxels / lowres_median_voxels < 2.0 {
            lowres = None;
        }
        match &mut lowres {
            Some(plan_lowres) => {
                plan_lowres.batch_dice = false;
                plan_lowres.next_stage = Some("3d_cascade_fullres".into());
                plan_fullres.batch_dice = true;
            }
            None => plan_fullres.batch_dice = false,
        }
        fullres = Some(plan_fullres);
    }
    let mut plan_2d = planner.configuration(&spacing_t[1..], &median_shape_t[1..], "2d", dataset_voxels)?;
    plan_2d.batch_dice = true;

    let as_json = |c: &Configuration| serde_json::to_value(c).expect("configurations serialise");
    configurations.insert("2d".to_owned(), as_json(&plan_2d));
    if let Some(plan_lowres) = &lowres {
        configurations.insert("3d_lowres".to_owned(), as_json(plan_lowres));
    }
    if let Some(plan_fullres) = &fullres {
        configurations.insert("3d_fullres".to_owned(), as_json(plan_fullres));
        if lowres.is_some() {
            configurations.insert(
                "3d_cascade_fullres".to_owned(),
                serde_json::json!({"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}),
            );
        }
    }

    let raw_shapes: Vec<[f64; 3]> = fingerprint.shapes_after_crop.iter().map(|s| s.map(|v| v as f64)).collect();
    let original_spacing = [0, 1, 2].map(|a| median(&column(&fingerprint.spacings, a)));
    let original_shape = [0, 1, 2].map(|a| median(&column(&raw_shapes, a)).round_ties_even() as i64);
    Ok(Plans {
        dataset_name: request.dataset_name.clone(),
        plans_name: request.preset.plans_name().to_owned(),
        original_median_spacing_after_transp: transpose(&original_spacing, &transpose_forward),
        original_median_shape_after_transp: transpose(&original_shape, &transpose_forward),
        image_reader_writer: request.reader_writer.name().to_owned(),
        transpose_forward,
        transpose_backward,
        configurations,
        experiment_planner_used: request.preset.planner_class().to_owned(),
        label_manager: "LabelManager".to_owned(),
        foreground_intensity_properties_per_channel: fingerprint.foreground_intensity_properties_per_channel.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding_of_resampled_shapes() {
        // 0.5 * 5 = 2.5 rounds to 2, 0.5 * 7 = 3.5 rounds to 4 (half to even)
        assert_eq!(resampled_shape(&[5, 7, 9], &[1.0, 1.0, 1.0], &[2.0, 2.0, 2.0]), [2.0, 4.0, 4.0]);
    }
}
