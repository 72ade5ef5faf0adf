//! Reading nnU-Net's checkpoint dict (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: `save_checkpoint`;
//! nnunetv2/inference/predict_from_raw_data.py: `nnUNetPredictor.initialize_from_trained_model_folder`).

use crate::{Tensor, Value};
use nntools_io::{Error, Result};
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
    /// Empty where the checkpoint has none (absent or None): nnU-Net's predictor then mirrors nothing.
    pub inference_allowed_mirroring_axes: Vec<usize>,
    pub current_epoch: i64,
    /// The whole dict.
    pub value: Value,
}

impl NnunetCheckpoint {
    /// Reads an nnU-Net checkpoint; a `.pth` without these keys is refused naming the missing key.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_value(path, crate::read_pth(path)?)
    }

    /// The checkpoint dict `value` read from `path` (which only names it in errors).
    pub fn from_value(path: &Path, value: Value) -> Result<Self> {
        let bad = |problem: String| Error::bad_input(path, format!("not an nnU-Net checkpoint: {problem}"));
        let key = |name: &str| value.get(name).ok_or_else(|| bad(format!("no `{name}` key")));
        let weights = key("network_weights")?.entries().ok_or_else(|| bad("`network_weights` is not a dict".into()))?;
        let network_weights = weights
            .iter()
            .map(|(name, tensor)| match (name, tensor) {
                (Value::Str(name), Value::Tensor(tensor)) => Ok((name.clone(), tensor.clone())),
                _ => Err(bad(format!("`network_weights` holds {name:.60?}, not a name and a tensor"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let trainer_name = key("trainer_name")?.as_str().ok_or_else(|| bad("`trainer_name` is not a string".into()))?;
        let configuration = key("init_args")?
            .get("configuration")
            .ok_or_else(|| bad("no `init_args['configuration']`".into()))?
            .as_str()
            .ok_or_else(|| bad("`init_args['configuration']` is not a string".into()))?;
        // predict_from_raw_data.py: `initialize_from_trained_model_folder` takes None where the key is
        // absent, and `predict_sliding_window_return_logits` mirrors along no axis for None
        let inference_allowed_mirroring_axes = match value.get("inference_allowed_mirroring_axes") {
            None | Some(Value::None) => Vec::new(),
            Some(axes) => axes
                .items()
                .and_then(|axes| axes.iter().map(|axis| usize::try_from(axis.as_int()?).ok()).collect())
                .ok_or_else(|| bad("`inference_allowed_mirroring_axes` is not a tuple of axes".into()))?,
        };
        let current_epoch =
            key("current_epoch")?.as_int().ok_or_else(|| bad("`current_epoch` is not an int".into()))?;
        Ok(Self {
            network_weights,
            trainer_name: trainer_name.to_string(),
            configuration: configuration.to_string(),
            inference_allowed_mirroring_axes,
            current_epoch,
            value,
        })
    }
}

/// Whether a state_dict key names one of the network's parameters: not one of the alias keys under
/// which nnU-Net's networks repeat tensors (dynamic_network_architectures: `ConvDropoutNormReLU.all_modules`,
/// `UNetDecoder.encoder`), nor a normalisation's running statistics, which are buffers.
pub fn is_parameter_key(name: &str) -> bool {
    let alias = name.starts_with("decoder.encoder.") || name.contains(".all_modules.");
    let buffer = [".running_mean", ".running_var", ".num_batches_tracked"].iter().any(|s| name.ends_with(s));
    !alias && !buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_buffers_are_not_parameters() {
        assert!(is_parameter_key("encoder.stages.0.0.convs.0.conv.weight"));
        assert!(is_parameter_key("decoder.seg_layers.2.bias"));
        assert!(!is_parameter_key("encoder.stages.0.0.convs.0.all_modules.0.weight"));
        assert!(!is_parameter_key("decoder.encoder.stages.0.0.convs.0.conv.weight"));
        assert!(!is_parameter_key("encoder.stages.0.0.convs.0.norm.running_mean"));
    }
}
