//! The training loop: nnU-Net's epochs of 250 training and 50 validation iterations, poly learning
//! rate, online pseudo Dice with its EMA, JSON-lines log, and safetensors checkpoints that carry
//! everything needed to resume exactly (weights, momentum buffers, epoch, EMA, random state).

use crate::data::{Batch, BatchPlan, PatchSampler, Prefetcher, TrainingCase};
use crate::loss::{DiceBceLoss, Objective};
use crate::{
    DiceCeLoss, GRADIENT_CLIP_NORM, INITIAL_LEARNING_RATE, LossScaler, Sgd, deep_supervision_weights,
    poly_learning_rate,
};
use ndarray::ArrayD;
use nntools_augmentation::{Augmenter, Mode, Recipe, write_mid_slice_png};
use nntools_checkpoint::{TrainingCheckpoint, TrainingLog, nnunet_parameter_order};
use nntools_io::Error;
use nntools_layout::run::{Checkpoint, Fold, FoldDir};
use nntools_network::{MixedPrecision, Model, Precision};
use nntools_planning::Configuration;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Device, Kind, Tensor};

/// Epochs between `checkpoint_latest` saves.
const CHECKPOINT_EVERY: usize = 50;
const EMA_DECAY: f64 = 0.9;
/// Threads cropping batches ahead of the training step.
const LOADER_THREADS: usize = 2;
/// Mixes the seed for validation batches, so they are not the training batches.
#[allow(clippy::unusual_byte_groupings)] // grouped to read "seed of valid"
const VALIDATION_STREAM_SEED: u64 = 0x5eed_0f_7a11d;

/// How long and where to train.
pub struct Settings {
    pub epochs: usize,
    pub iterations: usize,
    pub validation_iterations: usize,
    pub seed: u64,
    pub device: Device,
    /// The network's arithmetic (`--precision`).
    pub precision: Precision,
    /// Output folder of this fold (`RUN_DIR/fold_F`).
    pub fold_dir: FoldDir,
    pub resume: bool,
    /// Training augmentation: nnU-Net's, mirroring only, or none.
    pub augment: Mode,
    /// Set (by a signal handler) to stop after the current iteration with `checkpoint_latest` saved.
    pub stop: Arc<AtomicBool>,
}

/// Why a run ended early.
#[derive(Debug)]
pub enum Stopped {
    /// `Settings::stop` was set; `checkpoint_latest` holds the weights of the interrupted epoch.
    Interrupted {
        epoch: usize,
    },
    Failed(Error),
}

impl From<Error> for Stopped {
    fn from(error: Error) -> Self {
        Self::Failed(error)
    }
}

/// What nnU-Net's checkpoint records of how its trainer was made (nnUNetTrainer.py: `my_init_kwargs`)
/// that the trainer does not otherwise know.
pub struct InitArgs {
    /// The plans, as the run folder's plans.json holds them.
    pub plans: serde_json::Value,
    pub dataset_json: serde_json::Value,
    pub fold: Fold,
}

/// One line of `log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub pseudo_dice: Vec<f64>,
    pub ema_pseudo_dice: f64,
    pub lr: f64,
    pub epoch_time_s: f64,
    /// Wall-clock start and end of the epoch in seconds since the Unix epoch (Python's `time.time()`, as
    /// nnU-Net's logger keeps them); 0 in logs written before nn-train recorded them.
    #[serde(default)]
    pub epoch_start_timestamp: f64,
    #[serde(default)]
    pub epoch_end_timestamp: f64,
}

impl EpochLog {
    /// The mean pseudo Dice over the foreground classes that have one (nnU-Net's `mean_fg_dice`,
    /// `np.nanmean`): NaN when none has.
    pub fn mean_pseudo_dice(&self) -> f64 {
        let present: Vec<f64> = self.pseudo_dice.iter().copied().filter(|d| !d.is_nan()).collect();
        if present.is_empty() { f64::NAN } else { present.iter().sum::<f64>() / present.len() as f64 }
    }
}

/// nnU-Net's logger state (nnunetv2/training/logging/nnunet_logger.py: `nnUNetLogger.get_checkpoint`) of
/// the epochs logged.
fn training_log(history: &[EpochLog]) -> TrainingLog {
    let each = |f: fn(&EpochLog) -> f64| history.iter().map(f).collect();
    TrainingLog {
        mean_fg_dice: each(EpochLog::mean_pseudo_dice),
        ema_fg_dice: each(|l| l.ema_pseudo_dice),
        dice_per_class_or_region: history.iter().map(|l| l.pseudo_dice.clone()).collect(),
        train_losses: each(|l| l.train_loss),
        val_losses: each(|l| l.val_loss),
        lrs: each(|l| l.lr),
        epoch_start_timestamps: each(|l| l.epoch_start_timestamp),
        epoch_end_timestamps: each(|l| l.epoch_end_timestamp),
    }
}

/// The nnU-Net trainer class whose training `mode` matches, for the `.pth` checkpoint's `trainer_name`
/// (nnunetv2/training/nnUNetTrainer/variants/data_augmentation/).
fn nnunet_trainer_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Nnunet => "nnUNetTrainer",
        // nnUNetTrainerNoDA.py: the validation transforms only, and no mirroring at inference either
        Mode::None => "nnUNetTrainerNoDA",
        // no nnU-Net trainer mirrors without the rest of its augmentation (nnUNetTrainerNoMirroring.py
        // is the opposite: everything but mirroring); NoDA differs from mirror-only in the mirroring
        // alone, and the checkpoint's `inference_allowed_mirroring_axes` keep the test-time mirroring
        Mode::MirrorOnly => "nnUNetTrainerNoDA",
    }
}

/// A torch device's name as `str(torch.device)` writes it.
fn torch_device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_owned(),
        Device::Cuda(index) => format!("cuda:{index}"),
        Device::Mps => "mps".to_owned(),
        Device::Vulkan => "vulkan".to_owned(),
    }
}

/// A tensor's values as float32 on the host, for a `.pth` checkpoint.
fn host_tensor(tensor: &Tensor) -> nntools_checkpoint::Tensor {
    let shape = tensor.size().iter().map(|&s| s as usize).collect();
    let values = Vec::<f32>::try_from(tensor.to_kind(Kind::Float).to_device(Device::Cpu).contiguous().flatten(0, -1))
        .expect("a float tensor converts to f32");
    nntools_checkpoint::Tensor::from_f32(shape, &values)
}

/// Seconds since the Unix epoch, as Python's `time.time()`.
fn unix_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A checkpoint's sidecar: where training stands, and what inference needs to know about the weights
/// (the keys of nnU-Net's checkpoint that nn-infer reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainingState {
    /// The next epoch to run.
    epoch: usize,
    ema_pseudo_dice: Option<f64>,
    best_ema: Option<f64>,
    configuration: String,
    inference_allowed_mirroring_axes: Vec<usize>,
    /// The fp16 loss scaler's scale and clean-step count (CUDA runs), as nnU-Net keeps its GradScaler's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss_scaler: Option<(f64, i64)>,
}

/// What the network learns, from the dataset's labels (nnU-Net's `LabelManager`).
#[derive(Debug, Clone)]
pub struct TrainingLabels {
    /// Every value a label map may hold, the ignore label included.
    pub values: Vec<i64>,
    /// The foreground labels (a cascade stage's extra inputs).
    pub foreground: Vec<i64>,
    /// For region-based datasets, the labels of each region (one sigmoid output each); empty for
    /// label training (one softmax output per label).
    pub regions: Vec<Vec<i64>>,
    pub ignore_label: Option<i64>,
}

impl TrainingLabels {
    pub fn of(descriptor: &nntools_dataset::Descriptor) -> Self {
        let regions = if descriptor.is_region_based() {
            descriptor.foreground_entries().map(|l| l.values.clone()).collect()
        } else {
            Vec::new()
        };
        Self {
            values: descriptor.allowed_label_values(),
            foreground: descriptor.foreground_labels(),
            regions,
            ignore_label: descriptor.ignore_label,
        }
    }

    /// Network outputs: one per region, or one per label (background included).
    pub fn outputs(&self) -> usize {
        self.foreground_outputs() + usize::from(self.regions.is_empty())
    }

    /// The outputs that predict foreground: all regions, or every label but the background.
    pub fn foreground_outputs(&self) -> usize {
        if self.regions.is_empty() { self.foreground.len() } else { self.regions.len() }
    }

    /// The loss target of augmented labels `(b, 1, ...)`: the labels themselves, or for regions one
    /// channel per region, then (with an ignore label) one marking the ignored voxels, as nnU-Net's
    /// `ConvertSegmentationToRegionsTransform` makes them.
    fn target(&self, seg: &Tensor) -> Tensor {
        if self.regions.is_empty() {
            return seg.shallow_clone();
        }
        let any_of = |labels: &[i64]| {
            labels.iter().map(|&l| seg.eq(l)).reduce(|a, b| a.logical_or(&b)).expect("a region has labels")
        };
        let mut channels: Vec<Tensor> = self.regions.iter().map(|r| any_of(r)).collect();
        channels.extend(self.ignore_label.map(|ignore| seg.eq(ignore)));
        Tensor::cat(&channels, 1)
    }

    /// Per foreground output, the predicted and reference masks of a validation batch and where they
    /// count (nnU-Net's `validation_step`): argmax labels or regions above probability 0.5.
    fn masks(&self, output: &Tensor, target: &Tensor) -> (Vec<(Tensor, Tensor)>, Option<Tensor>) {
        if self.regions.is_empty() {
            let predicted = output.argmax(1, true);
            let target = target.to_kind(Kind::Int64);
            let mask = self.ignore_label.map(|ignore| target.ne(ignore));
            // nnU-Net's labels are consecutive: output channel l predicts label l
            let pairs = self.foreground.iter().map(|&l| (predicted.eq(l), target.eq(l))).collect();
            return (pairs, mask);
        }
        let regions = self.regions.len() as i64;
        let mask = self.ignore_label.map(|_| target.narrow(1, regions, 1).logical_not());
        let pairs = (0..regions)
            .map(|r| (output.narrow(1, r, 1).gt(0.0), target.narrow(1, r, 1).to_kind(Kind::Bool)))
            .collect();
        (pairs, mask)
    }
}

/// Everything a training run works with.
pub struct Trainer {
    model: Model,
    names: Vec<String>,
    optimizer: Sgd,
    loss: Objective,
    labels: TrainingLabels,
    ds_weights: Vec<f64>,
    /// Cumulative stride of each deep-supervision output, full resolution first.
    ds_strides: Vec<Vec<usize>>,
    augmenter: Augmenter,
    train_batches: Arc<BatchPlan>,
    val_batches: Arc<BatchPlan>,
    /// Autocast of the network's forward passes; `None` for fp32.
    mixed: Option<MixedPrecision>,
    /// Loss scaling, with fp16 autocast only (bf16 has fp32's exponent range).
    loss_scaler: Option<LossScaler>,
    state: TrainingState,
    settings: Settings,
    init_args: InitArgs,
    /// The epochs logged so far (for progress.png and the `.pth` checkpoints' logging).
    history: Vec<EpochLog>,
}

/// A batch as host tensors, page-locked when training on a GPU so that its copy to the device runs
/// asynchronously; made on the loader threads.
struct HostBatch {
    data: Tensor,
    seg: Tensor,
    rng: ChaCha8Rng,
}

impl HostBatch {
    fn stage(batch: Batch, device: Device) -> Self {
        // (`_pin_memory`: `pin_memory` with a device argument warns that the argument is deprecated)
        let host = |tensor: Tensor| if device.is_cuda() { tensor.internal_pin_memory(device) } else { tensor };
        Self { data: host(to_tensor(&batch.data)), seg: host(to_tensor(&batch.seg)), rng: batch.rng }
    }
}

fn to_tensor<T: tch::kind::Element + Copy>(array: &ArrayD<T>) -> Tensor {
    let standard = array.as_standard_layout();
    let shape: Vec<i64> = array.shape().iter().map(|&s| s as i64).collect();
    Tensor::from_slice(standard.as_slice().expect("standard layout")).view(shape.as_slice())
}

impl Trainer {
    /// A new run's trainer (call [`Trainer::resume`] to continue from a checkpoint instead). The only
    /// failures are the configuration's (a network the plans describe inconsistently).
    ///
    /// # Panics
    /// Without training cases: the caller knows which file listed none.
    pub fn new(
        configuration_name: &str,
        configuration: &Configuration,
        labels: TrainingLabels,
        train_cases: Vec<Arc<TrainingCase>>,
        val_cases: Vec<Arc<TrainingCase>>,
        settings: Settings,
        init_args: InitArgs,
    ) -> Result<Self, String> {
        let image_channels = train_cases.first().expect("training cases").data().shape()[0];
        // a cascade stage also sees the previous stage's foreground labels, one-hot
        let cascade_labels = configuration.previous_stage.as_ref().map(|_| labels.foreground.clone());
        let channels = image_channels + cascade_labels.as_ref().map_or(0, Vec::len);
        tch::manual_seed(settings.seed as i64);
        let arch = &configuration.architecture;
        let model =
            Model::new(settings.device, &arch.network_class_name, &arch.arch_kwargs, channels, labels.outputs())?;
        let mut named: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, parameters): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let strides = &arch.arch_kwargs.strides;
        // one head per decoder stage; a one-stage network (images too small to pool) has its single head
        let outputs = (strides.len() - 1).max(1);
        let mut cumulative = vec![1usize; strides[0].len()];
        let ds_strides = (0..outputs)
            .map(|k| {
                for (c, s) in cumulative.iter_mut().zip(&strides[k]) {
                    *c *= s;
                }
                cumulative.clone()
            })
            .collect();
        let patch = &configuration.patch_size;
        let two_d = patch.len() == 2;
        // the labels declared, so that no batch's values are read back from the device
        let recipe = Recipe::new(patch, &configuration.use_mask_for_norm, settings.augment, cascade_labels)
            .with_labels(&labels.values);
        let mirroring_axes = recipe.mirror_axes();
        // training batches are cropped at the enlarged patch the spatial transform needs, validation
        // batches at the patch itself
        let initial = recipe.initial_patch();
        // preprocessing stores the annotated voxels after the foreground classes (nnU-Net's order)
        let annotated_class = labels.ignore_label.map(|_| labels.foreground_outputs());
        let plan = |cases: Vec<Arc<TrainingCase>>, patch: &[usize], seed| {
            let patch = if two_d { [1, patch[0], patch[1]] } else { [patch[0], patch[1], patch[2]] };
            let sampler = PatchSampler { patch, annotated_class };
            Arc::new(BatchPlan { cases, sampler, batch_size: configuration.batch_size, two_d, seed })
        };
        // with --fold all nnU-Net validates on the training cases
        let val_cases = if val_cases.is_empty() { train_cases.clone() } else { val_cases };
        if settings.device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let mixed = settings.precision.on(settings.device)?;
        Ok(Self {
            optimizer: Sgd::new(parameters),
            model,
            names,
            loss: if labels.regions.is_empty() {
                Objective::Labels(DiceCeLoss {
                    batch_dice: configuration.batch_dice,
                    ignore_label: labels.ignore_label,
                })
            } else {
                Objective::Regions(DiceBceLoss {
                    batch_dice: configuration.batch_dice,
                    ignore_channel: labels.ignore_label.is_some(),
                })
            },
            labels,
            ds_weights: deep_supervision_weights(outputs),
            ds_strides,
            augmenter: Augmenter::new(recipe),
            train_batches: plan(train_cases, &initial, settings.seed),
            val_batches: plan(val_cases, patch, settings.seed ^ VALIDATION_STREAM_SEED),
            mixed,
            loss_scaler: mixed.filter(|m| m.kind() == Kind::Half).map(|_| LossScaler::new(settings.device)),
            state: TrainingState {
                epoch: 0,
                ema_pseudo_dice: None,
                best_ema: None,
                configuration: configuration_name.to_owned(),
                inference_allowed_mirroring_axes: mirroring_axes,
                loss_scaler: None,
            },
            settings,
            init_args,
            history: Vec::new(),
        })
    }

    /// Writes the first `count` augmented training samples as mid-slice PNGs (image channels and
    /// labels side by side) into `dir`, for a person to check the augmentation.
    pub fn dump_augmented(&self, count: usize, dir: &Path) -> nntools_io::Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::runtime(dir, e))?;
        let batches = count.div_ceil(self.train_batches.batch_size);
        let mut written = 0;
        for batch in self.batches(&self.train_batches, 0, batches) {
            let (data, seg) = self.tensors(batch, true);
            for i in 0..data.size()[0] {
                if written == count {
                    break;
                }
                let path = dir.join(format!("augmented_{written:03}.png"));
                write_mid_slice_png(&path, &data.get(i), &seg.get(i)).map_err(|e| Error::runtime(&path, e))?;
                written += 1;
            }
        }
        Ok(())
    }

    /// The next epoch to run: 0 for a new run, later when resumed.
    pub fn epoch(&self) -> usize {
        self.state.epoch
    }

    /// Starts from another model's weights (all but the segmentation heads).
    pub fn load_pretrained(&mut self, weights: &Path) -> nntools_io::Result<()> {
        self.model.load_pretrained(weights)
    }

    /// Batches `first..first + count` of `plan`, staged for the device by the loader threads.
    fn batches(&self, plan: &Arc<BatchPlan>, first: usize, count: usize) -> Prefetcher<HostBatch> {
        let device = self.settings.device;
        Prefetcher::start_staged(plan.clone(), first as u64, count, LOADER_THREADS, move |batch| {
            HostBatch::stage(batch, device)
        })
    }

    /// A batch on the device, augmented when training: the image tensor and the labels (-1 outside
    /// the image mapped to 0).
    fn tensors(&self, batch: HostBatch, training: bool) -> (Tensor, Tensor) {
        let HostBatch { data, seg, mut rng } = batch;
        let device = self.settings.device;
        let to_device = |t: Tensor| t.to_device_(device, t.kind(), true, false);
        let (data, seg) = (to_device(data), to_device(seg));
        if training { self.augmenter.training(&data, &seg, &mut rng) } else { self.augmenter.validation(&data, &seg) }
    }

    /// The deep-supervision targets of a batch's labels, full resolution first.
    fn targets(&self, seg: &Tensor) -> Vec<Tensor> {
        let target = self.labels.target(seg);
        let spatial = target.dim() - 2;
        self.ds_strides
            .iter()
            .map(|stride| {
                // nearest-exact downsampling by an integer factor picks the centre voxel of each block
                (0..spatial).fold(target.shallow_clone(), |t, a| {
                    let f = stride[a] as i64;
                    t.slice((a + 2) as i64, f / 2, None, f)
                })
            })
            .collect()
    }

    /// The deep-supervision outputs of `input`, bf16 ones widened to fp32 for the loss.
    fn forward(&self, input: &Tensor) -> Vec<Tensor> {
        self.model.net.forward_deep_supervision(input).iter().map(nntools_network::widen_bf16).collect()
    }

    /// Mean training loss of the epoch, or `None` when stopped by `Settings::stop`. Nothing in an
    /// iteration waits for the device: losses are summed there and read once per epoch.
    fn train_epoch(&mut self, epoch: usize, lr: f64) -> Option<f64> {
        let iterations = self.settings.iterations;
        let mut total = Tensor::zeros([], (Kind::Double, self.settings.device));
        for batch in self.batches(&self.train_batches, epoch * iterations, iterations) {
            if self.settings.stop.load(Ordering::Relaxed) {
                return None;
            }
            let (input, seg) = self.tensors(batch, true);
            let targets = self.targets(&seg);
            self.optimizer.zero_grad();
            let loss = nntools_network::autocast(self.mixed, || {
                let outputs = self.forward(&input);
                self.loss.deep_supervision(&outputs, &targets, &self.ds_weights)
            });
            match &mut self.loss_scaler {
                None => {
                    loss.backward();
                    let _ = self.optimizer.clip_grad_norm(GRADIENT_CLIP_NORM);
                    self.optimizer.step(lr);
                }
                Some(scaler) => {
                    (&loss * &scaler.scale).backward();
                    let found_inf = scaler.unscale(&mut self.optimizer);
                    let _ = self.optimizer.clip_grad_norm(GRADIENT_CLIP_NORM);
                    // an overflowing step is skipped, as torch's GradScaler does
                    self.optimizer.step_unless(lr, &found_inf);
                    scaler.update(&found_inf);
                }
            }
            total += loss.detach().to_kind(Kind::Double);
        }
        Some(total.double_value(&[]) / iterations as f64)
    }

    /// Validation loss and per-class pseudo Dice from TP/FP/FN summed over all validation batches (on
    /// the device, read once).
    fn validate(&mut self, epoch: usize) -> (f64, Vec<f64>) {
        let foreground = self.labels.foreground_outputs() as i64;
        let options = (Kind::Double, self.settings.device);
        let (mut tp, mut fp, mut fn_) = (
            Tensor::zeros([foreground], options),
            Tensor::zeros([foreground], options),
            Tensor::zeros([foreground], options),
        );
        let mut total = Tensor::zeros([], options);
        let iterations = self.settings.validation_iterations;
        for batch in self.batches(&self.val_batches, epoch * iterations, iterations) {
            let (input, seg) = self.tensors(batch, false);
            let targets = self.targets(&seg);
            nntools_network::autocast(self.mixed, || {
                tch::no_grad(|| {
                    let outputs = self.forward(&input);
                    total += self.loss.deep_supervision(&outputs, &targets, &self.ds_weights).to_kind(Kind::Double);
                    let (masks, counted) = self.labels.masks(&outputs[0], &targets[0]);
                    let counts = |pairs: &dyn Fn(&Tensor, &Tensor) -> Tensor| {
                        let per_output: Vec<Tensor> = masks
                            .iter()
                            .map(|(predicted, target)| {
                                let hits = pairs(predicted, target);
                                counted.as_ref().map_or(hits.shallow_clone(), |m| hits.logical_and(m)).sum(Kind::Double)
                            })
                            .collect();
                        Tensor::stack(&per_output, 0)
                    };
                    tp += counts(&|p, t| p.logical_and(t));
                    fp += counts(&|p, t| p.logical_and(&t.logical_not()));
                    fn_ += counts(&|p, t| p.logical_not().logical_and(t));
                })
            });
        }
        let host = |t: &Tensor| Vec::<f64>::try_from(t.to_device(Device::Cpu)).expect("double tensor");
        let (tp, fp, fn_) = (host(&tp), host(&fp), host(&fn_));
        let dice = (0..foreground as usize)
            .map(|c| {
                let denominator = 2.0 * tp[c] + fp[c] + fn_[c];
                if denominator == 0.0 { f64::NAN } else { 2.0 * tp[c] / denominator }
            })
            .collect();
        (total.double_value(&[]) / iterations.max(1) as f64, dice)
    }

    /// Runs the remaining epochs, calling `report` after each.
    pub fn run(&mut self, report: &mut dyn FnMut(&EpochLog)) -> Result<(), Stopped> {
        std::fs::create_dir_all(&self.settings.fold_dir).map_err(|e| Error::runtime(&self.settings.fold_dir, e))?;
        while self.state.epoch < self.settings.epochs {
            let epoch = self.state.epoch;
            let start = std::time::Instant::now();
            let start_timestamp = unix_time();
            let lr = poly_learning_rate(epoch, self.settings.epochs);
            let Some(train_loss) = self.train_epoch(epoch, lr) else {
                // the interrupted epoch is redone on resume, from the weights it reached
                self.save_checkpoint(Checkpoint::Latest)?;
                return Err(Stopped::Interrupted { epoch });
            };
            let (val_loss, pseudo_dice) = self.validate(epoch);
            let mut log = EpochLog {
                epoch,
                train_loss,
                val_loss,
                pseudo_dice,
                ema_pseudo_dice: f64::NAN,
                lr,
                epoch_time_s: start.elapsed().as_secs_f64(),
                epoch_start_timestamp: start_timestamp,
                epoch_end_timestamp: unix_time(),
            };
            let mean = log.mean_pseudo_dice();
            let ema = match self.state.ema_pseudo_dice {
                Some(previous) if !mean.is_nan() => EMA_DECAY * previous + (1.0 - EMA_DECAY) * mean,
                Some(previous) => previous,
                None => mean,
            };
            log.ema_pseudo_dice = ema;
            self.state.ema_pseudo_dice = Some(ema);
            self.state.epoch = epoch + 1;
            self.append_log(&log)?;
            self.history.push(log.clone());
            crate::plot_progress(&self.settings.fold_dir.progress_plot(), &self.history)?;
            if self.state.best_ema.is_none_or(|best| ema > best) {
                self.state.best_ema = Some(ema);
                self.save_checkpoint(Checkpoint::Best)?;
            }
            let last = self.state.epoch == self.settings.epochs;
            if self.state.epoch.is_multiple_of(CHECKPOINT_EVERY) && !last {
                self.save_checkpoint(Checkpoint::Latest)?;
            }
            report(&log);
        }
        self.save_checkpoint(Checkpoint::Final)?;
        // the sidecar first: it is what makes the other two files a checkpoint to resume from
        let fold_dir = &self.settings.fold_dir;
        for path in [
            fold_dir.sidecar(Checkpoint::Latest),
            fold_dir.weights(Checkpoint::Latest),
            fold_dir.momentum(Checkpoint::Latest),
        ] {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    fn append_log(&self, log: &EpochLog) -> nntools_io::Result<()> {
        let path = self.settings.fold_dir.log();
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::runtime(&path, e))?;
        let line = serde_json::to_string(log).map_err(|e| Error::runtime(&path, e))?;
        writeln!(file, "{line}").and_then(|()| file.sync_data()).map_err(|e| Error::runtime(&path, e))
    }

    /// Writes `checkpoint_NAME.safetensors` (weights, nnU-Net names), `checkpoint_NAME.momentum.safetensors`,
    /// for best and final also nnU-Net's `checkpoint_NAME.pth`, and `checkpoint_NAME.json` (state), each
    /// atomically; the JSON last, as the completion mark.
    pub fn save_checkpoint(&mut self, name: Checkpoint) -> nntools_io::Result<()> {
        let dir = &self.settings.fold_dir;
        let weights = dir.weights(name);
        let momentum = dir.momentum(name);
        let tensors_to = |path: &Path, write: &dyn Fn(&Path) -> Result<(), tch::TchError>| {
            nntools_io::write_atomically(path, |tmp| write(tmp).map_err(|e| Error::runtime(path, e)))
        };
        tensors_to(&weights, &|p| self.model.save_safetensors(p))?;
        let buffers: Vec<(String, Tensor)> = self.names.iter().cloned().zip(self.optimizer.buffers()).collect();
        tensors_to(&momentum, &|p| Tensor::write_safetensors(&buffers, p))?;
        self.state.loss_scaler = self.loss_scaler.as_ref().map(LossScaler::state);
        // nnU-Net loads best and final (predict_from_raw_data.py, `nnUNetv2_train --c`); latest is only
        // nn-train's point to resume from
        if matches!(name, Checkpoint::Best | Checkpoint::Final) {
            self.nnunet_checkpoint().write(&dir.pth(name))?;
        }
        nntools_io::write_json(&dir.sidecar(name), &self.state)
    }

    /// The checkpoint as nnU-Net's trainer saves it (nnUNetTrainer.py: `save_checkpoint`): the weights and
    /// their momentum buffers in nnU-Net's parameter order (the optimizer's own is alphabetical), the
    /// learning rate the last epoch ran at, the log, and what the trainer was made with.
    fn nnunet_checkpoint(&self) -> TrainingCheckpoint {
        let mut order = self.names.clone();
        nnunet_parameter_order(&mut order);
        let position: std::collections::HashMap<&str, usize> =
            self.names.iter().enumerate().map(|(i, name)| (name.as_str(), i)).collect();
        let variables = self.model.vs.variables();
        let weights = order.iter().map(|name| (name.clone(), Arc::new(host_tensor(&variables[name])))).collect();
        let epochs_done = self.state.epoch;
        // torch's SGD has no momentum buffers before its first step
        let momentum = (epochs_done > 0).then(|| {
            let buffers = self.optimizer.buffers();
            order.iter().map(|name| Arc::new(host_tensor(&buffers[position[name.as_str()]]))).collect()
        });
        TrainingCheckpoint {
            weights,
            momentum,
            learning_rate: poly_learning_rate(epochs_done.saturating_sub(1), self.settings.epochs),
            initial_learning_rate: INITIAL_LEARNING_RATE,
            grad_scaler: self.loss_scaler.as_ref().map(LossScaler::state),
            log: training_log(&self.history),
            best_ema: self.state.best_ema,
            current_epoch: epochs_done,
            plans: self.init_args.plans.clone(),
            configuration: self.state.configuration.clone(),
            fold: match self.init_args.fold {
                Fold::Index(fold) => nntools_checkpoint::Value::Int(fold as i64),
                Fold::All => nntools_checkpoint::Value::Str("all".to_owned()),
            },
            dataset_json: self.init_args.dataset_json.clone(),
            device: torch_device_name(self.settings.device),
            trainer_name: nnunet_trainer_name(self.settings.augment).to_owned(),
            inference_allowed_mirroring_axes: self.state.inference_allowed_mirroring_axes.clone(),
        }
    }

    /// Continues from the newest complete checkpoint (latest, final or best), if there is one. A
    /// checkpoint's files are written atomically, its sidecar last: one that is there but unreadable is
    /// corrupt, and named.
    pub fn resume(&mut self) -> nntools_io::Result<()> {
        let dir = self.settings.fold_dir.clone();
        let mut newest: Option<(Checkpoint, TrainingState)> = None;
        for name in [Checkpoint::Latest, Checkpoint::Final, Checkpoint::Best] {
            let sidecar = dir.sidecar(name);
            if !sidecar.is_file() {
                continue;
            }
            let state: TrainingState = nntools_io::read_json(&sidecar)?;
            // on a tie the later name wins: final over latest, best over both
            if newest.as_ref().is_none_or(|(_, chosen)| state.epoch >= chosen.epoch) {
                newest = Some((name, state));
            }
        }
        let Some((name, state)) = newest else { return Ok(()) };
        let weights = dir.weights(name);
        self.model.load_weights(&weights)?;
        let momentum = dir.momentum(name);
        let buffers: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(&momentum).map_err(|e| Error::bad_input(&momentum, e))?.into_iter().collect();
        let ordered = self
            .names
            .iter()
            .map(|n| {
                buffers
                    .get(n)
                    .map(Tensor::shallow_clone)
                    .ok_or_else(|| Error::bad_input(&momentum, format!("momentum buffer {n} missing")))
            })
            .collect::<nntools_io::Result<Vec<_>>>()?;
        self.optimizer.set_buffers(&ordered).map_err(|problem| Error::bad_input(&momentum, problem))?;
        // the log keeps only the epochs the checkpoint covers
        let log_path = dir.log();
        if let Ok(text) = std::fs::read_to_string(&log_path) {
            let kept: Vec<&str> = text.lines().take(state.epoch).collect();
            nntools_io::write_stream(&log_path, |out| kept.iter().try_for_each(|line| writeln!(out, "{line}")))?;
            self.history = kept.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        }
        if let (Some(scaler), Some((scale, clean_steps))) = (&mut self.loss_scaler, state.loss_scaler) {
            scaler.restore(scale, clean_steps);
        }
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(t.to_kind(Kind::Int64).flatten(0, -1)).unwrap()
    }

    #[test]
    fn region_targets_and_validation_masks_as_nnunet() {
        let labels = TrainingLabels {
            values: vec![0, 1, 2, 3],
            foreground: vec![1, 2],
            regions: vec![vec![1, 2], vec![2]],
            ignore_label: Some(3),
        };
        assert_eq!((labels.outputs(), labels.foreground_outputs()), (2, 2));
        let seg = Tensor::from_slice(&[0i64, 1, 2, 3]).view([1, 1, 2, 2]);
        let target = labels.target(&seg);
        assert_eq!(
            values(&target),
            [0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1],
            "regions {{1, 2}}, {{2}}, then the ignored voxels"
        );
        let logits = Tensor::from_slice(&[1.0f32, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0]).view([1, 2, 2, 2]);
        let (pairs, counted) = labels.masks(&logits, &target);
        assert_eq!(values(&pairs[0].0), [1, 0, 1, 1], "region 0 predicted where its logit is positive");
        assert_eq!(values(&pairs[1].1), [0, 0, 1, 0]);
        assert_eq!(values(&counted.unwrap()), [1, 1, 1, 0], "the ignored voxel does not count");

        let plain = TrainingLabels { regions: Vec::new(), ..labels };
        assert_eq!((plain.outputs(), plain.foreground_outputs()), (3, 2));
        assert_eq!(values(&plain.target(&seg)), [0, 1, 2, 3], "labels stay labels");
        let logits =
            Tensor::from_slice(&[5.0f32, 0.0, 0.0, 5.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0]).view([1, 3, 2, 2]);
        let (pairs, counted) = plain.masks(&logits, &seg);
        assert_eq!(values(&pairs[0].0), [0, 1, 0, 0]);
        assert_eq!(values(&pairs[1].0), [0, 0, 1, 0]);
        assert_eq!(values(&pairs[1].1), [0, 0, 1, 0]);
        assert_eq!(values(&counted.unwrap()), [1, 1, 1, 0]);
    }
}
