//! nnU-Net's training objective and optimiser (nnunet-spec section 6): the Dice + cross-entropy loss
//! with deep supervision, and SGD with Nesterov momentum, weight decay, gradient clipping and the
//! poly learning-rate schedule.

mod loss;
mod optimizer;

pub use loss::{deep_supervision_weights, DiceCeLoss};
pub use optimizer::{poly_learning_rate, sgd, GRADIENT_CLIP_NORM, INITIAL_LEARNING_RATE};
