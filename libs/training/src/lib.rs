//! nnU-Net's training (nnunet-spec section 6): the Dice + cross-entropy loss with deep supervision (for
//! labels or regions, with an ignore label), SGD with Nesterov momentum, weight decay, gradient
//! clipping and the poly learning-rate schedule, nnU-Net's cross-validation splits, the training loop
//! with its checkpoints, and the final validation that feeds model selection and the cascade.

pub mod data;
mod loss;
mod optimizer;
mod progress;
mod run;
mod splits;
mod trainer;
mod validation;

pub use loss::{deep_supervision_weights, DiceBceLoss, DiceCeLoss, Objective};
pub use optimizer::{poly_learning_rate, LossScaler, Sgd, GRADIENT_CLIP_NORM, INITIAL_LEARNING_RATE};
pub use splits::{crossval_splits, Split, SPLIT_SEED};
pub use nntools_augmentation::Mode as Augmentation;
pub use trainer::{EpochLog, Settings, Trainer, TrainingLabels};
pub use run::{train, Cascade, Fold, Report, Request};
pub use progress::plot_progress;
use validation::validate_fold;
