//! An encoder with BatchNorm folded into its convolutions: the one description the CPU
//! engines are built from (`cpu_fast`'s f32 one, `cpu_int8`'s quantised one).
//!
//! BatchNorm (and Conv-4's convolution bias) is folded into the convolution weights and a
//! per-channel bias, in f64, rounded once to f32. Weights are stored as the rows of an im2col
//! product: `(k * k * c_in, c_out)`, rows ordered `[ky][kx][c_in]`.

pub(crate) use mgecl_kernels::layout::Shape;
use mgecl_kernels::layout::{nchw_to_nhwc, oihw_to_hwio};
use mgecl_kernels::scratch::take_buffer;

use super::params::EncoderParams;

/// A 3x3 (pad 1) or 1x1 (pad 0), stride-1 convolution with BatchNorm folded in, followed by
/// `max(x, slope * x)` (after the block's shortcut, when this is the block's last
/// convolution).
pub(crate) struct FoldedConv {
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    /// Kernel side (1 or 3).
    pub(crate) k: usize,
    /// `(k * k * c_in, c_out)`, row-major, rows ordered `[ky][kx][c_in]`.
    pub(crate) weight: Vec<f32>,
    /// `(c_out,)`; a block's last convolution also holds its shortcut's.
    pub(crate) bias: Vec<f32>,
    /// Negative slope of the activation (0 = ReLU).
    pub(crate) slope: f32,
}

/// A ResNet block's shortcut: a 1x1 convolution (BatchNorm folded, its shift in the last
/// convolution's bias) of the block input, added to the last convolution's output before
/// its activation.
pub(crate) struct FoldedShortcut {
    pub(crate) c_in: usize,
    /// `(c_in, c_out)`, row-major.
    pub(crate) weight: Vec<f32>,
}

/// Convolutions in sequence, an optional shortcut around them, an optional 2x2 max-pool.
pub(crate) struct FoldedBlock {
    pub(crate) convs: Vec<FoldedConv>,
    pub(crate) shortcut: Option<FoldedShortcut>,
    pub(crate) pool: bool,
}

/// The engines' input: a normalised NCHW batch `(n, c, h, w)` as NHWC in a pooled buffer
/// (give it back with `give_buffer`), and its shape.
pub(crate) fn nhwc_input(
    nchw: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
) -> (Vec<f32>, Shape) {
    assert_eq!(nchw.len(), n * c * h * w);
    let mut x = take_buffer(nchw.len());
    nchw_to_nhwc(nchw, (n, c, h * w), &mut x);
    (x, Shape { n, h, w })
}

/// A folded encoder: blocks, then a global average pool.
pub(crate) struct FoldedNet {
    pub(crate) blocks: Vec<FoldedBlock>,
    pub(crate) in_channels: usize,
}

/// `w` (OIHW) times `scale[co]` (in f64, rounded once) as the rows of an im2col product
/// `(k * k * c_in, c_out)`.
fn folded_rows(w: &[f32], scale: &[f64], c_in: usize, k: usize) -> Vec<f32> {
    oihw_to_hwio(w, (scale.len(), c_in, k), |co, v| {
        (f64::from(v) * scale[co]) as f32
    })
}

impl FoldedConv {
    fn new(c_in: usize, k: usize, weight: &[f32], scale: &[f64], bias: &[f64], slope: f64) -> Self {
        let c_out = scale.len();
        let rows = folded_rows(weight, scale, c_in, k);
        FoldedConv {
            c_in,
            c_out,
            k,
            weight: rows,
            bias: bias.iter().map(|&v| v as f32).collect(),
            slope: slope as f32,
        }
    }
}

impl FoldedNet {
    /// Folds an encoder's BatchNorms (and convolution biases). Consumes the parameters block
    /// by block, so the file's copy and the folded one overlap by at most one block.
    pub(crate) fn from_params(params: EncoderParams) -> Self {
        let in_channels = params.in_channels();
        let blocks = params
            .blocks
            .into_iter()
            .map(|b| {
                let last = b.units.len() - 1;
                let convs = b
                    .units
                    .iter()
                    .enumerate()
                    .map(|(i, u)| {
                        // BN(conv(x) + bias) = conv(x) * scale + (bias * scale + shift); the
                        // last convolution's bias also carries the shortcut BatchNorm's shift.
                        let bias: Vec<f64> = (0..u.c_out)
                            .map(|c| {
                                let conv_bias = u.bias.as_ref().map_or(0.0, |v| f64::from(v[c]));
                                let shortcut_shift = match (&b.shortcut, i == last) {
                                    (Some(s), true) => s.bn.shift[c],
                                    _ => 0.0,
                                };
                                conv_bias * u.bn.scale[c] + u.bn.shift[c] + shortcut_shift
                            })
                            .collect();
                        FoldedConv::new(u.c_in, u.kernel, &u.weight, &u.bn.scale, &bias, b.slope)
                    })
                    .collect();
                let shortcut = b.shortcut.map(|s| FoldedShortcut {
                    c_in: s.c_in,
                    weight: folded_rows(&s.weight, &s.bn.scale, s.c_in, s.kernel),
                });
                FoldedBlock {
                    convs,
                    shortcut,
                    pool: b.pool,
                }
            })
            .collect();
        FoldedNet {
            blocks,
            in_channels,
        }
    }
}
