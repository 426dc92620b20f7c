//! RFS ResNet-12 ("Rethinking Few-Shot Image Classification", Tian et al. 2020; the encoder
//! of MGECL), inference mode. Key names follow the PyTorch RFS layout, so converted RFS/MGECL
//! checkpoints load unchanged; widths and input channels come from the weight shapes.
//!
//! Block: 3 x (conv3x3 no bias, BN), LeakyReLU after the first two; residual = conv1x1 + BN;
//! add, LeakyReLU, MaxPool2d(2) (floor). Then global average pool.

use candle_core::{Device, Tensor};

use super::weights::{conv_shape, BatchNorm, Weights};
use crate::error::{Error, ModelProblem, Result};

struct Block {
    convs: [Tensor; 3],
    bns: [BatchNorm; 3],
    down_conv: Tensor,
    down_bn: BatchNorm,
}

/// A loaded ResNet-12.
pub(crate) struct ResNet12 {
    blocks: Vec<Block>,
    slope: f64,
    widths: Vec<usize>,
    in_channels: usize,
}

/// `max(x, slope * x)`: LeakyReLU for 0 <= slope <= 1.
fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    Ok(x.maximum(&x.affine(slope, 0.0)?)?)
}

impl ResNet12 {
    /// Loads the four blocks, reading widths from `layer{i}.0.conv1.weight`.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] for any missing, misshapen, non-f32 or non-finite tensor.
    pub(crate) fn load(
        weights: &Weights<'_>,
        bn_eps: f64,
        slope: f64,
        device: &Device,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&slope) {
            return Err(Error::model(
                ModelProblem::BadMetadata,
                format!("leaky_relu_slope {slope} outside [0, 1]"),
            ));
        }
        let (_, in_channels) = conv_shape(weights, "layer1.0.conv1.weight", 3)?;
        let mut blocks = Vec::with_capacity(4);
        let mut widths = Vec::with_capacity(4);
        let mut c_in = in_channels;
        for i in 1..=4 {
            let p = format!("layer{i}.0");
            let (c, _) = conv_shape(weights, &format!("{p}.conv1.weight"), 3)?;
            let conv = |name: &str, cin: usize, k: usize| {
                weights.tensor(&format!("{p}.{name}.weight"), &[c, cin, k, k], device)
            };
            let bn =
                |name: &str| BatchNorm::load(weights, &format!("{p}.{name}"), c, bn_eps, device);
            blocks.push(Block {
                convs: [
                    conv("conv1", c_in, 3)?,
                    conv("conv2", c, 3)?,
                    conv("conv3", c, 3)?,
                ],
                bns: [bn("bn1")?, bn("bn2")?, bn("bn3")?],
                down_conv: conv("downsample.0", c_in, 1)?,
                down_bn: bn("downsample.1")?,
            });
            widths.push(c);
            c_in = c;
        }
        Ok(ResNet12 {
            blocks,
            slope,
            widths,
            in_channels,
        })
    }

    pub(crate) fn widths(&self) -> &[usize] {
        &self.widths
    }

    pub(crate) fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Runs the network on a normalised NCHW batch; returns the four block outputs.
    pub(crate) fn forward_blocks(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = input.clone();
        let mut outputs = Vec::with_capacity(4);
        for b in &self.blocks {
            let mut out = x.clone();
            for (k, (conv, bn)) in b.convs.iter().zip(&b.bns).enumerate() {
                out = bn.forward(&out.conv2d(conv, 1, 1, 1, 1)?)?;
                if k < 2 {
                    out = leaky_relu(&out, self.slope)?;
                }
            }
            let residual = b.down_bn.forward(&x.conv2d(&b.down_conv, 0, 1, 1, 1)?)?;
            out = leaky_relu(&(out + residual)?, self.slope)?;
            x = out.max_pool2d(2)?;
            outputs.push(x.clone());
        }
        Ok(outputs)
    }
}
