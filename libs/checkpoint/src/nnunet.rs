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
        let str = |s: &str| Value::Str(s.into());
        let floats = |values: &[f64]| Value::List(values.iter().map(|&v| Value::Float(v)).collect());
        let names: Vec<String> = self.weights.iter().map(|(name, _)| name.clone()).collect();
        let network_weights = state_dict_keys(&names)
            .into_iter()
            .map(|(key, index)| (Value::Str(key), Value::Tensor(Arc::clone(&self.weights[index].1))))
            .collect();
        // torch/optim/optimizer.py: `Optimizer.state_dict`: per-parameter state under the parameter's index
        // in `network.parameters()`; SGD keeps only the momentum buffer (torch/optim/sgd.py: `SGD.step`)
        let state = self.momentum.iter().flatten().enumerate().map(|(index, buffer)| {
            let buffer = Value::Dict(vec![(str("momentum_buffer"), Value::Tensor(Arc::clone(buffer)))]);
            (Value::Int(index as i64), buffer)
        });
        // nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: `configure_optimizers`: SGD(momentum=0.99,
        // nesterov=True, weight_decay=3e-5); the rest are torch.optim.SGD's defaults, `initial_lr` is what
        // nnunetv2/training/lr_scheduler/polylr.py: `PolyLRScheduler` (an LRScheduler) adds
        let param_group = Value::Dict(vec![
            (str("lr"), Value::Float(self.learning_rate)),
            (str("momentum"), Value::Float(0.99)),
            (str("dampening"), Value::Int(0)),
            (str("weight_decay"), Value::Float(3e-5)),
            (str("nesterov"), Value::Bool(true)),
            (str("maximize"), Value::Bool(false)),
            (str("foreach"), Value::None),
            (str("differentiable"), Value::Bool(false)),
            (str("fused"), Value::None),
            (str("initial_lr"), Value::Float(self.initial_learning_rate)),
            (str("params"), Value::List((0..self.weights.len() as i64).map(Value::Int).collect())),
        ]);
        let optimizer_state = Value::Dict(vec![
            (str("state"), Value::Dict(state.collect())),
            (str("param_groups"), Value::List(vec![param_group])),
        ]);
        // torch/amp/grad_scaler.py: `GradScaler.state_dict` with nnU-Net's default `GradScaler("cuda")`
        let grad_scaler_state = self.grad_scaler.map_or(Value::None, |(scale, growth_tracker)| {
            Value::Dict(vec![
                (str("scale"), Value::Float(scale)),
                (str("growth_factor"), Value::Float(2.0)),
                (str("backoff_factor"), Value::Float(0.5)),
                (str("growth_interval"), Value::Int(2000)),
                (str("_growth_tracker"), Value::Int(growth_tracker)),
            ])
        });
        let log = &self.log;
        // nnunetv2/training/logging/nnunet_logger.py: `MetaLogger.__init__`'s `my_fantastic_logging`, in its order
        let logging = Value::Dict(vec![
            (str("mean_fg_dice"), floats(&log.mean_fg_dice)),
            (str("ema_fg_dice"), floats(&log.ema_fg_dice)),
            (
                str("dice_per_class_or_region"),
                Value::List(log.dice_per_class_or_region.iter().map(|dice| floats(dice)).collect()),
            ),
            (str("train_losses"), floats(&log.train_losses)),
            (str("val_losses"), floats(&log.val_losses)),
            (str("lrs"), floats(&log.lrs)),
            (str("epoch_start_timestamps"), floats(&log.epoch_start_timestamps)),
            (str("epoch_end_timestamps"), floats(&log.epoch_end_timestamps)),
        ]);
        // nnUNetTrainer.__init__'s `my_init_kwargs`: its signature's parameters in order
        let init_args = Value::Dict(vec![
            (str("plans"), Value::from_json(&self.plans)),
            (str("configuration"), str(&self.configuration)),
            (str("fold"), self.fold.clone()),
            (str("dataset_json"), Value::from_json(&self.dataset_json)),
            (str("device"), Value::Device(self.device.clone())),
        ]);
        Value::Dict(vec![
            (str("network_weights"), Value::OrderedDict(network_weights)),
            (str("optimizer_state"), optimizer_state),
            (str("grad_scaler_state"), grad_scaler_state),
            (str("logging"), logging),
            (str("_best_ema"), self.best_ema.map_or(Value::None, Value::Float)),
            (str("current_epoch"), Value::Int(self.current_epoch as i64)),
            (str("init_args"), init_args),
            (str("trainer_name"), str(&self.trainer_name)),
            (
                str("inference_allowed_mirroring_axes"),
                // None without mirroring, as nnUNetTrainerNoDA and NoMirroring set it: an empty tuple
                // fails in predict_from_raw_data.py: `_internal_maybe_mirror_and_predict` (`max(mirror_axes)`)
                if self.inference_allowed_mirroring_axes.is_empty() {
                    Value::None
                } else {
                    Value::Tuple(
                        self.inference_allowed_mirroring_axes.iter().map(|&axis| Value::Int(axis as i64)).collect(),
                    )
                },
            ),
        ])
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        crate::write_pth(path, &self.to_value())
    }
}

/// A `ConvDropoutNormReLU` parameter's module, the index its layer has in that module's `all_modules`
/// Sequential, and the parameter (`P.norm.bias` -> `(P, 1, bias)`)
/// (dynamic_network_architectures/building_blocks/simple_conv_blocks.py: `ConvDropoutNormReLU.__init__`:
/// conv, dropout if any, norm, nonlin; nnU-Net's plans have no dropout, so the norm is at 1).
fn conv_norm_module(name: &str) -> Option<(&str, usize, &str)> {
    let (module, parameter) = name.rsplit_once('.')?;
    let (prefix, layer) = module.rsplit_once('.')?;
    match layer {
        "conv" => Some((prefix, 0, parameter)),
        "norm" => Some((prefix, 1, parameter)),
        _ => None,
    }
}

/// nnU-Net's state_dict keys for a network's canonical parameter names (in [`nnunet_parameter_order`]):
/// each canonical key, the `all_modules.N` aliases of every `ConvDropoutNormReLU`, and the
/// `decoder.encoder.*` repeat of the encoder, in nnU-Net's order; each with the index (into
/// `canonical`) of the tensor it names.
///
/// torch/nn/modules/module.py: `Module.state_dict` lists a module's own parameters, then each child's in
/// registration order, the same parameter again under every name it is reachable by: a
/// `ConvDropoutNormReLU` registers `conv` and `norm`, then `all_modules` holding both again;
/// dynamic_network_architectures/building_blocks/unet_decoder.py: `UNetDecoder.__init__` registers the
/// encoder (`self.encoder = encoder`) before its own stages.
pub fn state_dict_keys(canonical: &[String]) -> Vec<(String, usize)> {
    let with_aliases = |names: &mut dyn Iterator<Item = (usize, &String)>| {
        let mut keys = Vec::new();
        let mut aliases: Vec<(String, usize)> = Vec::new();
        let mut module: Option<&str> = None;
        for (index, name) in names {
            let this = conv_norm_module(name);
            if this.map(|(prefix, ..)| prefix) != module {
                keys.append(&mut aliases);
                module = this.map(|(prefix, ..)| prefix);
            }
            keys.push((name.clone(), index));
            if let Some((prefix, layer, parameter)) = this {
                aliases.push((format!("{prefix}.all_modules.{layer}.{parameter}"), index));
            }
        }
        keys.append(&mut aliases);
        keys
    };
    let encoder = with_aliases(&mut canonical.iter().enumerate().filter(|(_, name)| name.starts_with("encoder.")));
    let rest = with_aliases(&mut canonical.iter().enumerate().filter(|(_, name)| !name.starts_with("encoder.")));
    let repeat = encoder.iter().map(|(key, index)| (format!("decoder.{key}"), *index));
    let decoder_start = rest.iter().position(|(key, _)| key.starts_with("decoder.")).unwrap_or(rest.len());
    let mut keys = encoder.clone();
    keys.extend(rest[..decoder_start].iter().cloned());
    keys.extend(repeat);
    keys.extend(rest[decoder_start..].iter().cloned());
    keys
}

/// The registration order of the submodules and parameters of dynamic_network_architectures' U-Nets:
/// architectures/unet.py (`encoder`, `decoder`), building_blocks/residual_encoders.py (`stem`, `stages`),
/// building_blocks/unet_decoder.py (`encoder`, `stages`, `transpconvs`, `seg_layers`),
/// building_blocks/residual.py: `StackedResidualBlocks` (`blocks`) and `BasicBlockD`/`BottleneckD`
/// (`conv1`, `conv2`, `conv3`, `skip`), building_blocks/simple_conv_blocks.py (`convs`; `conv`, `norm`),
/// torch's `_ConvNd`/`_NormBase` (`weight`, `bias`).
const REGISTRATION_ORDER: [&str; 16] = [
    "encoder",
    "decoder",
    "stem",
    "stages",
    "transpconvs",
    "seg_layers",
    "blocks",
    "convs",
    "conv1",
    "conv2",
    "conv3",
    "skip",
    "conv",
    "norm",
    "weight",
    "bias",
];

/// Sorts canonical parameter names into the order of nnU-Net's `network.parameters()` (module
/// registration order in dynamic_network_architectures), which indexes torch's optimizer state.
///
/// Names are compared component by component: numbers (Sequential and ModuleList indices) numerically,
/// names by [`REGISTRATION_ORDER`]; a name outside it (no nnU-Net U-Net has one) sorts after the known
/// ones, alphabetically.
pub fn nnunet_parameter_order(names: &mut [String]) {
    names.sort_by(|a, b| a.split('.').map(Component::of).cmp(b.split('.').map(Component::of)));
}

/// One dot-separated part of a parameter name, ordered as [`nnunet_parameter_order`] compares them.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Component<'a> {
    Index(u64),
    Registered(usize),
    Unknown(&'a str),
}

impl<'a> Component<'a> {
    fn of(part: &'a str) -> Self {
        match part.parse() {
            Ok(index) => Component::Index(index),
            Err(_) => REGISTRATION_ORDER
                .iter()
                .position(|known| *known == part)
                .map_or(Component::Unknown(part), Component::Registered),
        }
    }
}
