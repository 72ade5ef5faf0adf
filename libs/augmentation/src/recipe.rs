//! What is fixed per run (the recipe: `nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py:
//! nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size`) and what is drawn per sample (the
//! parameters of the transforms `nnUNetTrainer.get_training_transforms` composes).

use std::f64::consts::PI;
use std::str::FromStr;

use rand::RngExt;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// How much augmentation a training run gets (`--augment nnunet|mirror-only|none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// nnU-Net v2's full pipeline.
    Nnunet,
    /// Only the random mirroring (and the deterministic steps).
    MirrorOnly,
    /// Only the deterministic steps, as nnU-Net's `nnUNetTrainerNoDA`: no mirroring in training or TTA.
    None,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nnunet" => Ok(Mode::Nnunet),
            "mirror-only" => Ok(Mode::MirrorOnly),
            "none" => Ok(Mode::None),
            _ => Err(format!("unknown augmentation mode {s:?} (expected nnunet, mirror-only or none)")),
        }
    }
}

/// nnU-Net's `ANISO_THRESHOLD`: a 3d patch this much longer in-plane than along axis 0 is augmented slice-wise.
const ANISOTROPY_THRESHOLD: f64 = 3.0;
const P_ROTATION: f64 = 0.2;
const P_SCALING: f64 = 0.2;
const SCALING: (f64, f64) = (0.7, 1.4);
const P_NOISE: f64 = 0.1;
const NOISE_SIGMA: (f64, f64) = (0.0, 0.1);
const P_BLUR: f64 = 0.2;
const P_BLUR_PER_CHANNEL: f64 = 0.5;
const BLUR_SIGMA: (f64, f64) = (0.5, 1.0);
const P_BRIGHTNESS: f64 = 0.15;
const BRIGHTNESS: (f64, f64) = (0.75, 1.25);
const P_CONTRAST: f64 = 0.15;
const CONTRAST: (f64, f64) = (0.75, 1.25);
const P_LOW_RESOLUTION: f64 = 0.25;
const P_LOW_RESOLUTION_PER_CHANNEL: f64 = 0.5;
const LOW_RESOLUTION_ZOOM: (f64, f64) = (0.5, 1.0);
const P_INVERTED_GAMMA: f64 = 0.1;
const P_GAMMA: f64 = 0.3;
const GAMMA: (f64, f64) = (0.7, 1.5);
const P_MIRROR: f64 = 0.5;
const P_BINARY_OPERATOR: f64 = 0.4;
const P_BINARY_OPERATOR_PER_LABEL: f64 = 0.5;
const STRUCTURING_RADIUS: (f64, f64) = (1.0, 8.0);
const P_COMPONENT_REMOVAL: f64 = 0.2;
const P_COMPONENT_REMOVAL_PER_LABEL: f64 = 0.5;

/// Everything about the augmentation that is fixed for a run.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub(crate) patch: Vec<usize>,
    pub(crate) initial: Vec<usize>,
    pub(crate) channels: usize,
    pub(crate) masked_channels: Vec<usize>,
    pub(crate) mode: Mode,
    pub(crate) cascade_labels: Option<Vec<i64>>,
    /// 3d patches of anisotropic data are rotated and scaled slice by slice (in-plane only).
    pub(crate) dummy_2d: bool,
    /// Rotation angles are drawn from ±this, in radians.
    max_rotation: f64,
    /// Every label value a batch's segmentation can hold (-1 outside the image included), ascending;
    /// when unknown, each batch's values are read back from the device, a host synchronisation.
    pub(crate) label_values: Option<Vec<i64>>,
}

impl Recipe {
    /// From the configuration's patch size (2 or 3 dims), per-channel use_mask_for_norm (its length is the
    /// number of image channels), the mode, and for 3d_cascade_fullres the foreground labels of the
    /// previous stage (None otherwise).
    pub fn new(patch: &[usize], use_mask_for_norm: &[bool], mode: Mode, cascade_labels: Option<Vec<i64>>) -> Self {
        assert!(matches!(patch.len(), 2 | 3), "patch must have 2 or 3 dimensions, got {patch:?}");
        let longest = *patch.iter().max().expect("non-empty patch") as f64;
        let (dummy_2d, degrees) = if patch.len() == 2 {
            let shortest = *patch.iter().min().expect("non-empty patch") as f64;
            (false, if longest / shortest > 1.5 { 15.0 } else { 180.0 })
        } else {
            let dummy_2d = longest / patch[0] as f64 > ANISOTROPY_THRESHOLD;
            (dummy_2d, if dummy_2d { 180.0 } else { 30.0 })
        };
        let max_rotation = degrees / 360.0 * 2.0 * PI;
        let initial = if mode == Mode::Nnunet {
            let mut initial = enlarged_patch(patch, max_rotation);
            if dummy_2d {
                initial[0] = patch[0];
            }
            initial
        } else {
            patch.to_vec()
        };
        Recipe {
            patch: patch.to_vec(),
            initial,
            channels: use_mask_for_norm.len(),
            masked_channels: (0..use_mask_for_norm.len()).filter(|&c| use_mask_for_norm[c]).collect(),
            mode,
            cascade_labels,
            dummy_2d,
            max_rotation,
            label_values: None,
        }
    }

    /// Declares the dataset's label values (nnU-Net's are 0..K-1), so that the spatial transform need
    /// not read each batch's values back from the device: labels absent from a batch interpolate to 0
    /// everywhere and never win, so the result is the same.
    pub fn with_labels(mut self, labels: &[i64]) -> Self {
        let mut values: Vec<i64> = labels.iter().copied().chain([-1]).collect();
        values.sort_unstable();
        values.dedup();
        self.label_values = Some(values);
        self
    }

    /// nnU-Net's enlarged initial patch that the loader must crop for training
    /// (`nnunetv2/training/data_augmentation/compute_initial_patch_size.py: get_patch_size`); equals the patch for
    /// `Mode::None` and `Mode::MirrorOnly`, which neither rotate nor scale.
    pub fn initial_patch(&self) -> Vec<usize> {
        self.initial.clone()
    }

    /// The spatial axes (0-based over the spatial dims) mirrored in training and at test time.
    pub fn mirror_axes(&self) -> Vec<usize> {
        match self.mode {
            Mode::None => Vec::new(),
            Mode::Nnunet | Mode::MirrorOnly => (0..self.patch.len()).collect(),
        }
    }

    /// The final patch size.
    pub fn patch(&self) -> &[usize] {
        &self.patch
    }

    /// Axes the spatial transform works on: the in-plane ones for dummy 2D.
    pub(crate) fn spatial_transform_dims(&self) -> usize {
        if self.dummy_2d { 2 } else { self.patch.len() }
    }

    /// One sample's random parameters, in the order of nnU-Net's pipeline.
    pub fn draw(&self, rng: &mut ChaCha8Rng) -> SampleParameters {
        let channels = self.channels;
        let dims = self.patch.len();
        let mut sample = SampleParameters { mirror: vec![false; dims], ..SampleParameters::default() };
        if self.mode == Mode::Nnunet {
            let rotate = rng.random::<f64>() < P_ROTATION;
            let scale = rng.random::<f64>() < P_SCALING;
            if rotate {
                // 2d (and dummy 2d) rotates in-plane about one axis; 3d about all three, one angle each
                let axes = if self.spatial_transform_dims() == 3 { 3 } else { 1 };
                sample.rotation =
                    Some((0..axes).map(|_| uniform(rng, (-self.max_rotation, self.max_rotation))).collect());
            }
            if scale {
                sample.scale = Some(uniform(rng, SCALING));
            }
            if rng.random::<f64>() < P_NOISE {
                sample.noise_sigma = Some(uniform(rng, NOISE_SIGMA));
            }
            if rng.random::<f64>() < P_BLUR {
                sample.blur = Some(
                    (0..channels)
                        .map(|_| {
                            let blurred = rng.random::<f64>() < P_BLUR_PER_CHANNEL;
                            blurred.then(|| (0..dims).map(|_| uniform(rng, BLUR_SIGMA)).collect())
                        })
                        .collect(),
                );
            }
            sample.brightness = per_channel(rng, P_BRIGHTNESS, channels, BRIGHTNESS);
            sample.contrast = per_channel(rng, P_CONTRAST, channels, CONTRAST);
            if rng.random::<f64>() < P_LOW_RESOLUTION {
                sample.low_resolution = Some(
                    (0..channels)
                        .map(|_| {
                            let applied = rng.random::<f64>() < P_LOW_RESOLUTION_PER_CHANNEL;
                            applied.then(|| uniform(rng, LOW_RESOLUTION_ZOOM))
                        })
                        .collect(),
                );
            }
            sample.inverted_gamma = per_channel(rng, P_INVERTED_GAMMA, channels, GAMMA);
            sample.gamma = per_channel(rng, P_GAMMA, channels, GAMMA);
        }
        if self.mode != Mode::None {
            for axis in self.mirror_axes() {
                sample.mirror[axis] = rng.random::<f64>() < P_MIRROR;
            }
        }
        if let (Mode::Nnunet, Some(labels)) = (self.mode, &self.cascade_labels) {
            if rng.random::<f64>() < P_BINARY_OPERATOR {
                let operations = shuffled_selection(rng, labels.len(), P_BINARY_OPERATOR_PER_LABEL)
                    .into_iter()
                    .map(|channel| BinaryOperation {
                        channel,
                        operator: [Morphology::Dilation, Morphology::Erosion, Morphology::Closing, Morphology::Opening]
                            [rng.random_range(0..4)],
                        radius: uniform(rng, STRUCTURING_RADIUS),
                    })
                    .collect();
                sample.binary_operators = Some(operations);
            }
            if rng.random::<f64>() < P_COMPONENT_REMOVAL {
                let removals = shuffled_selection(rng, labels.len(), P_COMPONENT_REMOVAL_PER_LABEL)
                    .into_iter()
                    .map(|channel| ComponentRemoval { channel, pick: rng.random::<f64>() })
                    .collect();
                sample.component_removals = Some(removals);
            }
        }
        sample
    }
}

/// One sample's random augmentation parameters; `None` means the transform does not fire. Per-channel
/// vectors are indexed by image channel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleParameters {
    /// Radians: one angle about each spatial axis in 3d (applied as `R2 R1 R0`), one in-plane angle in 2d
    /// and dummy 2d.
    pub rotation: Option<Vec<f64>>,
    /// One factor for all axes; > 1 zooms out.
    pub scale: Option<f64>,
    /// Standard deviation of the additive Gaussian noise, shared by all channels.
    pub noise_sigma: Option<f64>,
    /// Per channel, the Gaussian sigma per spatial axis when that channel is blurred.
    pub blur: Option<Vec<Option<Vec<f64>>>>,
    /// Multiplier per channel.
    pub brightness: Option<Vec<f64>>,
    /// Contrast factor per channel.
    pub contrast: Option<Vec<f64>>,
    /// Per channel, the zoom factor when that channel is simulated at low resolution.
    pub low_resolution: Option<Vec<Option<f64>>>,
    /// Gamma per channel, applied to the inverted image.
    pub inverted_gamma: Option<Vec<f64>>,
    /// Gamma per channel.
    pub gamma: Option<Vec<f64>>,
    /// Whether each spatial axis is flipped.
    pub mirror: Vec<bool>,
    /// Cascade: morphological operations on the previous stage's one-hot channels, in application order.
    pub binary_operators: Option<Vec<BinaryOperation>>,
    /// Cascade: one-hot channels that lose a random small connected component, in application order.
    pub component_removals: Option<Vec<ComponentRemoval>>,
}

impl SampleParameters {
    /// Whether the spatial transform has to interpolate (otherwise it is a plain centre crop).
    pub(crate) fn resamples(&self) -> bool {
        self.rotation.is_some() || self.scale.is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Morphology {
    Dilation,
    Erosion,
    Closing,
    Opening,
}

/// A binary morphological operation on one previous-stage one-hot channel (index into the cascade labels)
/// with a ball (3d) or disk (2d) of the given radius.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinaryOperation {
    pub channel: usize,
    pub operator: Morphology,
    pub radius: f64,
}

/// Removal of one connected component from a previous-stage one-hot channel: `pick` in [0, 1) chooses
/// among the components small enough to be removed, in raster order of their first voxel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ComponentRemoval {
    pub channel: usize,
    pub pick: f64,
}

fn uniform(rng: &mut ChaCha8Rng, (low, high): (f64, f64)) -> f64 {
    if low == high { low } else { rng.random_range(low..high) }
}

/// batchgeneratorsv2's `BGContrast`: half of the draws shrink (below 1), half enlarge.
fn contrast_factor(rng: &mut ChaCha8Rng, (low, high): (f64, f64)) -> f64 {
    if rng.random::<f64>() < 0.5 && low < 1.0 { uniform(rng, (low, 1.0)) } else { uniform(rng, (low.max(1.0), high)) }
}

/// A transform firing with probability `p` that draws one `BGContrast` factor per channel.
fn per_channel(rng: &mut ChaCha8Rng, p: f64, channels: usize, range: (f64, f64)) -> Option<Vec<f64>> {
    (rng.random::<f64>() < p).then(|| (0..channels).map(|_| contrast_factor(rng, range)).collect())
}

/// The channels `0..n` in random order, each kept with probability `p`.
fn shuffled_selection(rng: &mut ChaCha8Rng, n: usize, p: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    order.into_iter().filter(|_| rng.random::<f64>() < p).collect()
}

/// nnU-Net's `get_patch_size`: the patch extent vector rotated about each axis separately by the largest
/// angle (at most 90°), the element-wise maximum, divided by the smallest legacy scale 0.85, truncated.
fn enlarged_patch(patch: &[usize], max_rotation: f64) -> Vec<usize> {
    let angle = max_rotation.min(PI / 2.0);
    let (c, s) = (angle.cos(), angle.sin());
    let v: Vec<f64> = patch.iter().map(|&p| p as f64).collect();
    // batchgenerators multiplies the row vector from the left: v' = v R
    let rotated: Vec<Vec<f64>> = if v.len() == 3 {
        vec![
            vec![v[0], v[1] * c + v[2] * s, -v[1] * s + v[2] * c],
            vec![v[0] * c - v[2] * s, v[1], v[0] * s + v[2] * c],
            vec![v[0] * c + v[1] * s, -v[0] * s + v[1] * c, v[2]],
        ]
    } else {
        vec![vec![v[0] * c + v[1] * s, -v[0] * s + v[1] * c]]
    };
    (0..v.len())
        .map(|a| {
            let extent = rotated.iter().map(|r| r[a].abs()).fold(v[a], f64::max);
            (extent / 0.85) as usize
        })
        .collect()
}
