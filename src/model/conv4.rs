//! RFS Conv-4 (four conv3x3-with-bias, BN, ReLU blocks; MaxPool2d(2) after the first three;
//! global average pool), inference mode, PyTorch key names `layer{i}.0.*` (conv) and
//! `layer{i}.1.*` (BN). Width and input channels come from the weight shapes.
//!
//! [`Conv4Params`] reads and checks the file once; [`Conv4`] is candle's forward pass over
//! them and `super::cpu_fast` the CPU fast path.

use candle_core::{Device, Tensor};

use super::layout::EncoderSpec;
use super::weights::{BatchNorm, BnAffine, WeightFile};
use crate::error::Result;

/// The parameters of one block, as read from the file.
pub(crate) struct BlockParams {
    /// Input channels.
    pub(crate) c_in: usize,
    /// Convolution weight `(width, c_in, 3, 3)`, OIHW.
    pub(crate) weight: Vec<f32>,
    /// Convolution bias `(width,)`.
    pub(crate) bias: Vec<f32>,
    /// The block's BatchNorm.
    pub(crate) bn: BnAffine,
    /// Whether a 2x2 max-pool follows (blocks 1-3).
    pub(crate) pool: bool,
}

/// A checked Conv-4 parameter set, independent of any engine.
pub(crate) struct Conv4Params {
    pub(crate) blocks: Vec<BlockParams>,
    pub(crate) width: usize,
    pub(crate) in_channels: usize,
}

impl Conv4Params {
    /// Reads the blocks `spec` describes.
    ///
    /// # Errors
    /// [`crate::Error::InvalidModel`] for any missing, misshapen, non-f32 or non-finite tensor.
    pub(crate) fn read(weights: &WeightFile<'_>, spec: &EncoderSpec, bn_eps: f64) -> Result<Self> {
        let mut blocks = Vec::with_capacity(spec.widths.len());
        for block in spec.blocks() {
            let unit = &block.units[0];
            let (weight, bias) = weights.read_conv(unit)?;
            blocks.push(BlockParams {
                c_in: unit.c_in,
                weight,
                bias,
                bn: BnAffine::read(weights, unit, bn_eps)?,
                pool: block.pool,
            });
        }
        Ok(Conv4Params {
            blocks,
            width: spec.widths[0],
            in_channels: spec.in_channels,
        })
    }
}

struct Block {
    weight: Tensor,
    bias: Tensor,
    bn: BatchNorm,
    pool: bool,
}

/// A Conv-4 on a candle device.
pub(crate) struct Conv4 {
    blocks: Vec<Block>,
}

impl Conv4 {
    /// Puts the parameters on `device`.
    ///
    /// # Errors
    /// When the device refuses a tensor.
    pub(crate) fn new(params: &Conv4Params, device: &Device) -> candle_core::Result<Self> {
        let width = params.width;
        let mut blocks = Vec::with_capacity(params.blocks.len());
        for b in &params.blocks {
            blocks.push(Block {
                weight: Tensor::from_slice(&b.weight, (width, b.c_in, 3, 3), device)?,
                bias: Tensor::from_slice(&b.bias, (1, width, 1, 1), device)?,
                bn: BatchNorm::new(&b.bn, device)?,
                pool: b.pool,
            });
        }
        Ok(Conv4 { blocks })
    }

    /// Runs the network on a normalised NCHW batch; returns the four block outputs.
    pub(crate) fn forward_blocks(&self, input: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let mut x = input.clone();
        let mut outputs = Vec::with_capacity(4);
        for b in &self.blocks {
            let conv = x.conv2d(&b.weight, 1, 1, 1, 1)?.broadcast_add(&b.bias)?;
            x = b.bn.forward(&conv)?.relu()?;
            if b.pool {
                x = x.max_pool2d(2)?;
            }
            outputs.push(x.clone());
        }
        Ok(outputs)
    }
}
