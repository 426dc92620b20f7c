//! The one description of each encoder architecture: its blocks, the convolution + BatchNorm
//! units in them, and the tensors those hold, under PyTorch RFS's names (so converted RFS and
//! MGECL checkpoints load unchanged) with their shapes and roles. The weight reader, both
//! inference engines, the checkpoint converter and the training networks all walk this
//! description instead of spelling tensor names themselves.
//!
//! - ResNet-12, block `i` (1-4): `layer{i}.0.conv{1,2,3}` (3x3, no bias) each with
//!   `layer{i}.0.bn{1,2,3}`, LeakyReLU after the first two; the shortcut `layer{i}.0.downsample.0`
//!   (1x1) with BatchNorm `layer{i}.0.downsample.1`; add, LeakyReLU, 2x2 max-pool.
//! - Conv-4, block `i`: `layer{i}.0` (3x3 with bias), BatchNorm `layer{i}.1`, ReLU, 2x2 max-pool
//!   after blocks 1-3.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ModelProblem, Result};

/// The encoder architectures mgecl runs (in metadata and JSON: `resnet12`, `conv4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Architecture {
    /// RFS ResNet-12: four residual blocks, LeakyReLU, max-pool, global average pool.
    ResNet12,
    /// RFS Conv-4: four conv-BN-ReLU blocks, max-pool after the first three, global average pool.
    Conv4,
}

/// Blocks of every architecture.
pub const BLOCKS: usize = 4;

impl Architecture {
    /// Every architecture, in the order files are recognised.
    pub const ALL: [Architecture; 2] = [Architecture::ResNet12, Architecture::Conv4];

    /// The name used in metadata (`resnet12`, `conv4`).
    pub fn name(self) -> &'static str {
        match self {
            Architecture::ResNet12 => "resnet12",
            Architecture::Conv4 => "conv4",
        }
    }

    /// The name of block `block`'s (1-based) first convolution weight: its shape gives the
    /// block's width (and, for block 1, the input channels); block 1's tells the architecture.
    pub fn block_conv_weight(self, block: usize) -> String {
        match self {
            Architecture::ResNet12 => format!("layer{block}.0.conv1.weight"),
            Architecture::Conv4 => format!("layer{block}.0.weight"),
        }
    }

    /// The architecture whose first convolution weight `has` finds, in [`Architecture::ALL`]
    /// order.
    pub fn detect(has: impl Fn(&str) -> bool) -> Option<Self> {
        Self::ALL.into_iter().find(|a| has(&a.block_conv_weight(1)))
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Architecture {
    type Err = Error;

    /// # Errors
    /// [`Error::InvalidModel`] ([`ModelProblem::BadMetadata`]) for an unknown name.
    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "resnet12" | "resnet-12" => Ok(Architecture::ResNet12),
            "conv4" | "conv-4" | "convnet4" => Ok(Architecture::Conv4),
            other => Err(Error::model(
                ModelProblem::BadMetadata,
                format!("unknown architecture {other:?} (expected resnet12 or conv4)"),
            )),
        }
    }
}

/// An encoder's shape: everything its tensors' shapes follow from. Serialised in training
/// checkpoints' configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderSpec {
    /// The architecture.
    pub arch: Architecture,
    /// Block widths, four (Conv-4: four equal values).
    pub widths: Vec<usize>,
    /// Input channels (1 gray, 3 RGB).
    pub in_channels: usize,
}

/// What a tensor of an encoder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorRole {
    /// A convolution kernel `(c_out, c_in, k, k)`.
    ConvWeight,
    /// A convolution bias `(c_out,)`.
    ConvBias,
    /// BatchNorm's scale (gamma), trained.
    BnWeight,
    /// BatchNorm's shift (beta), trained.
    BnBias,
    /// BatchNorm's running mean: a statistic, saved, never trained.
    BnRunningMean,
    /// BatchNorm's running variance: a statistic, saved, never trained.
    BnRunningVar,
}

impl TensorRole {
    /// Whether training updates it by gradient (BatchNorm's running statistics are not).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // training's
    pub fn is_trained(self) -> bool {
        !matches!(self, TensorRole::BnRunningMean | TensorRole::BnRunningVar)
    }
}

/// One tensor of an encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Its name in the file.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// What it holds.
    pub role: TensorRole,
}

/// A stride-1 convolution (padding `kernel / 2`) followed by BatchNorm, named by the prefixes
/// of their tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvBn {
    /// Prefix of the convolution's tensors (`layer1.0.conv1`: `.weight`, `.bias`).
    pub conv: String,
    /// Prefix of the BatchNorm's tensors (`layer1.0.bn1`: `.weight`, `.bias`,
    /// `.running_mean`, `.running_var`).
    pub bn: String,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel side (3 or 1).
    pub kernel: usize,
    /// Whether the convolution has a bias (Conv-4's do).
    pub conv_bias: bool,
}

impl ConvBn {
    /// The convolution weight's name.
    pub fn weight(&self) -> String {
        format!("{}.weight", self.conv)
    }

    /// The convolution bias's name (meaningful when [`ConvBn::conv_bias`]).
    pub fn bias(&self) -> String {
        format!("{}.bias", self.conv)
    }

    /// Its tensors: weight, bias (if any), then BatchNorm's weight, bias, running mean and
    /// running variance.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let c = self.c_out;
        let mut tensors = vec![TensorSpec {
            name: self.weight(),
            shape: vec![c, self.c_in, self.kernel, self.kernel],
            role: TensorRole::ConvWeight,
        }];
        if self.conv_bias {
            tensors.push(TensorSpec {
                name: self.bias(),
                shape: vec![c],
                role: TensorRole::ConvBias,
            });
        }
        for (suffix, role) in [
            ("weight", TensorRole::BnWeight),
            ("bias", TensorRole::BnBias),
            ("running_mean", TensorRole::BnRunningMean),
            ("running_var", TensorRole::BnRunningVar),
        ] {
            tensors.push(TensorSpec {
                name: format!("{}.{suffix}", self.bn),
                shape: vec![c],
                role,
            });
        }
        tensors
    }
}

/// LeakyReLU's negative slope when a model file does not say (`leaky_relu_slope`): RFS's.
pub const DEFAULT_LEAKY_RELU_SLOPE: f64 = 0.1;
/// BatchNorm's epsilon when a model file does not say (`bn_eps`): PyTorch's.
pub const DEFAULT_BN_EPS: f64 = 1e-5;

/// The nonlinearity after a block's units. Exhaustive on purpose: every engine matches on
/// it, so a new one fails to compile where it is not yet implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `max(x, slope * x)`, the slope a model file's `leaky_relu_slope` (RFS: 0.1).
    LeakyRelu,
}

impl Activation {
    /// Its negative slope: every engine applies `max(x, slope * x)`, with `leaky_relu_slope`
    /// for LeakyReLU and 0 for ReLU.
    pub fn negative_slope(self, leaky_relu_slope: f64) -> f64 {
        match self {
            Activation::Relu => 0.0,
            Activation::LeakyRelu => leaky_relu_slope,
        }
    }
}

/// One block of an encoder, in forward order: each unit (convolution + BatchNorm) followed
/// by the activation, except that the last unit's output first has the shortcut's added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    /// The main path's units (ResNet-12: three; Conv-4: one).
    pub units: Vec<ConvBn>,
    /// A 1x1 projection of the block's input, added before the last activation (ResNet-12).
    pub shortcut: Option<ConvBn>,
    /// The activation after every unit (the last one after the shortcut's add).
    pub activation: Activation,
    /// Whether a 2x2 max-pool ends the block.
    pub pool: bool,
}

impl EncoderSpec {
    /// Checks that the shape can be built: four non-zero widths (equal for Conv-4), at least
    /// one input channel.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what is wrong.
    pub fn check(&self) -> Result<()> {
        if self.widths.len() != BLOCKS || self.widths.contains(&0) || self.in_channels == 0 {
            return Err(Error::InvalidArgument(format!(
                "bad network shape {self:?}: four non-zero widths and at least one input channel"
            )));
        }
        if self.arch == Architecture::Conv4 && self.widths.iter().any(|&w| w != self.widths[0]) {
            return Err(Error::InvalidArgument(
                "conv4 needs four equal widths".into(),
            ));
        }
        Ok(())
    }

    /// The smallest input side whose last block still has a pixel: each 2x2 max-pool halves
    /// the side (rounding down).
    pub fn min_input_side(&self) -> usize {
        1 << self.blocks().iter().filter(|b| b.pool).count()
    }

    /// Length of the feature vector (the last block's width).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // training's
    pub fn feature_dim(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }

    /// The blocks, in forward order.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut c_in = self.in_channels;
        let mut blocks = Vec::with_capacity(self.widths.len());
        for (i, &c) in self.widths.iter().enumerate() {
            let layer = format!("layer{}", i + 1);
            let unit =
                |conv: String, bn: String, c_in: usize, kernel: usize, conv_bias: bool| ConvBn {
                    conv,
                    bn,
                    c_in,
                    c_out: c,
                    kernel,
                    conv_bias,
                };
            blocks.push(match self.arch {
                Architecture::ResNet12 => BlockSpec {
                    units: (1..=3)
                        .map(|k| {
                            let cin = if k == 1 { c_in } else { c };
                            let (conv, bn) =
                                (format!("{layer}.0.conv{k}"), format!("{layer}.0.bn{k}"));
                            unit(conv, bn, cin, 3, false)
                        })
                        .collect(),
                    shortcut: Some(unit(
                        format!("{layer}.0.downsample.0"),
                        format!("{layer}.0.downsample.1"),
                        c_in,
                        1,
                        false,
                    )),
                    activation: Activation::LeakyRelu,
                    pool: true,
                },
                Architecture::Conv4 => BlockSpec {
                    units: vec![unit(
                        format!("{layer}.0"),
                        format!("{layer}.1"),
                        c_in,
                        3,
                        true,
                    )],
                    shortcut: None,
                    activation: Activation::Relu,
                    pool: i + 1 < BLOCKS,
                },
            });
            c_in = c;
        }
        blocks
    }

    /// The most f32 values one image's forward pass holds at once, at input size `(h, w)`:
    /// the input twice (as given and in the engine's layout), then, at the block where it
    /// peaks, the block's input, its convolution outputs (two alive in a chain of units, one
    /// for a single unit) and the pooled output. The basis of
    /// [`LoadOptions::max_embed_bytes`](crate::LoadOptions::max_embed_bytes); saturates
    /// rather than overflowing.
    pub fn forward_values(&self, (h, w): (usize, usize)) -> u64 {
        let input = (self.in_channels as u64).saturating_mul((h as u64).saturating_mul(w as u64));
        let (mut h, mut w, mut c_in) = (h as u64, w as u64, self.in_channels as u64);
        let mut peak = 0u64;
        for (block, &c_out) in self.blocks().iter().zip(&self.widths) {
            let pixels = h.saturating_mul(w);
            let block_in = pixels.saturating_mul(c_in);
            let block_out = pixels.saturating_mul(c_out as u64);
            let pooled = if block.pool { block_out / 4 } else { 0 };
            let outputs = if block.units.len() > 1 { 2 } else { 1 };
            let held = block_in
                .saturating_add(block_out.saturating_mul(outputs))
                .saturating_add(pooled);
            peak = peak.max(held);
            if block.pool {
                (h, w) = (h / 2, w / 2);
            }
            c_in = c_out as u64;
        }
        input.saturating_mul(2).saturating_add(peak)
    }

    /// Every tensor, block by block: the units in order, then the shortcut.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        self.blocks()
            .iter()
            .flat_map(|b| b.units.iter().chain(&b.shortcut))
            .flat_map(ConvBn::tensors)
            .collect()
    }

    /// Reads the shape from the tensors' shapes (`shape_of` gives a tensor's shape, `None`
    /// when absent): each block's width from its first convolution, the input channels from
    /// block 1's.
    ///
    /// # Errors
    /// [`Error::InvalidModel`]: `MissingTensor` when a block's first convolution is absent,
    /// `WrongShape` when it is not `(out, in, 3, 3)` with non-zero sides or Conv-4's widths
    /// differ.
    pub fn from_shapes(
        arch: Architecture,
        shape_of: impl Fn(&str) -> Option<Vec<usize>>,
    ) -> Result<Self> {
        let mut widths = Vec::with_capacity(BLOCKS);
        let mut in_channels = 0;
        for block in 1..=BLOCKS {
            let name = arch.block_conv_weight(block);
            let shape = shape_of(&name).ok_or_else(|| {
                Error::model(
                    ModelProblem::MissingTensor,
                    format!("tensor {name:?} is missing"),
                )
            })?;
            match shape.as_slice() {
                &[out, inp, 3, 3] if out > 0 && inp > 0 => {
                    widths.push(out);
                    if block == 1 {
                        in_channels = inp;
                    }
                }
                _ => {
                    return Err(Error::model(
                        ModelProblem::WrongShape,
                        format!("tensor {name:?} has shape {shape:?}, expected (out, in, 3, 3)"),
                    ))
                }
            }
        }
        let spec = EncoderSpec {
            arch,
            widths,
            in_channels,
        };
        spec.check()
            .map_err(|e| Error::model(ModelProblem::WrongShape, e.to_string()))?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &EncoderSpec) -> Vec<String> {
        spec.tensors().into_iter().map(|t| t.name).collect()
    }

    /// The names and shapes of PyTorch's RFS modules (`resnet12(...).state_dict()` and
    /// `ConvNet4`), written out by hand.
    #[test]
    fn tensors_are_rfs_state_dict_entries() {
        let resnet = EncoderSpec {
            arch: Architecture::ResNet12,
            widths: vec![64, 160, 320, 640],
            in_channels: 3,
        };
        let tensors = resnet.tensors();
        // Per block: 3 convs + 4 BN tensors each, shortcut conv + 4 BN tensors.
        assert_eq!(tensors.len(), 4 * (3 * 5 + 5));
        assert_eq!(tensors[0].name, "layer1.0.conv1.weight");
        assert_eq!(tensors[0].shape, [64, 3, 3, 3]);
        assert_eq!(tensors[1].name, "layer1.0.bn1.weight");
        assert_eq!(tensors[4].name, "layer1.0.bn1.running_var");
        assert_eq!(tensors[5].name, "layer1.0.conv2.weight");
        assert_eq!(tensors[5].shape, [64, 64, 3, 3]);
        assert_eq!(tensors[15].name, "layer1.0.downsample.0.weight");
        assert_eq!(tensors[15].shape, [64, 3, 1, 1]);
        assert_eq!(tensors[19].name, "layer1.0.downsample.1.running_var");
        assert_eq!(tensors[20].name, "layer2.0.conv1.weight");
        assert_eq!(tensors[20].shape, [160, 64, 3, 3]);
        assert!(!tensors[19].role.is_trained() && tensors[16].role.is_trained());

        let conv4 = EncoderSpec {
            arch: Architecture::Conv4,
            widths: vec![64; 4],
            in_channels: 1,
        };
        assert_eq!(
            names(&conv4)[..7],
            [
                "layer1.0.weight",
                "layer1.0.bias",
                "layer1.1.weight",
                "layer1.1.bias",
                "layer1.1.running_mean",
                "layer1.1.running_var",
                "layer2.0.weight",
            ]
        );
        let pools: Vec<bool> = conv4.blocks().iter().map(|b| b.pool).collect();
        assert_eq!(pools, [true, true, true, false]);
    }

    #[test]
    fn forward_values_count_by_hand() {
        // Conv-4 of width 64 on 28x28 gray: input 784 (twice); block 1 peaks: 784 in,
        // 784 x 64 out (one unit), 784 x 64 / 4 pooled.
        let conv4 = EncoderSpec {
            arch: Architecture::Conv4,
            widths: vec![64; 4],
            in_channels: 1,
        };
        assert_eq!(
            conv4.forward_values((28, 28)),
            2 * 784 + 784 + 784 * 64 + 784 * 16
        );
        // ResNet-12 64-160-320-640 on 84x84 RGB: block 1 peaks (block 2 works at 42x42).
        let resnet = EncoderSpec {
            arch: Architecture::ResNet12,
            widths: vec![64, 160, 320, 640],
            in_channels: 3,
        };
        let (p1, p2) = (84 * 84, 42 * 42);
        let block1 = p1 * 3 + 2 * p1 * 64 + p1 * 16;
        let block2 = p2 * 64 + 2 * p2 * 160 + p2 * 40;
        assert!(block1 > block2);
        assert_eq!(resnet.forward_values((84, 84)), 2 * 3 * p1 + block1);
        // Sizes no machine holds saturate instead of wrapping.
        assert_eq!(conv4.forward_values((usize::MAX, usize::MAX)), u64::MAX);
    }

    #[test]
    fn the_shape_is_read_back_from_the_tensors() {
        let spec = EncoderSpec {
            arch: Architecture::ResNet12,
            widths: vec![16, 40, 80, 160],
            in_channels: 1,
        };
        let tensors = spec.tensors();
        let shape_of = |n: &str| {
            tensors
                .iter()
                .find(|t| t.name == n)
                .map(|t| t.shape.clone())
        };
        assert_eq!(
            EncoderSpec::from_shapes(Architecture::ResNet12, shape_of).unwrap(),
            spec
        );
        assert_eq!(
            Architecture::detect(|n| shape_of(n).is_some()),
            Some(Architecture::ResNet12)
        );
        let err = EncoderSpec::from_shapes(Architecture::Conv4, shape_of).unwrap_err();
        assert!(err.to_string().contains("layer1.0.weight"), "{err}");
    }
}
