//! The one reader of an encoder's parameters: every block the layout (`super::layout`)
//! describes, each unit's convolution and inference-mode BatchNorm, checked once and
//! independent of any engine. candle's forward pass (`super::candle_net`) and the BatchNorm
//! fold of the CPU engines (`super::folded`) are built from it.

use super::layout::{Activation, ConvBn, EncoderSpec};
use super::weights::{BnAffine, WeightFile};
use crate::error::{Error, ModelProblem, Result};

/// One convolution + BatchNorm unit as read from the file.
pub(crate) struct UnitParams {
    /// Input channels.
    pub(crate) c_in: usize,
    /// Output channels.
    pub(crate) c_out: usize,
    /// Kernel side (padding `kernel / 2`, stride 1).
    pub(crate) kernel: usize,
    /// `(c_out, c_in, kernel, kernel)`, OIHW.
    pub(crate) weight: Vec<f32>,
    /// The convolution's bias `(c_out,)`, if it has one.
    pub(crate) bias: Option<Vec<f32>>,
    /// The BatchNorm after it.
    pub(crate) bn: BnAffine,
}

/// One block as read from the file: units in a chain, each followed by the activation; the
/// shortcut's output is added before the last one's.
pub(crate) struct BlockParams {
    pub(crate) units: Vec<UnitParams>,
    pub(crate) shortcut: Option<UnitParams>,
    /// The activation's negative slope: 0 for ReLU, the file's `leaky_relu_slope` for
    /// LeakyReLU.
    pub(crate) slope: f64,
    /// Whether a 2x2 max-pool ends the block.
    pub(crate) pool: bool,
}

/// A checked encoder parameter set.
pub(crate) struct EncoderParams {
    pub(crate) blocks: Vec<BlockParams>,
}

impl UnitParams {
    fn read(weights: &WeightFile<'_>, unit: &ConvBn, bn_eps: f64) -> Result<Self> {
        let (weight, bias) = weights.read_conv(unit)?;
        Ok(UnitParams {
            c_in: unit.c_in,
            c_out: unit.c_out,
            kernel: unit.kernel,
            weight,
            bias: unit.conv_bias.then_some(bias),
            bn: BnAffine::read(weights, unit, bn_eps)?,
        })
    }
}

impl EncoderParams {
    /// Reads the blocks `spec` describes, with the file's BatchNorm epsilon and LeakyReLU
    /// slope.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] for any missing, misshapen, non-f32 or non-finite tensor, or
    /// (`BadMetadata`) a LeakyReLU slope outside [0, 1].
    pub(crate) fn read(
        weights: &WeightFile<'_>,
        spec: &EncoderSpec,
        bn_eps: f64,
        leaky_relu_slope: f64,
    ) -> Result<Self> {
        let blocks = spec
            .blocks()
            .iter()
            .map(|block| {
                Ok(BlockParams {
                    units: block
                        .units
                        .iter()
                        .map(|u| UnitParams::read(weights, u, bn_eps))
                        .collect::<Result<_>>()?,
                    shortcut: block
                        .shortcut
                        .as_ref()
                        .map(|u| UnitParams::read(weights, u, bn_eps))
                        .transpose()?,
                    slope: activation_slope(block.activation, leaky_relu_slope)?,
                    pool: block.pool,
                })
            })
            .collect::<Result<_>>()?;
        Ok(EncoderParams { blocks })
    }

    /// Input channels of the first block.
    pub(crate) fn in_channels(&self) -> usize {
        self.blocks
            .first()
            .and_then(|b| b.units.first())
            .map_or(0, |u| u.c_in)
    }
}

/// The negative slope `activation` has in a file whose `leaky_relu_slope` is given: every
/// engine applies `max(x, slope * x)`.
///
/// # Errors
/// [`Error::InvalidModel`] (`BadMetadata`) for a LeakyReLU slope outside [0, 1], where
/// `max(x, slope * x)` is not LeakyReLU.
pub(crate) fn activation_slope(activation: Activation, leaky_relu_slope: f64) -> Result<f64> {
    let slope = activation.negative_slope(leaky_relu_slope);
    if !(0.0..=1.0).contains(&slope) {
        return Err(Error::model(
            ModelProblem::BadMetadata,
            format!("leaky_relu_slope {leaky_relu_slope} outside [0, 1]"),
        ));
    }
    Ok(slope)
}
