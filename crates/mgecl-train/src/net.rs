//! Trainable encoders (Conv-4, ResNet-12) with a linear head, held as named candle `Var`s in
//! the RFS key layout, so a checkpoint is a model file the SDK loads unchanged.
//!
//! BatchNorm runs in training mode (batch statistics, running statistics updated with
//! momentum 0.1 and the unbiased variance, as PyTorch) or evaluation mode.

use std::collections::BTreeMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use safetensors::Dtype;

use crate::error::{Error, Result};
use crate::layers::{
    batch_norm_eval, batch_norm_train, conv, global_avg_pool, leaky_relu, linear, max_pool2x2,
};
use crate::rng::Rng;
use mgecl::model::Architecture;
use mgecl::ModelProblem;

const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;
/// RFS ResNet-12's LeakyReLU slope.
pub const LEAKY_SLOPE: f64 = 0.1;

/// What a named tensor is, for the optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Trained, with weight decay.
    Weight,
    /// BatchNorm running statistic: saved, never trained or decayed.
    Buffer,
}

/// The architecture's shape.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetSpec {
    /// The architecture.
    pub arch: Architecture,
    /// Block widths (Conv-4: four equal values).
    pub widths: Vec<usize>,
    /// Input channels.
    pub in_channels: usize,
}

/// A named tensor as host values: (name, shape, values).
pub type NamedValues = (String, Vec<usize>, Vec<f32>);

/// A trainable encoder plus optional classification head.
pub struct TrainNet {
    spec: NetSpec,
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
    pub fn new(spec: NetSpec, num_classes: usize, seed: u64, device: &Device) -> Result<Self> {
        let arch = spec.arch;
        if spec.widths.len() != 4 || spec.widths.contains(&0) || spec.in_channels == 0 {
            return Err(Error::InvalidArgument(format!(
                "bad network shape {spec:?}"
            )));
        }
        if arch == Architecture::Conv4 && spec.widths.iter().any(|&w| w != spec.widths[0]) {
            return Err(Error::InvalidArgument(
                "conv4 needs four equal widths".into(),
            ));
        }
        let mut rng = Rng::new(seed, 0x1417);
        let mut values: Vec<(String, Vec<usize>, Vec<f32>, ParamKind)> = Vec::new();
        let bn = |values: &mut Vec<_>, p: String, c: usize| {
            values.push((
                format!("{p}.weight"),
                vec![c],
                vec![1.0; c],
                ParamKind::Weight,
            ));
            values.push((
                format!("{p}.bias"),
                vec![c],
                vec![0.0; c],
                ParamKind::Weight,
            ));
            values.push((
                format!("{p}.running_mean"),
                vec![c],
                vec![0.0; c],
                ParamKind::Buffer,
            ));
            values.push((
                format!("{p}.running_var"),
                vec![c],
                vec![1.0; c],
                ParamKind::Buffer,
            ));
        };
        let mut c_in = spec.in_channels;
        for (i, &c) in spec.widths.iter().enumerate() {
            let l = format!("layer{}.0", i + 1);
            match arch {
                Architecture::ResNet12 => {
                    for (k, cin) in [(1, c_in), (2, c), (3, c)] {
                        let shape = vec![c, cin, 3, 3];
                        let w = kaiming_normal(&mut rng, &shape);
                        values.push((format!("{l}.conv{k}.weight"), shape, w, ParamKind::Weight));
                        bn(&mut values, format!("{l}.bn{k}"), c);
                    }
                    let shape = vec![c, c_in, 1, 1];
                    let w = kaiming_normal(&mut rng, &shape);
                    values.push((
                        format!("{l}.downsample.0.weight"),
                        shape,
                        w,
                        ParamKind::Weight,
                    ));
                    bn(&mut values, format!("{l}.downsample.1"), c);
                }
                Architecture::Conv4 => {
                    let shape = vec![c, c_in, 3, 3];
                    let w = kaiming_normal(&mut rng, &shape);
                    let bound = 1.0 / ((c_in * 9) as f64).sqrt();
                    values.push((
                        format!("layer{}.0.weight", i + 1),
                        shape,
                        w,
                        ParamKind::Weight,
                    ));
                    values.push((
                        format!("layer{}.0.bias", i + 1),
                        vec![c],
                        uniform(&mut rng, c, bound),
                        ParamKind::Weight,
                    ));
                    bn(&mut values, format!("layer{}.1", i + 1), c);
                }
            }
            c_in = c;
        }
        if num_classes > 0 {
            let d = spec.widths[3];
            let bound = 1.0 / (d as f64).sqrt();
            values.push((
                "classifier.weight".into(),
                vec![num_classes, d],
                uniform(&mut rng, num_classes * d, bound),
                ParamKind::Weight,
            ));
            values.push((
                "classifier.bias".into(),
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
            vars,
            bn_lock: Mutex::new(()),
            device: device.clone(),
        })
    }

    /// Loads encoder weights (and the head, if present and `keep_head`) from a safetensors
    /// model file in the RFS layout, e.g. a pretraining checkpoint. Widths and channels come
    /// from the weight shapes.
    ///
    /// # Errors
    /// [`mgecl::Error::InvalidModel`] for a file that lacks a tensor this network needs.
    pub fn from_safetensors(
        bytes: &[u8],
        arch: Architecture,
        keep_head: bool,
        device: &Device,
    ) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| Error::model(ModelProblem::NotSafetensors, format!("checkpoint: {e}")))?;
        let shape_of = |name: &str| -> Result<Vec<usize>> {
            st.tensor(name).map(|t| t.shape().to_vec()).map_err(|_| {
                Error::model(
                    ModelProblem::MissingTensor,
                    format!("tensor {name:?} is missing"),
                )
            })
        };
        let (spec, head) = match arch {
            Architecture::ResNet12 => {
                let widths = (1..=4)
                    .map(|i| shape_of(&format!("layer{i}.0.conv1.weight")).map(|s| s[0]))
                    .collect::<Result<Vec<_>>>()?;
                let in_channels = shape_of("layer1.0.conv1.weight")?[1];
                (
                    NetSpec {
                        arch: Architecture::ResNet12,
                        widths,
                        in_channels,
                    },
                    "classifier.weight",
                )
            }
            Architecture::Conv4 => {
                let s = shape_of("layer1.0.weight")?;
                (
                    NetSpec {
                        arch: Architecture::Conv4,
                        widths: vec![s[0]; 4],
                        in_channels: s[1],
                    },
                    "classifier.weight",
                )
            }
        };
        let num_classes = if keep_head {
            shape_of(head).map(|s| s[0]).unwrap_or(0)
        } else {
            0
        };
        let net = TrainNet::new(spec, num_classes, 0, device)?;
        for (name, (var, _)) in &net.vars {
            let view = st.tensor(name).map_err(|_| {
                Error::model(
                    ModelProblem::MissingTensor,
                    format!("tensor {name:?} is missing"),
                )
            })?;
            if view.dtype() != Dtype::F32 || view.shape() != var.dims() {
                return Err(Error::model(
                    ModelProblem::WrongShape,
                    format!("tensor {name:?}: {:?} {:?}", view.dtype(), view.shape()),
                ));
            }
            let v: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            var.set(&Tensor::from_vec(v, view.shape(), device)?)?;
        }
        Ok(net)
    }

    /// The architecture's shape.
    pub fn spec(&self) -> &NetSpec {
        &self.spec
    }

    /// Feature dimension.
    pub fn feature_dim(&self) -> usize {
        self.spec.widths[3]
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
        self.vars.remove("classifier.weight");
        self.vars.remove("classifier.bias");
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
                "classifier.weight".into(),
                (Var::from_tensor(&w)?, ParamKind::Weight),
            );
            self.vars.insert(
                "classifier.bias".into(),
                (Var::from_tensor(&b)?, ParamKind::Weight),
            );
        }
        Ok(())
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
        let arch = self.spec.arch;
        for i in 1..=4 {
            let l = format!("layer{i}.0");
            x = match arch {
                Architecture::ResNet12 => {
                    let mut out = x.clone();
                    for k in 1..=3 {
                        out = self.bn(
                            &conv(&out, self.t(&format!("{l}.conv{k}.weight"))?, None)?,
                            &format!("{l}.bn{k}"),
                            train,
                        )?;
                        if k < 3 {
                            out = leaky_relu(&out, LEAKY_SLOPE)?;
                        }
                    }
                    let res = self.bn(
                        &conv(&x, self.t(&format!("{l}.downsample.0.weight"))?, None)?,
                        &format!("{l}.downsample.1"),
                        train,
                    )?;
                    max_pool2x2(&leaky_relu(&(out + res)?, LEAKY_SLOPE)?)?
                }
                Architecture::Conv4 => {
                    let y = conv(
                        &x,
                        self.t(&format!("{l}.weight"))?,
                        Some(self.t(&format!("{l}.bias"))?),
                    )?;
                    let y = self.bn(&y, &format!("layer{i}.1"), train)?.relu()?;
                    if i < 4 {
                        max_pool2x2(&y)?
                    } else {
                        y
                    }
                }
            };
        }
        global_avg_pool(&x)
    }

    /// Head logits of features (B, D) -> (B, classes).
    ///
    /// # Errors
    /// [`Error::Internal`] when the network has no head.
    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        linear(
            features,
            self.t("classifier.weight")?,
            self.t("classifier.bias")?,
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
