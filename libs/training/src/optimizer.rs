//! nnU-Net's optimiser: SGD (momentum 0.99, Nesterov, weight decay 3e-5 on every parameter), global
//! gradient-norm clipping at 12, and the poly learning rate `0.01 * (1 - epoch / epochs)^0.9` set at the
//! start of each epoch.

use tch::{Device, Kind, Tensor};

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
    /// `clip_grad_norm_`); returns the norm before clipping, as a tensor on the device, so that the
    /// step does not wait for the device.
    pub fn clip_grad_norm(&mut self, max: f64) -> Tensor {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self.gradients().map(|g| g.norm()).collect();
            if norms.is_empty() {
                return Tensor::from(0.0f32);
            }
            let total = Tensor::stack(&norms, 0).norm();
            let coefficient = ((&total + 1e-6).reciprocal() * max).clamp_max(1.0);
            for mut grad in self.gradients() {
                let _ = grad.g_mul_(&coefficient);
            }
            total
        })
    }

    fn gradients(&self) -> impl Iterator<Item = Tensor> + '_ {
        self.parameters.iter().map(Tensor::grad).filter(Tensor::defined)
    }

    /// One step at learning rate `lr`: `d = g + wd * w; buf = momentum * buf + d` (buf = d at first);
    /// `w -= lr * (d + momentum * buf)`.
    pub fn step(&mut self, lr: f64) {
        self.step_where(lr, None);
    }

    /// `step`, except where `found_inf` (a one-element tensor, as the loss scaler fills it) is non-zero:
    /// then weights and momentum stay as they are, as torch's `GradScaler` skips the step, decided on
    /// the device.
    pub fn step_unless(&mut self, lr: f64, found_inf: &Tensor) {
        self.step_where(lr, Some(&found_inf.gt(0.0)));
    }

    fn step_where(&mut self, lr: f64, skip: Option<&Tensor>) {
        tch::no_grad(|| {
            for (p, buffer) in self.parameters.iter_mut().zip(&mut self.momentum_buffers) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let d = &grad + &*p * WEIGHT_DECAY;
                let moved = if buffer.defined() { &*buffer * MOMENTUM + &d } else { d.detach().copy() };
                let update = (&d + &moved * MOMENTUM) * lr;
                match skip {
                    None => {
                        *buffer = moved;
                        let _ = p.g_sub_(&update);
                    }
                    Some(skip) => {
                        // an undefined buffer is zero: momentum * 0 + d = d, as torch's first step
                        let kept = if buffer.defined() { buffer.shallow_clone() } else { moved.zeros_like() };
                        *buffer = kept.where_self(skip, &moved);
                        let chosen = p.where_self(skip, &(&*p - &update));
                        p.copy_(&chosen);
                    }
                }
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
/// scale, and 2000 clean steps in a row double it. Scale, overflow flag and step counter live on the
/// device (torch's own kernels update them), so a training step never waits for the device.
pub struct LossScaler {
    pub scale: Tensor,
    growth_tracker: Tensor,
}

impl LossScaler {
    const INITIAL_SCALE: f64 = 65536.0;
    const GROWTH_INTERVAL: i64 = 2000;

    pub fn new(device: Device) -> Self {
        Self {
            scale: Tensor::full([1], Self::INITIAL_SCALE, (Kind::Float, device)),
            growth_tracker: Tensor::zeros([1], (Kind::Int, device)),
        }
    }

    /// Unscales the optimiser's gradients in place; returns the overflow flag (non-zero when any
    /// gradient is infinite or NaN).
    pub fn unscale(&self, optimizer: &Sgd) -> Tensor {
        let mut found_inf = self.scale.zeros_like();
        let inverse = self.scale.reciprocal();
        for mut grad in optimizer.gradients() {
            grad.internal_amp_non_finite_check_and_unscale(&mut found_inf, &inverse);
        }
        found_inf
    }

    /// Adapts the scale to the step's overflow flag.
    pub fn update(&mut self, found_inf: &Tensor) {
        let _ = self.scale.internal_amp_update_scale_(&self.growth_tracker, found_inf, 2.0, 0.5, Self::GROWTH_INTERVAL);
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
        let mut scaler = LossScaler::new(Device::Cpu);
        let scale = |s: &LossScaler| s.scale.double_value(&[0]);
        let (overflow, clean) = (Tensor::from_slice(&[1.0f32]), Tensor::from_slice(&[0.0f32]));
        scaler.update(&overflow);
        assert_eq!(scale(&scaler), 32768.0);
        for _ in 0..1999 {
            scaler.update(&clean);
        }
        assert_eq!(scale(&scaler), 32768.0);
        scaler.update(&clean);
        assert_eq!(scale(&scaler), 65536.0);
    }

    /// A parameter with gradient `g` after one unscaled, clipped step.
    fn stepped(gradient: f32, scale_overflow: bool) -> (f64, f64, f64) {
        let weight = Tensor::from_slice(&[2.0f32]).set_requires_grad(true);
        (&weight * f64::from(gradient)).sum(Kind::Float).backward();
        let mut sgd = Sgd::new(vec![weight.shallow_clone()]);
        let scaler = LossScaler::new(Device::Cpu);
        if scale_overflow {
            let _ = weight.grad().g_mul_scalar_(f64::INFINITY);
        }
        let found_inf = scaler.unscale(&sgd);
        let norm = sgd.clip_grad_norm(GRADIENT_CLIP_NORM).double_value(&[]);
        sgd.step_unless(0.1, &found_inf);
        let buffer = if sgd.momentum_buffers[0].defined() { sgd.momentum_buffers[0].double_value(&[0]) } else { 0.0 };
        (weight.double_value(&[0]), norm, buffer)
    }

    #[test]
    fn unscaled_steps_apply_clean_gradients_and_skip_overflowing_ones() {
        // the gradient 65536 * 3 unscales to 3: d = 3 + 3e-5 * 2, w = 2 - 0.1 * (d + 0.99 d)
        let (weight, norm, buffer) = stepped(65536.0 * 3.0, false);
        let d = 3.0 + WEIGHT_DECAY * 2.0;
        assert!((norm - 3.0).abs() < 1e-6, "{norm}");
        assert!((weight - (2.0 - 0.1 * (d + MOMENTUM * d))).abs() < 1e-6, "{weight}");
        assert!((buffer - d).abs() < 1e-6);
        // 65536 * 20 unscales to 20, clipped to 12
        let (weight, norm, _) = stepped(65536.0 * 20.0, false);
        let d = 12.0 + WEIGHT_DECAY * 2.0;
        assert!((norm - 20.0).abs() < 1e-5, "{norm}");
        assert!((weight - (2.0 - 0.1 * (d + MOMENTUM * d))).abs() < 1e-5, "{weight}");
        // an infinite gradient leaves weight and momentum untouched
        let (weight, norm, buffer) = stepped(1.0, true);
        assert!(norm.is_infinite());
        assert_eq!((weight, buffer), (2.0, 0.0));
    }
}
