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
/// in the open so that checkpoints can carry it and a resumed run continues exactly.
///
/// The parameters are made views into one flat tensor, and each step's gradients are gathered into
/// one flat tensor too, so that clipping, unscaling and the update are a handful of kernels over all
/// parameters rather than a handful per parameter (torch's multi-tensor `foreach` path, which tch
/// does not offer): on a GPU the small U-Nets would otherwise spend the step launching kernels.
/// Every parameter of the U-Net receives a gradient in every step; one without counts as zero.
pub struct Sgd {
    parameters: Vec<Tensor>,
    /// Every parameter's values end to end; the parameters are views into it.
    flat: Tensor,
    /// Momentum laid out as `flat`. Zero before the first step, where torch sets the buffer to `d`:
    /// `momentum * 0 + d` is the same.
    momentum: Tensor,
    /// This step's gradients laid out as `flat`, gathered once after backward.
    gradient: Option<Tensor>,
}

impl Sgd {
    pub fn new(parameters: Vec<Tensor>) -> Self {
        tch::no_grad(|| {
            let flat = Tensor::cat(&parameters.iter().map(|p| p.detach().reshape([-1])).collect::<Vec<_>>(), 0);
            let sgd = Self { momentum: flat.zeros_like(), parameters, flat, gradient: None };
            for (mut parameter, view) in sgd.parameters.iter().map(Tensor::shallow_clone).zip(sgd.views(&sgd.flat)) {
                parameter.set_data(&view);
            }
            sgd
        })
    }

    /// Per-parameter views of a tensor laid out as `flat`.
    fn views(&self, flat: &Tensor) -> Vec<Tensor> {
        let mut offset = 0;
        self.parameters
            .iter()
            .map(|p| {
                let count = p.numel() as i64;
                offset += count;
                flat.narrow(0, offset - count, count).view(p.size().as_slice())
            })
            .collect()
    }

    /// Clears every gradient (torch's `zero_grad(set_to_none=True)`).
    pub fn zero_grad(&mut self) {
        self.gradient = None;
        for p in &mut self.parameters {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.detach_();
                let _ = grad.zero_();
            }
        }
    }

    /// This step's gradients, gathered on first use after backward.
    fn gradient(&mut self) -> &mut Tensor {
        let parameters = &self.parameters;
        self.gradient.get_or_insert_with(|| {
            let parts: Vec<Tensor> = parameters
                .iter()
                .map(|p| {
                    let grad = p.grad();
                    if grad.defined() { grad.reshape([-1]) } else { p.zeros_like().reshape([-1]) }
                })
                .collect();
            Tensor::cat(&parts, 0)
        })
    }

    /// Scales the gradients so that their global L2 norm is at most `max` (torch's
    /// `clip_grad_norm_`); returns the norm before clipping, as a tensor on the device, so that the
    /// step does not wait for the device.
    pub fn clip_grad_norm(&mut self, max: f64) -> Tensor {
        tch::no_grad(|| {
            let gradient = self.gradient();
            let total = gradient.norm();
            let coefficient = ((&total + 1e-6).reciprocal() * max).clamp_max(1.0);
            let _ = gradient.g_mul_(&coefficient);
            total
        })
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
            self.gradient();
            let gradient = self.gradient.take().expect("just gathered");
            let d = gradient + &self.flat * WEIGHT_DECAY;
            let moved = &self.momentum * MOMENTUM + &d;
            let update = (&d + &moved * MOMENTUM) * lr;
            match skip {
                None => {
                    self.momentum = moved;
                    let _ = self.flat.g_sub_(&update);
                }
                Some(skip) => {
                    self.momentum = self.momentum.where_self(skip, &moved);
                    let chosen = self.flat.where_self(skip, &(&self.flat - &update));
                    self.flat.copy_(&chosen);
                }
            }
        });
    }

    /// The momentum per parameter (for checkpoints, in the parameters' order).
    pub fn buffers(&self) -> Vec<Tensor> {
        self.views(&self.momentum)
    }

    /// Restores the momentum from per-parameter buffers (a checkpoint's, in the parameters' order).
    pub fn set_buffers(&mut self, buffers: &[Tensor]) -> Result<(), String> {
        if buffers.len() != self.parameters.len() {
            return Err(format!("{} momentum buffers for {} parameters", buffers.len(), self.parameters.len()));
        }
        if let Some((index, buffer)) = buffers.iter().enumerate().find(|(i, b)| b.size() != self.parameters[*i].size())
        {
            return Err(format!(
                "momentum buffer {index} has shape {:?}, its parameter {:?}",
                buffer.size(),
                self.parameters[index].size()
            ));
        }
        let parts: Vec<Tensor> =
            buffers.iter().map(|b| b.to_kind(Kind::Float).to_device(self.flat.device()).reshape([-1])).collect();
        self.momentum = Tensor::cat(&parts, 0);
        Ok(())
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
    pub fn unscale(&self, optimizer: &mut Sgd) -> Tensor {
        let mut found_inf = self.scale.zeros_like();
        optimizer.gradient().internal_amp_non_finite_check_and_unscale(&mut found_inf, &self.scale.reciprocal());
        found_inf
    }

    /// The scale and the number of clean steps since it last changed (for checkpoints).
    pub fn state(&self) -> (f64, i64) {
        (self.scale.double_value(&[0]), self.growth_tracker.int64_value(&[0]))
    }

    /// Continues from a checkpoint's `state`.
    pub fn restore(&mut self, scale: f64, clean_steps: i64) {
        let _ = self.scale.fill_(scale);
        let _ = self.growth_tracker.fill_(clean_steps);
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
        scaler.update(&clean);
        assert_eq!(scaler.state(), (65536.0, 1));
        let mut resumed = LossScaler::new(Device::Cpu);
        resumed.restore(1024.0, 1999);
        resumed.update(&clean);
        assert_eq!(resumed.state(), (2048.0, 0));
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
        let found_inf = scaler.unscale(&mut sgd);
        let norm = sgd.clip_grad_norm(GRADIENT_CLIP_NORM).double_value(&[]);
        sgd.step_unless(0.1, &found_inf);
        (weight.double_value(&[0]), norm, sgd.buffers()[0].double_value(&[0]))
    }

    #[test]
    fn parameters_are_updated_in_place_through_the_flat_tensor() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]).set_requires_grad(true);
        let b = Tensor::from_slice(&[5.0f32]).set_requires_grad(true);
        let mut sgd = Sgd::new(vec![a.shallow_clone(), b.shallow_clone()]);
        ((&a * 2.0).sum(Kind::Float) + (&b * 3.0).sum(Kind::Float)).backward();
        sgd.step(0.1);
        // d = g + wd * w; w -= lr * (d + 0.99 d)
        let expected = |w: f64, g: f64| w - 0.1 * (1.0 + MOMENTUM) * (g + WEIGHT_DECAY * w);
        assert!((a.double_value(&[1, 0]) - expected(3.0, 2.0)).abs() < 1e-6);
        assert!((b.double_value(&[0]) - expected(5.0, 3.0)).abs() < 1e-6);
        assert_eq!(a.size(), [2, 2]);
        // momentum per parameter, and restored from such buffers
        let buffers = sgd.buffers();
        assert_eq!(buffers[0].size(), [2, 2]);
        assert!((buffers[1].double_value(&[0]) - (3.0 + WEIGHT_DECAY * 5.0)).abs() < 1e-6);
        // (parameters of the same shapes: an optimiser makes its parameters views of its own flat tensor)
        let mut restored =
            Sgd::new(vec![a.zeros_like().set_requires_grad(true), b.zeros_like().set_requires_grad(true)]);
        restored.set_buffers(&buffers).unwrap();
        assert!(restored.set_buffers(&buffers[..1]).is_err());
        assert_eq!(restored.buffers()[1].double_value(&[0]), buffers[1].double_value(&[0]));
        // a gradient gathered for one step is not reused by the next
        sgd.zero_grad();
        let before = b.double_value(&[0]);
        sgd.step(0.1);
        assert!(b.double_value(&[0]) < before, "momentum alone still moves b");
        assert!(a.grad().abs().sum(Kind::Float).double_value(&[]) == 0.0);
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
