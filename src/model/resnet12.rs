//! RFS ResNet-12 ("Rethinking Few-Shot Image Classification", Tian et al. 2020; the encoder
//! of MGECL), inference mode. Key names follow the PyTorch RFS layout, so converted RFS/MGECL
//! checkpoints load unchanged; widths and input channels come from the weight shapes.
//!
//! Block: 3 x (conv3x3 no bias, BN), LeakyReLU after the first two; residual = conv1x1 + BN;
//! add, LeakyReLU, MaxPool2d(2) (floor). Then global average pool.
//!
//! [`ResNet12Params`] reads and checks the file once; [`ResNet12`] is candle's forward pass
//! over them and `super::cpu_fast` the CPU fast path.

use candle_core::{Device, Tensor};

use super::layout::{ConvBn, EncoderSpec};
use super::weights::{BatchNorm, BnAffine, WeightFile};
use crate::error::{Error, ModelProblem, Result};

/// The parameters of one residual block, as read from the file (OIHW f32 weights).
pub(crate) struct BlockParams {
    /// Input channels.
    pub(crate) c_in: usize,
    /// Output channels (the block's width).
    pub(crate) c_out: usize,
    /// conv1 `(c_out, c_in, 3, 3)`, conv2 and conv3 `(c_out, c_out, 3, 3)`.
    pub(crate) convs: [Vec<f32>; 3],
    /// bn1..bn3.
    pub(crate) bns: [BnAffine; 3],
    /// The shortcut's 1x1 convolution `(c_out, c_in, 1, 1)`.
    pub(crate) down_conv: Vec<f32>,
    /// The shortcut's BatchNorm.
    pub(crate) down_bn: BnAffine,
}

/// A checked ResNet-12 parameter set, independent of any engine.
pub(crate) struct ResNet12Params {
    pub(crate) blocks: Vec<BlockParams>,
    /// LeakyReLU negative slope, in [0, 1].
    pub(crate) slope: f64,
}

impl ResNet12Params {
    /// Reads the blocks `spec` describes.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] for any missing, misshapen, non-f32 or non-finite tensor, or
    /// a slope outside [0, 1].
    pub(crate) fn read(
        weights: &WeightFile<'_>,
        spec: &EncoderSpec,
        bn_eps: f64,
        slope: f64,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&slope) {
            return Err(Error::model(
                ModelProblem::BadMetadata,
                format!("leaky_relu_slope {slope} outside [0, 1]"),
            ));
        }
        let mut blocks = Vec::with_capacity(spec.widths.len());
        for block in spec.blocks() {
            let ([u1, u2, u3], Some(shortcut)) = (&block.units[..], &block.shortcut) else {
                unreachable!("a ResNet-12 block has three units and a shortcut")
            };
            let conv = |u: &ConvBn| weights.read_conv(u).map(|(w, _)| w);
            let bn = |u: &ConvBn| BnAffine::read(weights, u, bn_eps);
            blocks.push(BlockParams {
                c_in: u1.c_in,
                c_out: u1.c_out,
                convs: [conv(u1)?, conv(u2)?, conv(u3)?],
                bns: [bn(u1)?, bn(u2)?, bn(u3)?],
                down_conv: conv(shortcut)?,
                down_bn: bn(shortcut)?,
            });
        }
        Ok(ResNet12Params { blocks, slope })
    }

    /// Input channels of the first block.
    pub(crate) fn in_channels(&self) -> usize {
        self.blocks.first().map_or(0, |b| b.c_in)
    }
}

struct Block {
    convs: [Tensor; 3],
    bns: [BatchNorm; 3],
    down_conv: Tensor,
    down_bn: BatchNorm,
}

/// A ResNet-12 on a candle device.
pub(crate) struct ResNet12 {
    blocks: Vec<Block>,
    slope: f64,
}

/// `max(x, slope * x)`: LeakyReLU for 0 <= slope <= 1.
fn leaky_relu(x: &Tensor, slope: f64) -> candle_core::Result<Tensor> {
    x.maximum(&x.affine(slope, 0.0)?)
}

impl ResNet12 {
    /// Puts the parameters on `device`.
    ///
    /// # Errors
    /// When the device refuses a tensor.
    pub(crate) fn new(params: &ResNet12Params, device: &Device) -> candle_core::Result<Self> {
        let mut blocks = Vec::with_capacity(params.blocks.len());
        for b in &params.blocks {
            let (c, cin) = (b.c_out, b.c_in);
            let t = |v: &Vec<f32>, shape: [usize; 4]| Tensor::from_slice(v, &shape, device);
            blocks.push(Block {
                convs: [
                    t(&b.convs[0], [c, cin, 3, 3])?,
                    t(&b.convs[1], [c, c, 3, 3])?,
                    t(&b.convs[2], [c, c, 3, 3])?,
                ],
                bns: [
                    BatchNorm::new(&b.bns[0], device)?,
                    BatchNorm::new(&b.bns[1], device)?,
                    BatchNorm::new(&b.bns[2], device)?,
                ],
                down_conv: t(&b.down_conv, [c, cin, 1, 1])?,
                down_bn: BatchNorm::new(&b.down_bn, device)?,
            });
        }
        Ok(ResNet12 {
            blocks,
            slope: params.slope,
        })
    }

    /// Runs the network on a normalised NCHW batch; returns the four block outputs.
    pub(crate) fn forward_blocks(&self, input: &Tensor) -> candle_core::Result<Vec<Tensor>> {
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
