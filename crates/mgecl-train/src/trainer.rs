//! A network with its optimiser, stepping on either engine: mgecl's explicit CPU backward
//! (`cpu_net`, the default on the CPU) or candle's autograd (the reference,
//! and the path for CUDA and Metal). Both stages train through this type only, so they get
//! the same engine choice, the same checkpoints and the same step semantics.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::cpu_net::ClassTargets;
use crate::cpu_net::CpuNet;
use crate::error::{Error, Result};
use crate::layers::correct_predictions;
use crate::loss::{cross_entropy, distillation};
use crate::net::{EncoderSpec, NamedValues, TrainNet, ROTATIONS};
use crate::optim::{Sgd, SgdSettings};
use crate::Batch;
use mgecl::model::Engine;

enum Inner {
    Candle { net: TrainNet, sgd: Sgd },
    Cpu(Box<CpuNet>),
}

/// A trainable network and its SGD state.
pub struct Trainer {
    spec: EncoderSpec,
    inner: Inner,
    settings: SgdSettings,
}

/// What a cross-entropy step's loss is made of besides the class labels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeadLoss {
    /// Label smoothing of the class cross-entropy.
    pub label_smoothing: f64,
    /// Weight of the rotation head's cross-entropy, for batches with quarter turns.
    pub rotation_weight: f64,
    /// Distillation from the teacher logits the batch carries.
    pub distillation: Option<Distillation>,
}

/// Knowledge distillation's settings (RFS-distill and born-again networks: a second
/// generation fitted to the first's softened outputs plus the labels).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distillation {
    /// Softmax temperature of both teacher and student (RFS: 4).
    pub temperature: f64,
    /// The distillation's share `w` of the class loss `(1 - w) CE + w T^2 KL` (RFS: 0.5).
    pub weight: f64,
}

/// What one cross-entropy step measured (before its update).
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Mean loss over the batch.
    pub loss: f64,
    /// Images whose top logit is their label.
    pub correct: usize,
}

impl Trainer {
    /// Takes over `net` (weights, running statistics, head) and `sgd` (settings and momentum
    /// buffers). `engine` [`Engine::Auto`] trains with mgecl's CPU kernels when `net` is on the
    /// CPU and with candle elsewhere; [`Engine::Candle`] always with candle.
    ///
    /// # Errors
    /// [`Error::Internal`] if the network's tensors cannot be copied to the host.
    pub fn new(net: TrainNet, sgd: Sgd, engine: Engine) -> Result<Self> {
        let spec = net.spec().clone();
        let settings = sgd.settings();
        let inner = if engine == Engine::Auto && net.device().is_cpu() {
            let momentum = sgd.buffer_values()?;
            Inner::Cpu(Box::new(CpuNet::new(&spec, net.export()?, momentum)?))
        } else {
            Inner::Candle { net, sgd }
        };
        Ok(Trainer {
            spec,
            inner,
            settings,
        })
    }

    /// The network's shape.
    pub fn spec(&self) -> &EncoderSpec {
        &self.spec
    }

    /// `cpu-fast` or `candle`.
    pub fn engine_name(&self) -> &'static str {
        match self.inner {
            Inner::Cpu(_) => "cpu-fast",
            Inner::Candle { .. } => "candle",
        }
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.settings.lr
    }

    /// Sets the learning rate of the next steps (the schedule's job).
    pub fn set_lr(&mut self, lr: f64) {
        self.settings.lr = lr;
        if let Inner::Candle { sgd, .. } = &mut self.inner {
            sgd.lr = lr;
        }
    }

    /// One SGD step of cross-entropy of the head's logits on a batch of normalised
    /// `(c, h, w)` images with class labels, the loss made as `loss` says: label smoothing;
    /// with `loss.distillation` and the batch's `teacher_logits`, `(1 - w) CE + w T^2 KL`
    /// ([`crate::loss::distillation`]); and when the batch carries quarter turns
    /// (`batch.rotations`), the rotation head's cross-entropy times `loss.rotation_weight`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a batch that does not fit the network or its heads, or
    /// distillation without teacher logits; [`Error::Internal`] for a failed tensor operation
    /// or a batch with quarter turns for a network without a rotation head.
    pub fn step_cross_entropy(
        &mut self,
        batch: &Batch,
        (c, h, w): (usize, usize, usize),
        loss: &HeadLoss,
    ) -> Result<StepStats> {
        check_batch(&self.spec, batch, (c, h, w))?;
        let rotation =
            (!batch.rotations.is_empty()).then_some((&batch.rotations[..], loss.rotation_weight));
        let teacher = match loss.distillation {
            None => None,
            Some(_) if batch.teacher_logits.is_empty() => {
                return Err(Error::InvalidArgument(
                    "distillation step: the batch has no teacher logits".into(),
                ))
            }
            Some(d) => Some((&batch.teacher_logits[..], d.temperature, d.weight)),
        };
        match &mut self.inner {
            Inner::Cpu(net) => {
                let class = ClassTargets {
                    labels: &batch.labels,
                    smoothing: loss.label_smoothing,
                    teacher,
                };
                let s = net.step_cross_entropy(
                    &batch.input,
                    (batch.n, h, w),
                    class,
                    rotation,
                    self.settings,
                )?;
                Ok(StepStats {
                    loss: s.loss,
                    correct: s.correct,
                })
            }
            Inner::Candle { net, sgd } => {
                let x = Tensor::from_slice(&batch.input, (batch.n, c, h, w), net.device())?;
                let features = net.features(&x, true)?;
                let logits = net.logits(&features)?;
                let mut total = cross_entropy(&logits, &batch.labels, loss.label_smoothing)?;
                if let Some((teacher, temperature, share)) = teacher {
                    let teacher = Tensor::from_slice(teacher, logits.dims(), net.device())?;
                    let kd = distillation(&logits, &teacher, temperature)?;
                    total = ((total * (1.0 - share))? + (kd * share)?)?;
                }
                if let Some((turns, weight)) = rotation {
                    let rotation_logits = net.rotation_logits(&features)?;
                    total = (total + (cross_entropy(&rotation_logits, turns, 0.0)? * weight)?)?;
                }
                let grads = total.backward()?;
                sgd.step(net, &grads)?;
                Ok(StepStats {
                    loss: f64::from(total.to_scalar::<f32>()?),
                    correct: correct_predictions(&logits, &batch.labels)?,
                })
            }
        }
    }

    /// One SGD step of a loss of the batch's features: `loss` receives the features
    /// `(n, feature_dim)` and returns a scalar tensor built from them with candle operations.
    ///
    /// # Errors
    /// As [`Trainer::step_cross_entropy`], and any error of `loss`.
    pub fn step_on_features(
        &mut self,
        batch: &Batch,
        (c, h, w): (usize, usize, usize),
        loss: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        check_batch(&self.spec, batch, (c, h, w))?;
        match &mut self.inner {
            Inner::Cpu(net) => {
                let d = net.feature_dim();
                let features = net.forward(&batch.input, batch.n, h, w)?;
                let features = Var::from_tensor(&Tensor::from_slice(
                    features,
                    (batch.n, d),
                    &candle_core::Device::Cpu,
                )?)?;
                let grads = loss(features.as_tensor())?.backward()?;
                let d_features: Vec<f32> = match grads.get(features.as_tensor()) {
                    Some(g) => g.flatten_all()?.to_vec1()?,
                    None => vec![0.0; batch.n * d],
                };
                net.backward(&d_features)?;
                net.sgd_step(self.settings);
                Ok(())
            }
            Inner::Candle { net, sgd } => {
                let x = Tensor::from_slice(&batch.input, (batch.n, c, h, w), net.device())?;
                let grads = loss(&net.features(&x, true)?)?.backward()?;
                sgd.step(net, &grads)
            }
        }
    }

    /// The trainer's checkpoint: its network, with its momentum buffers when
    /// `with_momentum` (the resume point), and `metadata`.
    ///
    /// # Errors
    /// [`Error::Internal`] if a device copy or serialisation fails.
    pub fn checkpoint_bytes(
        &self,
        with_momentum: bool,
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<u8>> {
        let momentum = if with_momentum {
            self.momentum()?
        } else {
            Vec::new()
        };
        crate::checkpoint::serialize_checkpoint(&self.tensors()?, &momentum, metadata)
    }

    /// Every tensor of the network (PyTorch layout and names), for checkpoints.
    ///
    /// # Errors
    /// [`Error::Internal`] if a device copy fails.
    pub fn tensors(&self) -> Result<Vec<NamedValues>> {
        match &self.inner {
            Inner::Cpu(net) => Ok(net.export()),
            Inner::Candle { net, .. } => net.export(),
        }
    }

    /// The optimiser's momentum buffers by tensor name (none before the first step).
    ///
    /// # Errors
    /// [`Error::Internal`] if a device copy fails.
    pub fn momentum(&self) -> Result<Vec<NamedValues>> {
        match &self.inner {
            Inner::Cpu(net) => Ok(net.momentum()),
            Inner::Candle { sgd, .. } => sgd.buffer_values(),
        }
    }
}

fn check_batch(spec: &EncoderSpec, batch: &Batch, (c, h, w): (usize, usize, usize)) -> Result<()> {
    if c != spec.in_channels {
        return Err(Error::InvalidArgument(format!(
            "training batch has {c} channels, the network takes {}",
            spec.in_channels
        )));
    }
    if !batch.rotations.is_empty()
        && (batch.rotations.len() != batch.n || batch.rotations.iter().any(|&t| t >= ROTATIONS))
    {
        return Err(Error::InvalidArgument(format!(
            "training batch: {} quarter turns for {} images",
            batch.rotations.len(),
            batch.n
        )));
    }
    if batch.n == 0 || batch.input.len() != batch.n * c * h * w {
        return Err(Error::InvalidArgument(format!(
            "training batch: {} values for {} images of ({c}, {h}, {w})",
            batch.input.len(),
            batch.n
        )));
    }
    Ok(())
}

/// Runs a training-step fixture (the format of `crates/mgecl-train/tests/data/train/make_train_fixtures.py`:
/// start tensors under their RFS names, `head.weight`/`head.bias`, a batch `x` (N, C, H, W)
/// f32 with labels `y` (N,) i64, and the step settings in `__metadata__`) and returns what its
/// `_expected` file holds: every tensor after the steps (the head as `head.*`) and `loss`, one
/// value per step, computed before that step's update.
///
/// # Errors
/// [`mgecl::Error::InvalidModel`] or [`Error::InvalidArgument`] for a fixture that is not of that
/// format; any training error.
pub fn run_step_fixture(bytes: &[u8], engine: Engine) -> Result<Vec<NamedValues>> {
    use mgecl::error::ModelProblem;
    let bad = |m: String| Error::model(ModelProblem::BadMetadata, format!("fixture: {m}"));
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::model(ModelProblem::NotSafetensors, format!("fixture: {e}")))?;
    let meta = super::checkpoint_metadata(bytes)?;
    let number = |key: &str| -> Result<f64> {
        meta.get(key)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| bad(format!("metadata {key:?} missing or not a number")))
    };
    let arch: mgecl::model::Architecture = meta
        .get("arch")
        .ok_or_else(|| bad("metadata \"arch\" missing".into()))?
        .parse()?;
    if (number("bn_momentum")? - 0.1).abs() > 1e-12 {
        return Err(bad("only bn_momentum 0.1 is supported".into()));
    }
    let steps = number("steps")? as usize;
    let optional = |key: &str| -> Result<Option<f64>> {
        meta.get(key)
            .map(|v| v.parse::<f64>().map_err(|_| bad(format!("bad {key}"))))
            .transpose()
    };
    // Optional: a rotation head (`rotation.*` tensors, quarter turns `r` (N,) i64, its
    // weight) and distillation (`teacher_logits` (N, K) f32 and its settings).
    let loss = HeadLoss {
        label_smoothing: number("label_smoothing")?,
        rotation_weight: optional("rotation_weight")?.unwrap_or(0.0),
        distillation: match optional("distill_weight")? {
            Some(weight) => Some(Distillation {
                weight,
                temperature: number("distill_temperature")?,
            }),
            None => None,
        },
    };
    let f32s = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let t = st
            .tensor(name)
            .map_err(|_| bad(format!("tensor {name:?} missing")))?;
        if t.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!("tensor {name:?} is not f32")));
        }
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((t.shape().to_vec(), v))
    };
    // The network's tensors, head renamed to the checkpoint names.
    let mut tensors = Vec::new();
    for name in st.names() {
        if ["x", "y", "r", "teacher_logits"].contains(&name) {
            continue;
        }
        let (shape, v) = f32s(name)?;
        let ours = match name.strip_prefix("head.") {
            Some(rest) => format!("classifier.{rest}"),
            None => name.to_string(),
        };
        tensors.push((ours, shape, v));
    }
    let net_bytes = crate::checkpoint::serialize_checkpoint(&tensors, &[], &Default::default())?;
    let net = TrainNet::from_safetensors(&net_bytes, arch, true, &candle_core::Device::Cpu)?;
    let sgd = Sgd::new(number("lr")?, number("momentum")?, number("weight_decay")?);
    let mut trainer = Trainer::new(net, sgd, engine)?;
    let (x_shape, input) = f32s("x")?;
    if x_shape.len() != 4 {
        return Err(bad("x must be (N, C, H, W) f32".into()));
    }
    let indices = |name: &str| -> Result<Vec<usize>> {
        let t = st
            .tensor(name)
            .map_err(|_| bad(format!("tensor {name:?} missing")))?;
        if t.dtype() != safetensors::Dtype::I64 {
            return Err(bad(format!("{name} must be (N,) i64")));
        }
        t.data()
            .chunks_exact(8)
            .map(|b| {
                let v = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                usize::try_from(v).map_err(|_| bad(format!("{name}: value {v}")))
            })
            .collect()
    };
    let batch = Batch {
        input,
        n: x_shape[0],
        labels: indices("y")?,
        rotations: match st.tensor("r").is_ok() {
            true => indices("r")?,
            false => Vec::new(),
        },
        teacher_logits: match st.tensor("teacher_logits").is_ok() {
            true => f32s("teacher_logits")?.1,
            false => Vec::new(),
        },
    };
    let dims = (x_shape[1], x_shape[2], x_shape[3]);
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let stats = trainer.step_cross_entropy(&batch, dims, &loss)?;
        losses.push(stats.loss as f32);
    }
    let mut out: Vec<NamedValues> = trainer
        .tensors()?
        .into_iter()
        .map(|(name, shape, v)| match name.strip_prefix("classifier.") {
            Some(rest) => (format!("head.{rest}"), shape, v),
            None => (name, shape, v),
        })
        .collect();
    out.push(("loss".into(), vec![steps], losses));
    Ok(out)
}
