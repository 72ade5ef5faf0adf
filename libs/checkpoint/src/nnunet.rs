//! nnU-Net's checkpoint dict (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: `save_checkpoint`,
//! `load_checkpoint`) read and written.

use crate::{Tensor, Value};
use nntools_io::Result;
use std::path::Path;
use std::sync::Arc;

/// nnU-Net's logger state (nnunetv2/training/logging/nnunet_logger.py: `nnUNetLogger.get_checkpoint`),
/// one entry per epoch in every list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingLog {
    pub mean_fg_dice: Vec<f64>,
    pub ema_fg_dice: Vec<f64>,
    pub dice_per_class_or_region: Vec<Vec<f64>>,
    pub train_losses: Vec<f64>,
    pub val_losses: Vec<f64>,
    pub lrs: Vec<f64>,
    pub epoch_start_timestamps: Vec<f64>,
    pub epoch_end_timestamps: Vec<f64>,
}

/// Everything nn-train hands over to write an nnU-Net checkpoint.
#[derive(Debug, Clone)]
pub struct TrainingCheckpoint {
    /// The network's parameters with their canonical (alias-free) nnU-Net names, in nnU-Net's
    /// `network.parameters()` order (see [`nnunet_parameter_order`]).
    pub weights: Vec<(String, Arc<Tensor>)>,
    /// SGD's momentum buffer of each parameter, same order; None before the first step.
    pub momentum: Option<Vec<Arc<Tensor>>>,
    /// The learning rate of the last epoch and the initial one (torch's `lr`, `initial_lr`).
    pub learning_rate: f64,
    pub initial_learning_rate: f64,
    /// torch's `GradScaler.state_dict()` values (scale, growth tracker) for CUDA runs; None on CPU.
    pub grad_scaler: Option<(f64, i64)>,
    pub log: TrainingLog,
    pub best_ema: Option<f64>,
    /// Epochs done (nnU-Net stores `current_epoch + 1`).
    pub current_epoch: usize,
    pub plans: serde_json::Value,
    pub configuration: String,
    /// The fold as nnU-Net's `init_args` hold it: an int, or the string `all`.
    pub fold: Value,
    pub dataset_json: serde_json::Value,
    /// `init_args['device']`: `cpu`, `cuda:0`.
    pub device: String,
    pub trainer_name: String,
    pub inference_allowed_mirroring_axes: Vec<usize>,
}

impl TrainingCheckpoint {
    /// nnU-Net's checkpoint dict: `network_weights` with the alias keys nnU-Net's `load_state_dict`
    /// requires, `optimizer_state` in torch's SGD layout, and the rest.
    pub fn to_value(&self) -> Value {
        todo!()
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        crate::write_pth(path, &self.to_value())
    }
}

/// nnU-Net's state_dict keys for a network's canonical parameter names (in [`nnunet_parameter_order`]):
/// each canonical key, the `all_modules.N` aliases of every `ConvDropoutNormReLU`, and the
/// `decoder.encoder.*` repeat of the encoder, in nnU-Net's order; each with the index (into
/// `canonical`) of the tensor it names.
pub fn state_dict_keys(canonical: &[String]) -> Vec<(String, usize)> {
    todo!("{canonical:?}")
}

/// Sorts canonical parameter names into the order of nnU-Net's `network.parameters()` (module
/// registration order in dynamic_network_architectures), which indexes torch's optimizer state.
pub fn nnunet_parameter_order(names: &mut [String]) {
    todo!("{names:?}")
}
