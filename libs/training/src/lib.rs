//! nnU-Net's training (`nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: nnUNetTrainer`, its loss in
//! `nnunetv2/training/loss/compound_losses.py: DC_and_CE_loss` and `deep_supervision.py: DeepSupervisionWrapper`):
//! the Dice + cross-entropy loss with deep supervision (for labels or regions, with an ignore label), SGD with
//! Nesterov momentum, weight decay, gradient clipping and the poly learning-rate schedule, nnU-Net's cross-validation
//! splits, the training loop with its checkpoints, and the final validation that feeds model selection and the
//! cascade.

pub mod data;
mod loss;
mod optimizer;
mod progress;
mod run;
mod splits;
mod trainer;
mod validation;

pub use loss::{DiceBceLoss, DiceCeLoss, Objective, deep_supervision_weights};
pub use nntools_augmentation::Mode as Augmentation;
pub use optimizer::{GRADIENT_CLIP_NORM, INITIAL_LEARNING_RATE, LossScaler, Sgd, poly_learning_rate};
pub use progress::plot_progress;
pub use run::{Cascade, Report, Request, train};
pub use splits::{SPLIT_SEED, Split, crossval_splits};
pub use trainer::{EpochLog, InitArgs, Settings, Trainer, TrainingLabels};
use validation::{validate_fold, write_validation_summary};
