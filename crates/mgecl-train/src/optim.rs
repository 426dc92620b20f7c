//! SGD with momentum and weight decay, PyTorch semantics (candle-nn's SGD has neither):
//! `g = grad + wd * p; buf = momentum * buf + g` (`buf = g` on the first step);
//! `p -= lr * buf`. BatchNorm running statistics are buffers: never updated here.

use std::collections::BTreeMap;

use candle_core::{backprop::GradStore, Tensor};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::{ParamKind, TrainNet};

/// The settings of one SGD step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdSettings {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
}

/// The SGD step on host values (the CPU engine's): `value -= lr * buf` with
/// `buf = momentum * buf + grad + weight_decay * value`, the buffer created (as `grad + wd *
/// value`) on the first step; no buffer at all without momentum.
pub(crate) fn sgd_update(
    value: &mut [f32],
    grad: &[f32],
    momentum: &mut Option<Vec<f32>>,
    settings: SgdSettings,
) {
    let lr = settings.lr as f32;
    let (mom, wd) = (settings.momentum as f32, settings.weight_decay as f32);
    if settings.momentum == 0.0 {
        for (v, g) in value.iter_mut().zip(grad) {
            *v -= lr * (g + wd * *v);
        }
        return;
    }
    match momentum {
        Some(buf) => {
            for ((v, g), b) in value.iter_mut().zip(grad).zip(buf.iter_mut()) {
                *b = mom * *b + (g + wd * *v);
                *v -= lr * *b;
            }
        }
        None => {
            let mut buf = vec![0.0; value.len()];
            for ((v, g), b) in value.iter_mut().zip(grad).zip(buf.iter_mut()) {
                *b = g + wd * *v;
                *v -= lr * *b;
            }
            *momentum = Some(buf);
        }
    }
}

/// The optimiser and its state (momentum buffers by variable name).
pub struct Sgd {
    /// Learning rate (set by the schedule before each step).
    pub lr: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// A fresh optimiser.
    pub fn new(lr: f64, momentum: f64, weight_decay: f64) -> Self {
        Sgd {
            lr,
            momentum,
            weight_decay,
            buffers: BTreeMap::new(),
        }
    }

    /// One step over every trainable variable of `net` that has a gradient in `grads`.
    ///
    /// # Errors
    /// [`mgecl::Error::Backend`] if a tensor operation fails.
    pub fn step(&mut self, net: &TrainNet, grads: &GradStore) -> Result<()> {
        for (name, var, kind) in net.vars() {
            if kind != ParamKind::Weight {
                continue;
            }
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = var.as_tensor();
            let g = if self.weight_decay != 0.0 {
                (grad + (p * self.weight_decay)?)?
            } else {
                grad.clone()
            };
            let buf = match self.buffers.get(name) {
                Some(b) if self.momentum != 0.0 => ((b * self.momentum)? + g)?,
                _ => g,
            };
            var.set(&(p - (&buf * self.lr)?)?.detach())?;
            if self.momentum != 0.0 {
                self.buffers.insert(name.clone(), buf.detach());
            }
        }
        Ok(())
    }

    /// The settings of its next step.
    pub fn settings(&self) -> SgdSettings {
        SgdSettings {
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
        }
    }

    /// Momentum buffers, for checkpoints.
    pub fn buffers(&self) -> &BTreeMap<String, Tensor> {
        &self.buffers
    }

    /// Momentum buffers as host values (name, shape, values).
    ///
    /// # Errors
    /// [`mgecl::Error::Backend`] if a device copy fails.
    pub fn buffer_values(&self) -> Result<Vec<crate::net::NamedValues>> {
        self.buffers
            .iter()
            .map(|(name, t)| {
                Ok((
                    name.clone(),
                    t.dims().to_vec(),
                    t.flatten_all()?.to_vec1::<f32>()?,
                ))
            })
            .collect()
    }

    /// Restores momentum buffers from a checkpoint.
    pub fn set_buffers(&mut self, buffers: BTreeMap<String, Tensor>) {
        self.buffers = buffers;
    }
}

/// SGD settings and step schedule, shared by both training stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Initial learning rate.
    pub lr: f64,
    /// Steps (epochs or episodes) at which the learning rate is multiplied by `lr_decay`.
    pub lr_milestones: Vec<usize>,
    /// Learning-rate decay factor.
    pub lr_decay: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Cosine annealing over this many steps instead of the milestones (EASY's schedule):
    /// `lr (1 + cos(pi step / steps)) / 2`, from `lr` at step 0 towards 0 at `steps`.
    #[serde(default)]
    pub cosine_steps: Option<usize>,
}

impl OptimConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless lr > 0, 0 <= momentum < 1, weight_decay >= 0 and
    /// 0 < lr_decay <= 1.
    pub fn validate(&self) -> Result<()> {
        let ok = self.lr.is_finite()
            && self.lr > 0.0
            && (0.0..1.0).contains(&self.momentum)
            && self.weight_decay >= 0.0
            && self.lr_decay > 0.0
            && self.lr_decay <= 1.0
            && self
                .cosine_steps
                .is_none_or(|n| n > 0 && self.lr_milestones.is_empty());
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "optimiser settings out of range (lr > 0, momentum in [0, 1), weight_decay >= 0, lr_decay in (0, 1], cosine steps > 0 and no milestones with them): {self:?}"
            )))
        }
    }

    /// A fresh optimiser with these settings.
    pub fn sgd(&self) -> Sgd {
        Sgd::new(self.lr, self.momentum, self.weight_decay)
    }

    /// The learning rate at `step` (epoch or episode).
    pub fn lr_at(&self, step: usize) -> f64 {
        match self.cosine_steps {
            Some(steps) => cosine_lr(self.lr, steps, step),
            None => step_lr(self.lr, self.lr_decay, &self.lr_milestones, step),
        }
    }
}

/// Cosine learning-rate schedule (PyTorch's `CosineAnnealingLR` with `eta_min` 0, stepped
/// once per `step`): `base (1 + cos(pi step / steps)) / 2`.
pub fn cosine_lr(base: f64, steps: usize, step: usize) -> f64 {
    let t = step.min(steps) as f64 / steps.max(1) as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Step learning-rate schedule: `base * decay^(number of milestones <= epoch)`.
pub fn step_lr(base: f64, decay: f64, milestones: &[usize], epoch: usize) -> f64 {
    base * decay.powi(milestones.iter().filter(|&&m| epoch >= m).count() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::EncoderSpec;
    use candle_core::Device;

    #[test]
    fn schedule_steps_at_milestones() {
        assert_eq!(step_lr(0.1, 0.1, &[2, 4], 0), 0.1);
        assert!((step_lr(0.1, 0.1, &[2, 4], 2) - 0.01).abs() < 1e-15);
        assert!((step_lr(0.1, 0.1, &[2, 4], 5) - 0.001).abs() < 1e-15);
    }

    #[test]
    fn cosine_schedule_by_hand() {
        // cos(0) = 1, cos(pi / 2) = 0, cos(pi / 3) = 1/2, cos(pi) = -1.
        assert_eq!(cosine_lr(0.1, 6, 0), 0.1);
        assert!((cosine_lr(0.1, 6, 2) - 0.075).abs() < 1e-15);
        assert!((cosine_lr(0.1, 6, 3) - 0.05).abs() < 1e-15);
        assert!(cosine_lr(0.1, 6, 6).abs() < 1e-15);
        let config = OptimConfig {
            lr: 0.1,
            lr_milestones: vec![],
            lr_decay: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            cosine_steps: Some(6),
        };
        assert!((config.lr_at(3) - 0.05).abs() < 1e-15);
        assert!(config.validate().is_ok());
        let both = OptimConfig {
            lr_milestones: vec![2],
            ..config
        };
        assert!(both.validate().is_err());
    }

    #[test]
    fn matches_a_hand_computed_pytorch_step() {
        // One weight w = 2 with gradient 3 (loss = 3 w): wd 0.5, momentum 0.9, lr 0.1.
        // Step 1: g = 3 + 0.5*2 = 4, buf = 4, w = 2 - 0.4 = 1.6.
        // Step 2: g = 3 + 0.8 = 3.8, buf = 0.9*4 + 3.8 = 7.4, w = 1.6 - 0.74 = 0.86.
        let spec = EncoderSpec {
            arch: mgecl::Architecture::Conv4,
            widths: vec![1; 4],
            in_channels: 1,
        };
        let net = TrainNet::new(spec, 0, 0, &Device::Cpu).unwrap();
        let (name, var, _) = net
            .vars()
            .find(|(n, _, _)| n.as_str() == "layer1.0.bias")
            .unwrap();
        let name = name.clone();
        var.set(&Tensor::new(&[2f32], &Device::Cpu).unwrap())
            .unwrap();
        let mut sgd = Sgd::new(0.1, 0.9, 0.5);
        for expected in [1.6f32, 0.86] {
            let loss = (var.as_tensor() * 3.0).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            sgd.step(&net, &grads).unwrap();
            let w: Vec<f32> = var.as_tensor().to_vec1().unwrap();
            assert!((w[0] - expected).abs() < 1e-6, "{w:?} vs {expected}");
        }
        assert!(sgd.buffers().contains_key(&name));
        // Running statistics are buffers: untouched even with weight decay.
        let rv = net
            .vars()
            .find(|(n, _, _)| n.as_str() == "layer1.1.running_var")
            .unwrap()
            .1;
        assert_eq!(rv.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0]);
    }
}
