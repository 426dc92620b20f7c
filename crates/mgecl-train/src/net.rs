//! Trainable encoders (Conv-4, ResNet-12) with a linear head, held as named candle `Var`s in
//! the RFS key layout, so a checkpoint is a model file the SDK loads unchanged.
//!
//! BatchNorm runs in training mode (batch statistics, running statistics updated with
//! momentum 0.1 and the unbiased variance, as PyTorch) or evaluation mode.

use std::collections::BTreeMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::layers::{
    batch_norm_eval, batch_norm_train, conv, global_avg_pool, leaky_relu, linear, max_pool2x2,
};
use crate::rng::Rng;
use mgecl::internals::{BlockSpec, ConvBn, TensorRole, WeightFile};
use mgecl::model::{Activation, Architecture, DEFAULT_BN_EPS, DEFAULT_LEAKY_RELU_SLOPE};

const BN_MOMENTUM: f64 = 0.1;
/// Training's BatchNorm epsilon and LeakyReLU slope: the core's defaults, which its
/// checkpoints' metadata records.
const BN_EPS: f64 = DEFAULT_BN_EPS;
pub(crate) const LEAKY_SLOPE: f64 = DEFAULT_LEAKY_RELU_SLOPE;
/// The linear head's tensors (training only: model files hold the encoder).
pub const HEAD_WEIGHT: &str = "classifier.weight";
/// See [`HEAD_WEIGHT`].
pub const HEAD_BIAS: &str = "classifier.bias";
/// The rotation head's tensors: a second linear head that names which of the four quarter
/// turns an image was given (self-supervision beside the class head, as SKD and EASY).
pub const ROTATION_HEAD_WEIGHT: &str = "rotation.weight";
/// See [`ROTATION_HEAD_WEIGHT`].
pub const ROTATION_HEAD_BIAS: &str = "rotation.bias";
/// Quarter turns the rotation head tells apart: 0, 90, 180 and 270 degrees.
pub const ROTATIONS: usize = 4;

/// What a named tensor is, for the optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Trained, with weight decay.
    Weight,
    /// BatchNorm running statistic: saved, never trained or decayed.
    Buffer,
}

/// The encoder's shape: the core's one description of the architectures.
pub use mgecl::internals::EncoderSpec;

/// The layout's activation, LeakyReLU with training's slope.
fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::LeakyRelu => leaky_relu(x, LEAKY_SLOPE),
        Activation::Relu => Ok(x.relu()?),
    }
}

/// A named tensor as host values: (name, shape, values).
pub type NamedValues = (String, Vec<usize>, Vec<f32>);

/// A trainable encoder plus optional classification head.
pub struct TrainNet {
    spec: EncoderSpec,
    /// `spec`'s blocks, walked by the forward pass.
    blocks: Vec<BlockSpec>,
    vars: BTreeMap<String, (Var, ParamKind)>,
    /// Serialises running-statistic updates.
    bn_lock: Mutex<()>,
    device: Device,
}

fn kaiming_normal(rng: &mut Rng, shape: &[usize]) -> Vec<f32> {
    // fan_out mode, gain sqrt(2) (RFS: kaiming_normal_(mode='fan_out')).
    let fan_out = shape[0] * shape[2] * shape[3];
    let std = (2.0 / fan_out as f64).sqrt();
    (0..shape.iter().product::<usize>())
        .map(|_| (rng.normal() * std) as f32)
        .collect()
}

fn uniform(rng: &mut Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n).map(|_| rng.range(-bound, bound) as f32).collect()
}

impl TrainNet {
    /// A freshly initialised network (RFS initialisation) with a head of `num_classes`
    /// outputs (0 = no head).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown architecture or bad widths.
    pub fn new(spec: EncoderSpec, num_classes: usize, seed: u64, device: &Device) -> Result<Self> {
        spec.check()?;
        let mut rng = Rng::new(seed, 0x1417);
        let mut values: Vec<(String, Vec<usize>, Vec<f32>, ParamKind)> = Vec::new();
        let blocks = spec.blocks();
        for unit in blocks
            .iter()
            .flat_map(|b| b.units.iter().chain(&b.shortcut))
        {
            // PyTorch's Conv2d bias initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            let fan_in = unit.c_in * unit.kernel * unit.kernel;
            for t in unit.tensors() {
                let n: usize = t.shape.iter().product();
                let v = match t.role {
                    TensorRole::ConvWeight => kaiming_normal(&mut rng, &t.shape),
                    TensorRole::ConvBias => uniform(&mut rng, n, 1.0 / (fan_in as f64).sqrt()),
                    TensorRole::BnWeight | TensorRole::BnRunningVar => vec![1.0; n],
                    TensorRole::BnBias | TensorRole::BnRunningMean => vec![0.0; n],
                    other => {
                        return Err(Error::Internal(format!("no initialisation for {other:?}")))
                    }
                };
                let kind = match t.role.is_trained() {
                    true => ParamKind::Weight,
                    false => ParamKind::Buffer,
                };
                values.push((t.name, t.shape, v, kind));
            }
        }
        if num_classes > 0 {
            let d = spec.feature_dim();
            let bound = 1.0 / (d as f64).sqrt();
            values.push((
                HEAD_WEIGHT.into(),
                vec![num_classes, d],
                uniform(&mut rng, num_classes * d, bound),
                ParamKind::Weight,
            ));
            values.push((
                HEAD_BIAS.into(),
                vec![num_classes],
                uniform(&mut rng, num_classes, bound),
                ParamKind::Weight,
            ));
        }
        let mut vars = BTreeMap::new();
        for (name, shape, v, kind) in values {
            let t = Tensor::from_vec(v, shape, device)?;
            vars.insert(name, (Var::from_tensor(&t)?, kind));
        }
        Ok(TrainNet {
            spec,
            blocks,
            vars,
            bn_lock: Mutex::new(()),
            device: device.clone(),
        })
    }

    /// Loads encoder weights (and the head, if present and `keep_head`) from a safetensors
    /// model file in the RFS layout, e.g. a pretraining checkpoint, through the core's checked
    /// reader. Widths and channels come from the weight shapes.
    ///
    /// # Errors
    /// [`mgecl::Error::InvalidModel`] for a file that is not safetensors or lacks, misshapes
    /// or holds non-finite values in a tensor this network needs.
    pub fn from_safetensors(
        bytes: &[u8],
        arch: Architecture,
        keep_head: bool,
        device: &Device,
    ) -> Result<Self> {
        let file = WeightFile::parse(bytes)?;
        let spec = file.encoder_spec(arch)?;
        let num_classes = match keep_head {
            true => file.shape(HEAD_WEIGHT).map_or(0, |s| s[0]),
            false => 0,
        };
        let mut net = TrainNet::new(spec, num_classes, 0, device)?;
        if keep_head && file.shape(ROTATION_HEAD_WEIGHT).is_ok() {
            net.add_rotation_head(0)?;
        }
        for (name, (var, _)) in &net.vars {
            let values = file.read(name, var.dims())?;
            var.set(&Tensor::from_vec(values, var.dims(), device)?)?;
        }
        Ok(net)
    }

    /// The architecture's shape.
    pub fn spec(&self) -> &EncoderSpec {
        &self.spec
    }

    /// Feature dimension.
    pub fn feature_dim(&self) -> usize {
        self.spec.feature_dim()
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Named variables with their kind (sorted by name).
    pub fn vars(&self) -> impl Iterator<Item = (&String, &Var, ParamKind)> {
        self.vars.iter().map(|(n, (v, k))| (n, v, *k))
    }

    /// Replaces (or adds) the linear head with a fresh one of `num_classes` outputs.
    ///
    /// # Errors
    /// [`Error::Internal`] on allocation failure.
    pub fn reset_head(&mut self, num_classes: usize, seed: u64) -> Result<()> {
        self.vars.remove(HEAD_WEIGHT);
        self.vars.remove(HEAD_BIAS);
        if num_classes > 0 {
            let d = self.feature_dim();
            let mut rng = Rng::new(seed, 0x4ead);
            let bound = 1.0 / (d as f64).sqrt();
            let w = Tensor::from_vec(
                uniform(&mut rng, num_classes * d, bound),
                (num_classes, d),
                &self.device,
            )?;
            let b = Tensor::from_vec(
                uniform(&mut rng, num_classes, bound),
                num_classes,
                &self.device,
            )?;
            self.vars.insert(
                HEAD_WEIGHT.into(),
                (Var::from_tensor(&w)?, ParamKind::Weight),
            );
            self.vars
                .insert(HEAD_BIAS.into(), (Var::from_tensor(&b)?, ParamKind::Weight));
        }
        Ok(())
    }

    /// Adds a fresh rotation head ([`ROTATION_HEAD_WEIGHT`], PyTorch's `nn.Linear`
    /// initialisation), replacing any.
    ///
    /// # Errors
    /// [`Error::Internal`] on allocation failure.
    pub fn add_rotation_head(&mut self, seed: u64) -> Result<()> {
        let d = self.feature_dim();
        let mut rng = Rng::new(seed, 0x4074);
        let bound = 1.0 / (d as f64).sqrt();
        let w = uniform(&mut rng, ROTATIONS * d, bound);
        let b = uniform(&mut rng, ROTATIONS, bound);
        for (name, shape, v) in [
            (ROTATION_HEAD_WEIGHT, vec![ROTATIONS, d], w),
            (ROTATION_HEAD_BIAS, vec![ROTATIONS], b),
        ] {
            let t = Tensor::from_vec(v, shape, &self.device)?;
            self.vars
                .insert(name.into(), (Var::from_tensor(&t)?, ParamKind::Weight));
        }
        Ok(())
    }

    /// Whether the network has a rotation head.
    pub fn has_rotation_head(&self) -> bool {
        self.vars.contains_key(ROTATION_HEAD_WEIGHT)
    }

    fn t(&self, name: &str) -> Result<&Tensor> {
        self.vars
            .get(name)
            .map(|(v, _)| v.as_tensor())
            .ok_or_else(|| Error::Internal(format!("network variable {name:?} missing")))
    }

    fn bn(&self, x: &Tensor, prefix: &str, train: bool) -> Result<Tensor> {
        let gamma = self.t(&format!("{prefix}.weight"))?;
        let beta = self.t(&format!("{prefix}.bias"))?;
        let (rm_name, rv_name) = (
            format!("{prefix}.running_mean"),
            format!("{prefix}.running_var"),
        );
        if !train {
            return batch_norm_eval(x, gamma, beta, self.t(&rm_name)?, self.t(&rv_name)?, BN_EPS);
        }
        let out = batch_norm_train(x, gamma, beta, BN_EPS)?;
        let _guard = self
            .bn_lock
            .lock()
            .map_err(|_| Error::Internal("BN lock poisoned".into()))?;
        for (name, batch) in [(&rm_name, &out.mean), (&rv_name, &out.var_unbiased)] {
            let (var, _) = &self.vars[name];
            let updated = ((var.as_tensor() * (1.0 - BN_MOMENTUM))? + (batch * BN_MOMENTUM)?)?;
            var.set(&updated.detach())?;
        }
        Ok(out.y)
    }

    /// Features (B, D) of a normalised NCHW batch. `train` selects BatchNorm's mode (and
    /// updates running statistics).
    ///
    /// # Errors
    /// [`Error::Internal`] if a tensor operation fails (e.g. wrong input shape).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for block in &self.blocks {
            let mut out = x.clone();
            let last = block.units.len() - 1;
            for (k, unit) in block.units.iter().enumerate() {
                out = self.conv_bn(&out, unit, train)?;
                // With a shortcut, the last activation comes after the residual add.
                if k < last || block.shortcut.is_none() {
                    out = activate(&out, block.activation)?;
                }
            }
            if let Some(shortcut) = &block.shortcut {
                let residual = self.conv_bn(&x, shortcut, train)?;
                out = activate(&(out + residual)?, block.activation)?;
            }
            x = if block.pool { max_pool2x2(&out)? } else { out };
        }
        global_avg_pool(&x)
    }

    /// A unit: convolution (with its bias, if any), then BatchNorm.
    fn conv_bn(&self, x: &Tensor, unit: &ConvBn, train: bool) -> Result<Tensor> {
        let bias = match unit.conv_bias {
            true => Some(self.t(&unit.bias())?),
            false => None,
        };
        let y = conv(x, self.t(&unit.weight())?, bias)?;
        self.bn(&y, &unit.bn, train)
    }

    /// Head logits of features (B, D) -> (B, classes).
    ///
    /// # Errors
    /// [`Error::Internal`] when the network has no head.
    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        linear(features, self.t(HEAD_WEIGHT)?, self.t(HEAD_BIAS)?)
    }

    /// Rotation logits (B, 4) of features (B, D).
    ///
    /// # Errors
    /// [`Error::Internal`] when the network has no rotation head.
    pub fn rotation_logits(&self, features: &Tensor) -> Result<Tensor> {
        linear(
            features,
            self.t(ROTATION_HEAD_WEIGHT)?,
            self.t(ROTATION_HEAD_BIAS)?,
        )
    }

    /// Every variable as (name, f32 values, shape), for checkpoints.
    ///
    /// # Errors
    /// [`Error::Internal`] if a device copy fails.
    pub fn export(&self) -> Result<Vec<NamedValues>> {
        self.vars
            .iter()
            .map(|(n, (v, _))| {
                Ok((
                    n.clone(),
                    v.dims().to_vec(),
                    v.as_tensor()
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                ))
            })
            .collect()
    }
}
