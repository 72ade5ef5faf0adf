//! nnU-Net v2's training-time data augmentation
//! (`nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: nnUNetTrainer.get_training_transforms` with
//! batchgeneratorsv2's transforms) as batched tch tensor operations on the device the batch lives on.
//!
//! Per run a [`Recipe`] fixes the patch, the enlarged initial patch the loader crops, the mirror axes,
//! dummy 2D and the cascade labels. Per sample, [`Recipe::draw`] draws every random decision from a
//! seeded `ChaCha8Rng` ([`SampleParameters`]), so runs are reproducible and the probabilities testable
//! without tensors. An [`Augmenter`] then applies, in nnU-Net's order: the spatial transform (rotation,
//! scaling, centre crop to the patch), Gaussian noise, Gaussian blur, multiplicative brightness,
//! contrast, simulated low resolution, inverted gamma, gamma, mirroring, masking of the
//! `use_mask_for_norm` channels outside the image, -1 → 0 in the labels, and for the cascade the
//! previous stage's one-hot channels with their random morphology and component removal.
//!
//! Tensors are (b, c, z, y, x) in 3d and (b, c, y, x) in 2d. The loader passes the image as float32 and
//! the labels as one channel (b, 1, ...) of any integer or float kind with -1 outside the image; for
//! `3d_cascade_fullres` the previous stage's segmentation, cropped the same way, is seg channel 1
//! (b, 2, ...). Both methods return the image with the previous stage's one-hot channels appended
//! (c + number of cascade labels channels) and the labels as (b, 1, ...) int64.
//!
//! [`Augmenter::training`] seeds torch's global generator (used for the noise) from the `rng`, so a CPU
//! run is reproducible given the rng state as long as nothing else draws from torch's generator while
//! it runs; [`Augmenter::training_with`] applies given parameters (tests, replays).
//!
//! ```no_run
//! use nntools_augmentation::{Augmenter, Mode, Recipe};
//! use rand::SeedableRng;
//! # let (data, seg) = (tch::Tensor::zeros([9, 1, 73, 80, 64], tch::kind::FLOAT_CPU), tch::Tensor::zeros([9, 1, 73, 80, 64], tch::kind::INT64_CPU));
//! let recipe = Recipe::new(&[40, 56, 40], &[false], Mode::Nnunet, None);
//! assert_eq!(recipe.initial_patch(), [73, 80, 64]); // what the loader crops
//! let augmenter = Augmenter::new(recipe);
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12345);
//! let (data, seg) = augmenter.training(&data, &seg, &mut rng); // (9, 1, 40, 56, 40) each
//! ```

mod cascade;
mod intensity;
mod preview;
mod recipe;
mod spatial;
#[cfg(test)]
mod tests;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

pub use preview::write_mid_slice_png;
pub use recipe::{BinaryOperation, ComponentRemoval, Mode, Morphology, Recipe, SampleParameters};

/// A small tensor made on the host (indices, parameters, kernels) moved to `device`. On a GPU it goes
/// through page-locked memory and is copied without waiting: a plain copy from pageable memory would
/// wait for every kernel queued before it, once per upload and batch.
pub(crate) fn upload(tensor: Tensor, device: Device) -> Tensor {
    if device.is_cuda() {
        let kind = tensor.kind();
        tensor.internal_pin_memory(device).to_device_(device, kind, true, false)
    } else {
        tensor
    }
}

/// Applies a [`Recipe`] to batches.
pub struct Augmenter {
    recipe: Recipe,
}

impl Augmenter {
    pub fn new(recipe: Recipe) -> Self {
        Augmenter { recipe }
    }

    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// The training pipeline: `data` (b, c, *initial_patch) float32 and `seg` (b, 1 or 2, *initial_patch)
    /// to data (b, c [+ cascade labels], *patch) float32 and seg (b, 1, *patch) int64 with -1 mapped to 0,
    /// on the input's device. Draws one [`SampleParameters`] per sample from `rng` after seeding torch's
    /// generator (used for the noise) from it.
    pub fn training(&self, data: &Tensor, seg: &Tensor, rng: &mut ChaCha8Rng) -> (Tensor, Tensor) {
        tch::manual_seed(rng.next_u64() as i64);
        let params: Vec<SampleParameters> = (0..data.size()[0]).map(|_| self.recipe.draw(rng)).collect();
        self.training_with(data, seg, &params)
    }

    /// The training pipeline with given per-sample parameters (one per sample).
    pub fn training_with(&self, data: &Tensor, seg: &Tensor, params: &[SampleParameters]) -> (Tensor, Tensor) {
        assert_eq!(params.len() as i64, data.size()[0], "one parameter set per sample");
        let (data, seg) = self.inputs(data, seg);
        let (data, seg) = spatial::transform(&self.recipe, &data, &seg, params);
        let data = intensity::transform(&data, params, self.recipe.dummy_2d);
        let (data, seg) = (spatial::mirror(&data, params), spatial::mirror(&seg, params));
        let data = self.mask(&data, &seg);
        let (data, seg) = self.finish(&data, &seg);
        match &self.recipe.cascade_labels {
            Some(labels) => (cascade::perturb(&data, params, labels.len()), seg),
            None => (data, seg),
        }
    }

    /// The deterministic steps only (nnU-Net's validation pipeline: -1 → 0 and the cascade's one-hot
    /// channels); the input is already at the patch size.
    pub fn validation(&self, data: &Tensor, seg: &Tensor) -> (Tensor, Tensor) {
        let (data, seg) = self.inputs(data, seg);
        let spatial: Vec<usize> = data.size()[2..].iter().map(|&s| s as usize).collect();
        assert_eq!(spatial, self.recipe.patch, "validation data must be at the patch size");
        self.finish(&data, &seg)
    }

    fn inputs(&self, data: &Tensor, seg: &Tensor) -> (Tensor, Tensor) {
        let seg_channels = if self.recipe.cascade_labels.is_some() { 2 } else { 1 };
        assert_eq!(seg.size()[1], seg_channels, "seg must have {seg_channels} channel(s)");
        assert_eq!(data.size()[1] as usize, self.recipe.channels, "one use_mask_for_norm flag per channel");
        let seg = if seg.is_floating_point() { seg.round() } else { seg.shallow_clone() };
        (data.to_kind(Kind::Float), seg.to_kind(Kind::Int64))
    }

    /// nnU-Net's MaskImageTransform: `use_mask_for_norm` channels are 0 where the labels are negative.
    fn mask(&self, data: &Tensor, seg: &Tensor) -> Tensor {
        if self.recipe.masked_channels.is_empty() {
            return data.shallow_clone();
        }
        let mut selected = vec![false; self.recipe.channels];
        for &c in &self.recipe.masked_channels {
            selected[c] = true;
        }
        let mut shape = vec![1, self.recipe.channels as i64];
        shape.resize(data.dim(), 1);
        let selected = upload(Tensor::from_slice(&selected).view(shape.as_slice()), data.device());
        data.masked_fill(&seg.narrow(1, 0, 1).lt(0).logical_and(&selected), 0.0)
    }

    /// -1 → 0 in all label channels, then the previous stage's labels moved into the image as one-hot.
    fn finish(&self, data: &Tensor, seg: &Tensor) -> (Tensor, Tensor) {
        let seg = seg.masked_fill(&seg.eq(-1), 0);
        match &self.recipe.cascade_labels {
            Some(labels) => cascade::move_to_data(data, &seg, labels),
            None => (data.shallow_clone(), seg),
        }
    }
}
