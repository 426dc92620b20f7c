//! Quantised model files: an encoder's folded convolutions (`super::folded`) with int8
//! weights and calibrated activation ranges, run by the int8 engine (`super::cpu_int8`).
//!
//! The file is safetensors like any model file, with the source model's metadata and the
//! key `quantization` (JSON, [`QuantizationInfo`]). Each convolution unit of the
//! architecture's layout (`super::layout`), under its convolution's prefix `P` (e.g.
//! `layer1.0.conv1`, or Conv-4's `layer1.0`):
//!
//! - `P.weight`: int8 `(c_out, c_in, k, k)`, BatchNorm folded in, symmetric per output
//!   channel: the folded weight is `code * P.weight_scale[c_out]` (float32 `(c_out,)`);
//! - `P.bias`: float32 `(c_out,)`, the folded bias (the block's last convolution also holds
//!   its shortcut's BatchNorm shift; the shortcut unit has none);
//! - `P.input_scale` (float32 `(1,)`) and `P.input_zero_point` (uint8 `(1,)`): the input's
//!   codes, `x ~ scale * (code - zero_point)` (the shortcut unit has none: it reads the block
//!   input's codes, those of the block's first convolution).
//!
//! BatchNorm tensors are absent. A reader without int8 support stops at `P.weight`'s dtype.

use std::collections::BTreeMap;

use mgecl_kernels::layout::{hwio_to_oihw, oihw_to_hwio};
use serde::{Deserialize, Serialize};

use super::cpu_int8::{
    ActivationQuant, QuantBlock, QuantConv, QuantNet, QuantShortcut, QuantWeights,
};
use super::folded::FoldedNet;
use super::layout::{ConvBn, EncoderSpec};
use super::params::{activation_slope, EncoderParams};
use super::parsed::{fingerprint, ParsedFile};
use super::weights::WeightFile;
use super::{LoadOptions, Model};
use crate::error::{Error, ModelProblem, Result};
use crate::preprocess::Preprocessor;

/// The metadata key that marks a quantised model and describes its quantisation.
pub const QUANTIZATION_KEY: &str = "quantization";

/// What a quantised model's `quantization` metadata holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuantizationInfo {
    /// The format's version (1).
    pub version: u32,
    /// How weights are quantised: `int8-per-output-channel-symmetric`.
    pub weights: String,
    /// How activations are quantised: `uint8-per-tensor-affine`.
    pub activations: String,
    /// The fingerprint ([`crate::ModelInfo::fingerprint`]) of the float32 model quantised.
    pub source_fingerprint: String,
    /// How many images calibrated the activation ranges.
    pub calibration_images: usize,
    /// Where those images came from and how they were chosen.
    pub calibration_data: String,
}

impl QuantizationInfo {
    /// The version written and read.
    pub const VERSION: u32 = 1;

    /// A description of this crate's scheme.
    pub fn new(
        source_fingerprint: String,
        calibration_images: usize,
        calibration_data: String,
    ) -> Self {
        QuantizationInfo {
            version: Self::VERSION,
            weights: "int8-per-output-channel-symmetric".into(),
            activations: "uint8-per-tensor-affine".into(),
            source_fingerprint,
            calibration_images,
            calibration_data,
        }
    }

    /// Parses the metadata value.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] (`BadMetadata`) for invalid JSON or another version.
    pub fn from_metadata(text: &str) -> Result<Self> {
        let info: QuantizationInfo = serde_json::from_str(text).map_err(|e| {
            Error::model(
                ModelProblem::BadMetadata,
                format!("{QUANTIZATION_KEY} is not valid: {e}"),
            )
        })?;
        if info.version != Self::VERSION {
            return Err(Error::model(
                ModelProblem::BadMetadata,
                format!(
                    "{QUANTIZATION_KEY} has version {}; this library reads version {}",
                    info.version,
                    Self::VERSION
                ),
            ));
        }
        Ok(info)
    }
}

/// The deepest product the int8 engine sums exactly in `i32`: `depth * 255 * 128` stays below
/// `2^31` (ResNet-12's widest is `9 * 640 = 5760`).
const MAX_DEPTH: usize = ((1u64 << 31) / (255 * 128)) as usize - 1;
// The most a corrected sum reaches (|code - zero point| <= 255, |weight| <= 128) fits, and the
// widest shipped convolution is within the bound.
const _: () = assert!((MAX_DEPTH as u64) * 255 * 128 < 1 << 31 && MAX_DEPTH >= 9 * 640);

/// Refuses an encoder with a convolution deeper than [`MAX_DEPTH`].
fn check_depths(spec: &EncoderSpec) -> Result<()> {
    let units = spec
        .blocks()
        .into_iter()
        .flat_map(|b| b.units.into_iter().chain(b.shortcut));
    for unit in units {
        let depth = unit.kernel * unit.kernel * unit.c_in;
        if depth > MAX_DEPTH {
            return Err(Error::model(
                ModelProblem::WrongShape,
                format!(
                    "{} takes {} inputs per output, more than the int8 engine sums exactly \
                     ({MAX_DEPTH})",
                    unit.conv, depth
                ),
            ));
        }
    }
    Ok(())
}

fn tensor_name(unit: &ConvBn, suffix: &str) -> String {
    format!("{}.{suffix}", unit.conv)
}

/// A float32 tensor of positive finite values (a scale).
fn read_scales(file: &WeightFile<'_>, name: &str, len: usize) -> Result<Vec<f32>> {
    let values = file.read(name, &[len])?;
    if let Some(v) = values.iter().find(|v| **v <= 0.0) {
        return Err(Error::model(
            ModelProblem::NonFiniteWeight,
            format!("tensor {name:?} holds a scale of {v}; scales are positive"),
        ));
    }
    Ok(values)
}

fn read_weights(file: &WeightFile<'_>, unit: &ConvBn) -> Result<QuantWeights> {
    let (c_out, c_in, k) = (unit.c_out, unit.c_in, unit.kernel);
    let codes = file.read_i8(&unit.weight(), &[c_out, c_in, k, k])?;
    let scales = read_scales(file, &tensor_name(unit, "weight_scale"), c_out)?;
    let rows = oihw_to_hwio(&codes, (c_out, c_in, k), |_, v| v);
    Ok(QuantWeights::new(c_in, c_out, k, rows, scales))
}

/// Reads the int8 encoder `spec` describes out of a quantised file.
///
/// # Errors
/// [`Error::InvalidModel`]: `MissingTensor`, `WrongDtype`, `WrongShape` (also for a
/// convolution deeper than the engine sums exactly), or `NonFiniteWeight` for a non-finite
/// value or a scale that is not positive.
pub(crate) fn read_quant_net(
    file: &WeightFile<'_>,
    spec: &EncoderSpec,
    leaky_relu_slope: f64,
) -> Result<QuantNet> {
    check_depths(spec)?;
    let mut blocks = Vec::new();
    for block in spec.blocks() {
        let slope = activation_slope(block.activation, leaky_relu_slope)? as f32;
        let mut convs = Vec::new();
        for unit in &block.units {
            let weights = read_weights(file, unit)?;
            let bias = file.read(&unit.bias(), &[unit.c_out])?;
            let scale = read_scales(file, &tensor_name(unit, "input_scale"), 1)?[0];
            let zero_point = file.read_u8(&tensor_name(unit, "input_zero_point"), &[1])?[0];
            let input = ActivationQuant { scale, zero_point };
            convs.push(QuantConv::new(weights, input, bias, slope));
        }
        let shortcut = match &block.shortcut {
            Some(unit) => Some(QuantShortcut::new(
                read_weights(file, unit)?,
                convs[0].input,
            )),
            None => None,
        };
        blocks.push(QuantBlock {
            convs,
            shortcut,
            pool: block.pool,
        });
    }
    Ok(QuantNet {
        blocks,
        in_channels: spec.in_channels,
    })
}

/// A tensor to write: name, dtype, shape, little-endian data.
type TensorData = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// The tensors of `net` under `spec`'s names (the layout [`read_quant_net`] reads).
fn tensors(net: &QuantNet, spec: &EncoderSpec) -> Vec<TensorData> {
    use safetensors::Dtype;
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut out = Vec::new();
    let push_weights = |unit: &ConvBn, w: &QuantWeights, out: &mut Vec<TensorData>| {
        let (c_out, c_in, k) = (w.c_out, w.c_in, w.k);
        let oihw = hwio_to_oihw(&w.codes, (c_out, c_in, k));
        let bytes = oihw.iter().map(|&c| c as u8).collect();
        out.push((unit.weight(), Dtype::I8, vec![c_out, c_in, k, k], bytes));
        let name = tensor_name(unit, "weight_scale");
        out.push((name, Dtype::F32, vec![c_out], f32s(&w.scales)));
    };
    for (block, quant) in spec.blocks().iter().zip(&net.blocks) {
        for (unit, conv) in block.units.iter().zip(&quant.convs) {
            push_weights(unit, &conv.weights, &mut out);
            out.push((unit.bias(), Dtype::F32, vec![unit.c_out], f32s(&conv.bias)));
            let scale = tensor_name(unit, "input_scale");
            out.push((scale, Dtype::F32, vec![1], f32s(&[conv.input.scale])));
            let zero = tensor_name(unit, "input_zero_point");
            out.push((zero, Dtype::U8, vec![1], vec![conv.input.zero_point]));
        }
        if let (Some(unit), Some(shortcut)) = (&block.shortcut, &quant.shortcut) {
            push_weights(unit, &shortcut.weights, &mut out);
        }
    }
    out
}

/// The safetensors bytes of `net` with `metadata`.
///
/// # Errors
/// [`Error::Backend`] when safetensors cannot serialise them (it never should).
pub(crate) fn serialize(
    net: &QuantNet,
    spec: &EncoderSpec,
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let tensors = tensors(net, spec);
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| Error::backend_caused_by("cannot describe a quantised tensor", e))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata.into_iter().collect()))
        .map_err(|e| Error::backend_caused_by("cannot serialise the quantised model", e))
}

/// Quantises the float32 model in `bytes` (with `options`' metadata overrides, which the
/// output keeps): BatchNorm folded, weights to int8 per output channel, each activation's
/// range calibrated on `images` (preprocessed as [`Model::embed_preprocessed`] takes them)
/// as they arrive through the layers already quantised. Returns the quantised model file,
/// checked to load; its metadata is the source's plus [`QUANTIZATION_KEY`], whose
/// `calibration_data` says `calibration_data`. The confidence calibration is the source's:
/// refit it on the quantised features where they moved (`mgecl quantize` does).
///
/// The calibration holds one layer's activations of all images at once: within
/// [`LoadOptions::max_embed_bytes`] per 32 images (the engine's embedding chunk).
///
/// # Errors
/// As [`Model::from_bytes`]; [`Error::InvalidArgument`] when `bytes` is already quantised or
/// `images` is empty or not whole images; [`Error::LimitExceeded`] when the images' activations
/// exceed the bound above.
pub fn quantize_model(
    bytes: &[u8],
    options: &LoadOptions,
    images: &[f32],
    calibration_data: &str,
) -> Result<Vec<u8>> {
    let parsed = ParsedFile::parse(bytes, options)?;
    if parsed.metadata.raw.contains_key(QUANTIZATION_KEY) {
        return Err(Error::InvalidArgument(
            "the model is already quantised".into(),
        ));
    }
    check_depths(&parsed.spec)?;
    let preprocessor = Preprocessor::new(&parsed.metadata.input)?;
    let (c, h, w) = preprocessor.input_shape();
    let per_image = preprocessor.input_len();
    if images.is_empty() || !images.len().is_multiple_of(per_image) {
        return Err(Error::InvalidArgument(format!(
            "{} calibration values are not a whole number of {c}x{h}x{w} images",
            images.len()
        )));
    }
    let n = images.len() / per_image;
    let limit = options
        .max_embed_bytes
        .saturating_mul((n as u64).div_ceil(super::EMBED_CHUNK as u64));
    let need = parsed.pass.per_image.saturating_mul(n as u64);
    if need > limit {
        return Err(Error::LimitExceeded(format!(
            "calibrating on {n} images needs {} MiB of activations, over the limit of {} MiB \
             (LoadOptions::max_embed_bytes per {} images): use fewer images",
            need >> 20,
            limit >> 20,
            super::EMBED_CHUNK
        )));
    }
    let ParsedFile {
        weights,
        spec,
        metadata,
        ..
    } = parsed;
    let folded = FoldedNet::from_params(EncoderParams::read(
        &weights,
        &spec,
        metadata.bn_eps,
        metadata.leaky_relu_slope,
    )?);
    let net = QuantNet::calibrate(&folded, images, n, h, w);
    let info = QuantizationInfo::new(
        fingerprint(&weights, &metadata),
        n,
        calibration_data.to_string(),
    );
    let mut raw = metadata.raw;
    let text = serde_json::to_string(&info)
        .map_err(|e| Error::backend_caused_by("cannot describe the quantisation", e))?;
    raw.insert(QUANTIZATION_KEY.to_string(), text);
    let out = serialize(&net, &spec, raw)?;
    Model::from_bytes(&out, &LoadOptions::default())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Architecture;

    #[test]
    fn the_depth_bound_keeps_sums_exact() {
        let spec = |c_in| EncoderSpec {
            arch: Architecture::ResNet12,
            widths: vec![640; 4],
            in_channels: c_in,
        };
        assert!(check_depths(&spec(3)).is_ok());
        assert!(check_depths(&spec(MAX_DEPTH / 9 + 1)).is_err());
    }

    #[test]
    fn weight_layouts_round_trip() {
        let (c_out, c_in, k) = (3, 2, 3);
        let oihw: Vec<i8> = (0..c_out * c_in * k * k).map(|i| i as i8 - 20).collect();
        let rows = oihw_to_hwio(&oihw, (c_out, c_in, k), |_, v| v);
        // Row (ky=1, kx=2, ci=1), column co=2: oihw[2][1][1][2].
        assert_eq!(
            rows[((3 + 2) * c_in + 1) * c_out + 2],
            oihw[((2 * c_in + 1) * 3 + 1) * 3 + 2]
        );
        assert_eq!(hwio_to_oihw(&rows, (c_out, c_in, k)), oihw);
    }

    #[test]
    fn quantization_info_round_trips_and_refuses_other_versions() {
        let info = QuantizationInfo::new("00ff".into(), 512, "train alphabets".into());
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(QuantizationInfo::from_metadata(&text).unwrap(), info);
        let newer = text.replace("\"version\":1", "\"version\":2");
        assert!(QuantizationInfo::from_metadata(&newer).is_err());
        assert!(QuantizationInfo::from_metadata("{").is_err());
    }
}
