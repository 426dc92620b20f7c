//! candle's forward pass of any encoder the layout describes, inference mode: the reference
//! the CPU engines are tested against (`tests/encoder_parity.rs`), and the engine on CUDA and
//! Metal. Built from the checked parameters (`super::params`).

use candle_core::{Device, Tensor};

use super::params::{EncoderParams, UnitParams};
use super::weights::BatchNorm;

/// A convolution (stride 1, padding `kernel / 2`) with its bias, then BatchNorm.
struct Unit {
    weight: Tensor,
    /// `(1, c_out, 1, 1)`.
    bias: Option<Tensor>,
    bn: BatchNorm,
    padding: usize,
}

struct Block {
    units: Vec<Unit>,
    shortcut: Option<Unit>,
    slope: f64,
    pool: bool,
}

/// An encoder on a candle device.
pub(crate) struct CandleNet {
    blocks: Vec<Block>,
}

impl Unit {
    fn new(p: &UnitParams, device: &Device) -> candle_core::Result<Self> {
        let k = p.kernel;
        Ok(Unit {
            weight: Tensor::from_slice(&p.weight, (p.c_out, p.c_in, k, k), device)?,
            bias: p
                .bias
                .as_ref()
                .map(|b| Tensor::from_slice(b, (1, p.c_out, 1, 1), device))
                .transpose()?,
            bn: BatchNorm::new(&p.bn, device)?,
            padding: k / 2,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = x.conv2d(&self.weight, self.padding, 1, 1, 1)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        self.bn.forward(&y)
    }
}

/// `max(x, slope * x)`: ReLU at slope 0, LeakyReLU for 0 < slope <= 1.
fn activation(x: &Tensor, slope: f64) -> candle_core::Result<Tensor> {
    if slope == 0.0 {
        x.relu()
    } else {
        x.maximum(&x.affine(slope, 0.0)?)
    }
}

impl CandleNet {
    /// Puts the parameters on `device`.
    ///
    /// # Errors
    /// When the device refuses a tensor.
    pub(crate) fn new(params: &EncoderParams, device: &Device) -> candle_core::Result<Self> {
        let blocks = params
            .blocks
            .iter()
            .map(|b| {
                Ok(Block {
                    units: b
                        .units
                        .iter()
                        .map(|u| Unit::new(u, device))
                        .collect::<candle_core::Result<_>>()?,
                    shortcut: b
                        .shortcut
                        .as_ref()
                        .map(|u| Unit::new(u, device))
                        .transpose()?,
                    slope: b.slope,
                    pool: b.pool,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(CandleNet { blocks })
    }

    /// Runs the network on a normalised NCHW batch; returns every block's output.
    pub(crate) fn forward_blocks(&self, input: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let mut x = input.clone();
        let mut outputs = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let mut out = x.clone();
            for (i, unit) in b.units.iter().enumerate() {
                out = unit.forward(&out)?;
                if i + 1 < b.units.len() {
                    out = activation(&out, b.slope)?;
                }
            }
            if let Some(shortcut) = &b.shortcut {
                out = (out + shortcut.forward(&x)?)?;
            }
            x = activation(&out, b.slope)?;
            if b.pool {
                x = x.max_pool2d(2)?;
            }
            outputs.push(x.clone());
        }
        Ok(outputs)
    }
}
