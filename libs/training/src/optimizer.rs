//! nnU-Net's optimiser: SGD (momentum 0.99, Nesterov, weight decay 3e-5 on every parameter), global
//! gradient-norm clipping at 12, and the poly learning rate `0.01 * (1 - epoch / epochs)^0.9` set at the
//! start of each epoch.

use tch::{Kind, Tensor};

pub const INITIAL_LEARNING_RATE: f64 = 1e-2;
pub const GRADIENT_CLIP_NORM: f64 = 12.0;
const MOMENTUM: f64 = 0.99;
const WEIGHT_DECAY: f64 = 3e-5;
const POLY_EXPONENT: f64 = 0.9;

/// SGD with Nesterov momentum and weight decay, as `torch.optim.SGD` computes it, with its momentum
/// buffers in the open so that checkpoints can carry them and a resumed run continues exactly.
pub struct Sgd {
    parameters: Vec<Tensor>,
    /// One buffer per parameter; undefined until the first step, as in torch.
    pub momentum_buffers: Vec<Tensor>,
}

impl Sgd {
    pub fn new(parameters: Vec<Tensor>) -> Self {
        let momentum_buffers = parameters.iter().map(|_| Tensor::new()).collect();
        Self { parameters, momentum_buffers }
    }

    /// Clears every gradient (torch's `zero_grad(set_to_none=True)`).
    pub fn zero_grad(&mut self) {
        for p in &mut self.parameters {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.detach_();
                let _ = grad.zero_();
            }
        }
    }

    /// Scales the gradients so that their global L2 norm is at most `max` (torch's
    /// `clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max: f64) -> f64 {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self.parameters.iter().map(Tensor::grad).filter(Tensor::defined).map(|g| g.norm()).collect();
            if norms.is_empty() {
                return 0.0;
            }
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coefficient = max / (total + 1e-6);
            if coefficient < 1.0 {
                self.scale_gradients(coefficient);
            }
            total
        })
    }

    /// Multiplies every gradient by `factor`.
    pub fn scale_gradients(&mut self, factor: f64) {
        tch::no_grad(|| {
            for p in &self.parameters {
                let mut grad = p.grad();
                if grad.defined() {
                    let _ = grad.g_mul_scalar_(factor);
                }
            }
        });
    }

    /// One step at learning rate `lr`: `d = g + wd * w; buf = momentum * buf + d` (buf = d at first);
    /// `w -= lr * (d + momentum * buf)`.
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for (p, buffer) in self.parameters.iter_mut().zip(&mut self.momentum_buffers) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let d = &grad + &*p * WEIGHT_DECAY;
                if buffer.defined() {
                    let _ = buffer.g_mul_scalar_(MOMENTUM).g_add_(&d);
                } else {
                    *buffer = d.detach().copy();
                }
                let update = &d + &*buffer * MOMENTUM;
                let _ = p.g_sub_(&(update * lr));
            }
        });
    }

    /// The momentum buffers as named tensors (for checkpoints), zeros where no step was taken yet.
    pub fn buffers(&self) -> Vec<Tensor> {
        self.momentum_buffers
            .iter()
            .zip(&self.parameters)
            .map(|(b, p)| if b.defined() { b.shallow_clone() } else { p.zeros_like().to_kind(Kind::Float) })
            .collect()
    }
}

/// Dynamic loss scaling for fp16 training, as torch's `GradScaler` with its defaults: the loss is
/// multiplied by the scale before backward; a step whose gradients overflow is skipped and halves the
/// scale, and 2000 clean steps in a row double it.
pub struct LossScaler {
    pub scale: f64,
    clean_steps: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self { scale: 65536.0, clean_steps: 0 }
    }
}

impl LossScaler {
    const GROWTH_INTERVAL: usize = 2000;

    /// Records whether the step's gradients were finite and adapts the scale.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.clean_steps += 1;
            if self.clean_steps == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.clean_steps = 0;
            }
        } else {
            self.scale *= 0.5;
            self.clean_steps = 0;
        }
    }
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

    #[test]
    fn loss_scale_halves_on_overflow_and_doubles_after_2000_clean_steps() {
        let mut scaler = LossScaler::default();
        scaler.update(false);
        assert_eq!(scaler.scale, 32768.0);
        for _ in 0..1999 {
            scaler.update(true);
        }
        assert_eq!(scaler.scale, 32768.0);
        scaler.update(true);
        assert_eq!(scaler.scale, 65536.0);
    }
}
