//! RFS Conv-4 (four conv3x3-with-bias, BN, ReLU blocks; MaxPool2d(2) after the first three;
//! global average pool), inference mode, PyTorch key names `layer{i}.0.*` (conv) and
//! `layer{i}.1.*` (BN). Width and input channels come from the weight shapes.

use candle_core::{Device, Tensor};

use super::weights::{conv_shape, BatchNorm, Weights};
use crate::error::Result;

struct Block {
    weight: Tensor,
    bias: Tensor,
    bn: BatchNorm,
    pool: bool,
}

/// A loaded Conv-4.
pub(crate) struct Conv4 {
    blocks: Vec<Block>,
    width: usize,
    in_channels: usize,
}

impl Conv4 {
    /// Loads the four blocks.
    ///
    /// # Errors
    /// [`crate::Error::InvalidModel`] for any missing, misshapen, non-f32 or non-finite tensor.
    pub(crate) fn load(weights: &Weights<'_>, bn_eps: f64, device: &Device) -> Result<Self> {
        let (width, in_channels) = conv_shape(weights, "layer1.0.weight", 3)?;
        let mut blocks = Vec::with_capacity(4);
        let mut c_in = in_channels;
        for i in 1..=4 {
            blocks.push(Block {
                weight: weights.tensor(
                    &format!("layer{i}.0.weight"),
                    &[width, c_in, 3, 3],
                    device,
                )?,
                bias: weights
                    .tensor(&format!("layer{i}.0.bias"), &[width], device)?
                    .reshape((1, width, 1, 1))?,
                bn: BatchNorm::load(weights, &format!("layer{i}.1"), width, bn_eps, device)?,
                pool: i < 4,
            });
            c_in = width;
        }
        Ok(Conv4 {
            blocks,
            width,
            in_channels,
        })
    }

    pub(crate) fn width(&self) -> usize {
        self.width
    }

    pub(crate) fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Runs the network on a normalised NCHW batch; returns the four block outputs.
    pub(crate) fn forward_blocks(&self, input: &Tensor) -> Result<Vec<Tensor>> {
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
