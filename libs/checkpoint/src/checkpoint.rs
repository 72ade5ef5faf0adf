//! Reading nnU-Net's checkpoint dict (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: `save_checkpoint`;
//! nnunetv2/inference/predict_from_raw_data.py: `nnUNetPredictor.initialize_from_trained_model_folder`).

use crate::{Tensor, Value};
use nntools_io::Result;
use std::path::Path;
use std::sync::Arc;

/// What nn-tools reads from an nnU-Net checkpoint.
#[derive(Debug, Clone)]
pub struct NnunetCheckpoint {
    /// `network_weights` as the file holds them, alias keys (`decoder.encoder.*`, `*.all_modules.*`)
    /// included.
    pub network_weights: Vec<(String, Arc<Tensor>)>,
    pub trainer_name: String,
    /// `init_args['configuration']`.
    pub configuration: String,
    pub inference_allowed_mirroring_axes: Vec<usize>,
    pub current_epoch: i64,
    /// The whole dict.
    pub value: Value,
}

impl NnunetCheckpoint {
    /// Reads an nnU-Net checkpoint; a `.pth` without these keys is refused naming the missing key.
    pub fn read(path: &Path) -> Result<Self> {
        todo!("{}", path.display())
    }
}
