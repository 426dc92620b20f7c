//! Reading float32 weights out of a safetensors buffer, with every check a hostile file needs:
//! the safetensors parser validates header and offsets against the buffer (so a declared shape
//! larger than the file is rejected before anything is allocated), and this module checks
//! presence, dtype, shape and finiteness of each tensor the architecture asks for. The one
//! reader of model files: inference and training (checkpoints, initial models) both load
//! through it.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::layout::{Architecture, ConvBn, EncoderSpec};
use crate::error::{Error, ModelProblem, Result};
use crate::hash::{fnv1a, FNV_OFFSET};

/// A parsed safetensors model file: checked reads of its float32 tensors, and its
/// `__metadata__`.
pub struct WeightFile<'a> {
    tensors: SafeTensors<'a>,
    metadata: BTreeMap<String, String>,
}

fn parse_error(e: SafeTensorError) -> Error {
    use SafeTensorError as E;
    let problem = match &e {
        E::MetadataIncompleteBuffer | E::InvalidHeaderLength => ModelProblem::Truncated,
        E::TensorInvalidInfo
        | E::InvalidOffset(_)
        | E::ValidationOverflow
        | E::MisalignedSlice
        | E::InvalidTensorView(..) => ModelProblem::InconsistentHeader,
        _ => ModelProblem::NotSafetensors,
    };
    let detail = match problem {
        ModelProblem::Truncated => format!("the file is shorter than its header declares ({e})"),
        ModelProblem::InconsistentHeader => {
            format!("tensor shapes, dtypes and offsets in the header disagree ({e})")
        }
        _ => format!("not a safetensors file ({e})"),
    };
    Error::model(problem, detail)
}

impl<'a> WeightFile<'a> {
    /// Parses `bytes` as safetensors.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] with `NotSafetensors`, `Truncated` or `InconsistentHeader`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let tensors = SafeTensors::deserialize(bytes).map_err(parse_error)?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(parse_error)?;
        let metadata = header
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(WeightFile { tensors, metadata })
    }

    /// The file's `__metadata__` (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// A stable hash of every tensor (name, dtype, shape, data) in name order: the same
    /// weights give the same value however the file orders them.
    pub(crate) fn content_hash(&self) -> u64 {
        let mut tensors = self.tensors.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors.iter().fold(FNV_OFFSET, |h, (name, view)| {
            let h = fnv1a(
                fnv1a(h, name.as_bytes()),
                format!("{:?}{:?}", view.dtype(), view.shape()).as_bytes(),
            );
            fnv1a(h, view.data())
        })
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.tensor(name).is_ok()
    }

    /// The shape of tensor `name`.
    ///
    /// # Errors
    /// `MissingTensor` when absent.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.view(name)?.shape().to_vec())
    }

    fn view(&self, name: &str) -> Result<safetensors::tensor::TensorView<'a>> {
        self.tensors.tensor(name).map_err(|_| {
            Error::model(
                ModelProblem::MissingTensor,
                format!("tensor {name:?} is missing"),
            )
        })
    }

    /// The shape of the `arch` encoder this file holds, read from its tensors' shapes
    /// ([`EncoderSpec::from_shapes`]).
    ///
    /// # Errors
    /// As [`EncoderSpec::from_shapes`].
    pub fn encoder_spec(&self, arch: Architecture) -> Result<EncoderSpec> {
        EncoderSpec::from_shapes(arch, |name| self.shape(name).ok())
    }

    /// Reads the convolution weight `(c_out, c_in, k, k)` and bias (empty without one) of a
    /// unit.
    ///
    /// # Errors
    /// As [`WeightFile::read`].
    pub(crate) fn read_conv(&self, unit: &ConvBn) -> Result<(Vec<f32>, Vec<f32>)> {
        let (c, k) = (unit.c_out, unit.kernel);
        let weight = self.read(&unit.weight(), &[c, unit.c_in, k, k])?;
        let bias = match unit.conv_bias {
            true => self.read(&unit.bias(), &[c])?,
            false => Vec::new(),
        };
        Ok((weight, bias))
    }

    /// Reads tensor `name`, which must be float32 of exactly `expected` shape with only finite
    /// values.
    ///
    /// # Errors
    /// `MissingTensor`, `WrongDtype`, `WrongShape` or `NonFiniteWeight`.
    pub fn read(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let data = self.data(name, Dtype::F32, expected)?;
        let values: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::model(
                ModelProblem::NonFiniteWeight,
                format!(
                    "tensor {name:?} holds a non-finite value ({}) at index {i}",
                    values[i]
                ),
            ));
        }
        Ok(values)
    }

    /// Reads tensor `name`, which must be int8 of exactly `expected` shape.
    ///
    /// # Errors
    /// `MissingTensor`, `WrongDtype` or `WrongShape`.
    pub fn read_i8(&self, name: &str, expected: &[usize]) -> Result<Vec<i8>> {
        let data = self.data(name, Dtype::I8, expected)?;
        Ok(data.iter().map(|&b| b as i8).collect())
    }

    /// Reads tensor `name`, which must be uint8 of exactly `expected` shape.
    ///
    /// # Errors
    /// `MissingTensor`, `WrongDtype` or `WrongShape`.
    pub fn read_u8(&self, name: &str, expected: &[usize]) -> Result<Vec<u8>> {
        Ok(self.data(name, Dtype::U8, expected)?.to_vec())
    }

    /// The data of tensor `name`, checked to be of `dtype` and exactly `expected` shape.
    fn data(&self, name: &str, dtype: Dtype, expected: &[usize]) -> Result<&'a [u8]> {
        let view = self.view(name)?;
        if view.dtype() != dtype {
            return Err(Error::model(
                ModelProblem::WrongDtype,
                format!("tensor {name:?} is {:?}, expected {dtype:?}", view.dtype()),
            ));
        }
        if view.shape() != expected {
            return Err(Error::model(
                ModelProblem::WrongShape,
                format!(
                    "tensor {name:?} has shape {:?}, expected {expected:?}",
                    view.shape()
                ),
            ));
        }
        Ok(view.data())
    }
}

/// Inference-mode BatchNorm as a per-channel affine map `y = x * scale + shift`, in f64:
/// `scale = gamma / sqrt(running_var + eps)`, `shift = beta - running_mean * scale`. Both
/// engines start from this one reading of the parameters.
pub(crate) struct BnAffine {
    pub(crate) scale: Vec<f64>,
    pub(crate) shift: Vec<f64>,
}

impl BnAffine {
    /// Loads a unit's BatchNorm (`{bn}.weight`, `.bias`, `.running_mean`, `.running_var`).
    ///
    /// # Errors
    /// As [`WeightFile::read`]; `NonFiniteWeight` when `running_var + eps <= 0`.
    pub(crate) fn read(weights: &WeightFile<'_>, unit: &ConvBn, eps: f64) -> Result<Self> {
        let (prefix, channels) = (unit.bn.as_str(), unit.c_out);
        let shape = [channels];
        let gamma = weights.read(&format!("{prefix}.weight"), &shape)?;
        let beta = weights.read(&format!("{prefix}.bias"), &shape)?;
        let mean = weights.read(&format!("{prefix}.running_mean"), &shape)?;
        let var = weights.read(&format!("{prefix}.running_var"), &shape)?;
        let mut scale = Vec::with_capacity(channels);
        let mut shift = Vec::with_capacity(channels);
        for c in 0..channels {
            let denom = f64::from(var[c]) + eps;
            if denom <= 0.0 {
                return Err(Error::model(
                    ModelProblem::NonFiniteWeight,
                    format!(
                        "{prefix}.running_var[{c}] = {} makes the output NaN",
                        var[c]
                    ),
                ));
            }
            let s = f64::from(gamma[c]) / denom.sqrt();
            scale.push(s);
            shift.push(f64::from(beta[c]) - f64::from(mean[c]) * s);
        }
        Ok(BnAffine { scale, shift })
    }
}

/// Inference-mode BatchNorm on a candle device: the [`BnAffine`] map rounded once to f32.
pub(crate) struct BatchNorm {
    /// `gamma / sqrt(running_var + eps)`, shape (1, C, 1, 1).
    pub(crate) scale: Tensor,
    /// `beta - running_mean * scale`, shape (1, C, 1, 1).
    pub(crate) shift: Tensor,
}

impl BatchNorm {
    /// Puts the affine map on `device`.
    ///
    /// # Errors
    /// When the device refuses the tensors.
    pub(crate) fn new(affine: &BnAffine, device: &Device) -> candle_core::Result<Self> {
        let channels = affine.scale.len();
        let round = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Ok(BatchNorm {
            scale: Tensor::from_vec(round(&affine.scale), (1, channels, 1, 1), device)?,
            shift: Tensor::from_vec(round(&affine.shift), (1, channels, 1, 1), device)?,
        })
    }

    /// Applies the affine map to an NCHW tensor.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)
    }
}
