//! nnU-Net's optimiser: SGD (momentum 0.99, Nesterov, weight decay 3e-5 on every parameter), global
//! gradient-norm clipping at 12, and the poly learning rate `0.01 * (1 - epoch / epochs)^0.9` set at the
//! start of each epoch.

use tch::nn::{Optimizer, OptimizerConfig, Sgd, VarStore};
use tch::TchError;

pub const INITIAL_LEARNING_RATE: f64 = 1e-2;
pub const GRADIENT_CLIP_NORM: f64 = 12.0;
const MOMENTUM: f64 = 0.99;
const WEIGHT_DECAY: f64 = 3e-5;
const POLY_EXPONENT: f64 = 0.9;

/// nnU-Net's SGD over all variables of `vs`, at the initial learning rate.
pub fn sgd(vs: &VarStore) -> Result<Optimizer, TchError> {
    Sgd { momentum: MOMENTUM, dampening: 0.0, wd: WEIGHT_DECAY, nesterov: true }.build(vs, INITIAL_LEARNING_RATE)
}

/// The learning rate of `epoch` (0-based) out of `epochs`.
pub fn poly_learning_rate(epoch: usize, epochs: usize) -> f64 {
    INITIAL_LEARNING_RATE * (1.0 - epoch as f64 / epochs as f64).powf(POLY_EXPONENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poly_schedule_values_from_the_spec() {
        assert_eq!(poly_learning_rate(0, 1000), 1e-2);
        assert!((poly_learning_rate(500, 1000) - 5.359e-3).abs() < 1e-6);
        assert!((poly_learning_rate(999, 1000) - 2.0e-5).abs() < 1e-6);
    }
}
