//! The int8 CPU engine: a folded encoder (`super::folded`) with int8 weights and activations.
//!
//! - Weights: symmetric `s8`, one scale per output channel (`mgecl_kernels::int8::
//!   quantize_weights`). Activations: affine `u8` codes, one scale and zero point per tensor
//!   (the input of each convolution; a block's shortcut reads the block input's codes),
//!   calibrated on images ([`QuantNet::calibrate`]).
//! - Each convolution is an im2col product of codes (`im2col_codes`) times the packed
//!   weights, exact in `i32` (`gemm_u8s8`), then one f32 epilogue per value:
//!   `y = (acc + offset[j]) * multiplier[j] + bias[j]`, plus the shortcut's product the same
//!   way, then `max(y, slope * y)`. `offset` undoes the kernel's shift for the input's zero
//!   point; `multiplier = input scale * weight scale`. Max-pool and the global average pool
//!   run on the f32 outputs; the next convolution quantises its input.
//! - Integer products and a fixed order of f32 operations: the features do not depend on the
//!   thread count or the kernel (AVX-512 VNNI, AVX-VNNI, portable) that runs.

use mgecl_kernels::conv::im2col_codes;
use mgecl_kernels::int8::{quantize_activations, quantize_weights, Kernel, PackedWeights};
use mgecl_kernels::layout::{nchw_to_nhwc, nhwc_to_nchw};
use mgecl_kernels::pool::{global_avg_pool, max_pool_2x2, max_pool_2x2_codes};
use mgecl_kernels::scratch::{give_buffer, take_buffer, with_int8_scratch, with_scratch};
use rayon::prelude::*;

use super::cpu_fast::FastOutput;
use super::folded::{FoldedConv, FoldedNet};

/// Output pixels one task computes: an im2col chunk of at most 1.5 MB (640-wide 3x3).
const CHUNK_ROWS: usize = 256;
/// Values one task quantises.
const QUANTIZE_CHUNK: usize = 1 << 16;
/// Most activation values the calibration examines per tensor (an even sample of the rest).
const CALIBRATION_SAMPLE: usize = 1 << 20;

/// How a tensor's f32 values map to `u8` codes: `x ~ scale * (code - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ActivationQuant {
    pub(crate) scale: f32,
    pub(crate) zero_point: u8,
}

impl ActivationQuant {
    /// The codes of `x`, quantised in parallel.
    fn quantize(self, x: &[f32]) -> Vec<u8> {
        let mut codes = vec![0u8; x.len()];
        codes
            .par_chunks_mut(QUANTIZE_CHUNK)
            .zip(x.par_chunks(QUANTIZE_CHUNK))
            .for_each(|(out, x)| quantize_activations(x, self.scale, self.zero_point, out));
        codes
    }

    /// The range that minimises the squared rounding and clipping error over (a sample of)
    /// `x`: from the smallest value (or 0) to a fraction (1 down to 0.2) of the largest.
    pub(crate) fn calibrate(x: &[f32]) -> Self {
        let step = x.len().div_ceil(CALIBRATION_SAMPLE).max(1);
        let sample: Vec<f32> = x.iter().step_by(step).copied().collect();
        let low = sample.iter().copied().fold(0.0f32, f32::min);
        let high = sample.iter().copied().fold(0.0f32, f32::max);
        if high - low <= 0.0 {
            return ActivationQuant {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let candidate = |fraction: f32| {
            let high = high * fraction;
            let scale = (high - low) / 255.0;
            let zero_point = (-low / scale).round().clamp(0.0, 255.0) as u8;
            ActivationQuant { scale, zero_point }
        };
        let error = |q: ActivationQuant| {
            let (inverse, zero) = (1.0 / q.scale, f32::from(q.zero_point));
            sample
                .iter()
                .map(|&v| {
                    let code = ((v * inverse).round_ties_even() + zero).clamp(0.0, 255.0);
                    let d = f64::from(v - (code - zero) * q.scale);
                    d * d
                })
                .sum::<f64>()
        };
        (20..=100)
            .rev()
            .map(|percent| candidate(percent as f32 / 100.0))
            .map(|q| (error(q), q))
            .fold(
                None,
                |best: Option<(f64, ActivationQuant)>, (e, q)| match best {
                    Some((b, _)) if b <= e => best,
                    _ => Some((e, q)),
                },
            )
            .map_or(candidate(1.0), |(_, q)| q)
    }
}

/// A convolution's (or shortcut's) int8 weights: `(k * k * c_in, c_out)` codes, rows
/// `[ky][kx][c_in]`, one scale per output channel.
pub(crate) struct QuantWeights {
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) k: usize,
    pub(crate) codes: Vec<i8>,
    pub(crate) scales: Vec<f32>,
    packed: PackedWeights,
    /// `sum_l codes[l][j]`, per column.
    column_sums: Vec<i32>,
}

impl QuantWeights {
    /// Weights from their codes and scales.
    pub(crate) fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        codes: Vec<i8>,
        scales: Vec<f32>,
    ) -> Self {
        let depth = k * k * c_in;
        assert_eq!(codes.len(), depth * c_out);
        assert_eq!(scales.len(), c_out);
        let packed = PackedWeights::new(&codes, depth, c_out);
        let column_sums = (0..c_out)
            .map(|j| (0..depth).map(|l| i32::from(codes[l * c_out + j])).sum())
            .collect();
        QuantWeights {
            c_in,
            c_out,
            k,
            codes,
            scales,
            packed,
            column_sums,
        }
    }

    /// Folded f32 weights `(k * k * c_in, c_out)` quantised per output channel.
    fn quantize(c_in: usize, c_out: usize, k: usize, weight: &[f32]) -> Self {
        let (codes, scales) = quantize_weights(weight, k * k * c_in, c_out);
        QuantWeights::new(c_in, c_out, k, codes, scales)
    }

    /// The product of the codes of `input` (NHWC, `(h, w)` images, padded with the code
    /// `zero_point`) at output pixels `pixels` as the kernel computes it, `sum_l (code[p][l] -
    /// ZERO_POINT) * w[l][j]`, into `acc` (`pixels.len() * c_out`), with `cols` (at least
    /// `pixels.len()` rows of [`QuantWeights::row_stride`]) as scratch. Adding
    /// [`QuantWeights::offsets`] makes it the product of `code - zero_point`.
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        input: &[u8],
        (h, w): (usize, usize),
        zero_point: u8,
        pixels: std::ops::Range<usize>,
        kernel: Kernel,
        cols: &mut [u8],
        acc: &mut [i32],
    ) {
        let (rows, stride) = (pixels.len(), self.packed.row_stride());
        let cols = &mut cols[..rows * stride];
        im2col_codes(
            input,
            (h, w),
            self.c_in,
            self.k,
            pixels,
            stride,
            zero_point,
            cols,
        );
        kernel.run(acc, cols, rows, &self.packed);
    }

    /// Per column, what turns the kernel's `sum (code - ZERO_POINT) * w` into
    /// `sum (code - zero_point) * w`: `(ZERO_POINT - zero_point) * sum_l w[l][j]`.
    fn offsets(&self, zero_point: u8) -> Vec<i32> {
        let shift = i32::from(mgecl_kernels::int8::ZERO_POINT) - i32::from(zero_point);
        self.column_sums.iter().map(|s| shift * s).collect()
    }

    /// Bytes of one im2col row of the product.
    fn row_stride(&self) -> usize {
        self.packed.row_stride()
    }
}

/// One convolution: int8 weights, its input's quantisation, the folded bias and activation.
pub(crate) struct QuantConv {
    pub(crate) weights: QuantWeights,
    pub(crate) input: ActivationQuant,
    pub(crate) bias: Vec<f32>,
    pub(crate) slope: f32,
    /// `input.scale * weights.scales[j]`.
    multipliers: Vec<f32>,
    /// The input's zero-point correction ([`QuantWeights::offsets`]).
    offsets: Vec<i32>,
}

impl QuantConv {
    pub(crate) fn new(
        weights: QuantWeights,
        input: ActivationQuant,
        bias: Vec<f32>,
        slope: f32,
    ) -> Self {
        assert_eq!(bias.len(), weights.c_out);
        let multipliers = weights.scales.iter().map(|s| input.scale * s).collect();
        let offsets = weights.offsets(input.zero_point);
        QuantConv {
            weights,
            input,
            bias,
            slope,
            multipliers,
            offsets,
        }
    }

    fn quantize(conv: &FoldedConv, input: ActivationQuant) -> Self {
        let weights = QuantWeights::quantize(conv.c_in, conv.c_out, conv.k, &conv.weight);
        QuantConv::new(weights, input, conv.bias.clone(), conv.slope)
    }
}

/// A block's shortcut: int8 1x1 weights over the block input's codes.
pub(crate) struct QuantShortcut {
    pub(crate) weights: QuantWeights,
    /// The block input's scale times each weight scale.
    multipliers: Vec<f32>,
    /// The block input's zero-point correction ([`QuantWeights::offsets`]).
    offsets: Vec<i32>,
}

impl QuantShortcut {
    pub(crate) fn new(weights: QuantWeights, input: ActivationQuant) -> Self {
        let multipliers = weights.scales.iter().map(|s| input.scale * s).collect();
        let offsets = weights.offsets(input.zero_point);
        QuantShortcut {
            weights,
            multipliers,
            offsets,
        }
    }
}

/// An NHWC batch shape (channels are implied by the layer).
#[derive(Debug, Clone, Copy)]
struct Shape {
    n: usize,
    h: usize,
    w: usize,
}

/// Where a convolution writes: its f32 outputs, or their codes for the layer that reads
/// them (the same values quantised: `quantize_activations` of each output).
enum Output<'a> {
    Floats(&'a mut [f32]),
    Codes(&'a mut [u8], ActivationQuant),
}

/// Convolves `codes` (NHWC, `conv`'s input quantisation) into `out` (NHWC), with the
/// shortcut of `block_codes` (the block input's codes and zero point) added before the
/// activation.
fn convolve(
    conv: &QuantConv,
    codes: &[u8],
    shape: Shape,
    shortcut: Option<(&QuantShortcut, &[u8], u8)>,
    out: Output<'_>,
) {
    match out {
        Output::Floats(out) => convolve_into(conv, codes, shape, shortcut, out, |y, dst| {
            dst.copy_from_slice(y)
        }),
        Output::Codes(out, next) => convolve_into(conv, codes, shape, shortcut, out, |y, dst| {
            quantize_activations(y, next.scale, next.zero_point, dst)
        }),
    }
}

/// [`convolve`], each chunk's f32 outputs handed to `store` while in cache.
fn convolve_into<T: Send>(
    conv: &QuantConv,
    codes: &[u8],
    shape: Shape,
    shortcut: Option<(&QuantShortcut, &[u8], u8)>,
    out: &mut [T],
    store: impl Fn(&[f32], &mut [T]) + Sync,
) {
    let c_out = conv.weights.c_out;
    let pixels = shape.n * shape.h * shape.w;
    assert_eq!(codes.len(), pixels * conv.weights.c_in);
    assert_eq!(out.len(), pixels * c_out);
    let kernel = Kernel::detect();
    let hw = (shape.h, shape.w);
    let stride = shortcut.map_or(0, |(s, _, _)| s.weights.row_stride());
    let stride = stride.max(conv.weights.row_stride());
    let sums = if shortcut.is_some() { 2 } else { 1 } * CHUNK_ROWS * c_out;
    out.par_chunks_mut(CHUNK_ROWS * c_out)
        .enumerate()
        .for_each(|(chunk, dst)| {
            let rows = dst.len() / c_out;
            let pixels = chunk * CHUNK_ROWS..chunk * CHUNK_ROWS + rows;
            with_int8_scratch(CHUNK_ROWS * stride, sums, |cols, sums| {
                with_scratch(rows * c_out, |ys| {
                    let (acc, shortcut_acc) = sums.split_at_mut(CHUNK_ROWS * c_out);
                    let acc = &mut acc[..rows * c_out];
                    let zero = conv.input.zero_point;
                    let range = pixels.clone();
                    conv.weights
                        .product(codes, hw, zero, range, kernel, cols, acc);
                    // y = acc * multiplier + bias (+ the shortcut's), then the activation.
                    let (multipliers, bias, slope) = (&conv.multipliers, &conv.bias, conv.slope);
                    for (row, acc) in ys.chunks_exact_mut(c_out).zip(acc.chunks_exact(c_out)) {
                        let sums = acc.iter().zip(&conv.offsets).map(|(a, o)| a + o);
                        for (((y, a), &m), &b) in
                            row.iter_mut().zip(sums).zip(multipliers).zip(bias)
                        {
                            *y = a as f32 * m + b;
                        }
                    }
                    if let Some((s, block_codes, zero)) = shortcut {
                        let shortcut_acc = &mut shortcut_acc[..rows * c_out];
                        s.weights.product(
                            block_codes,
                            hw,
                            zero,
                            pixels,
                            kernel,
                            cols,
                            shortcut_acc,
                        );
                        let rows = ys
                            .chunks_exact_mut(c_out)
                            .zip(shortcut_acc.chunks_exact(c_out));
                        for (row, acc) in rows {
                            let sums = acc.iter().zip(&s.offsets).map(|(a, o)| a + o);
                            for ((y, a), &m) in row.iter_mut().zip(sums).zip(&s.multipliers) {
                                *y += a as f32 * m;
                            }
                        }
                    }
                    for y in ys.iter_mut() {
                        *y = y.max(slope * *y);
                    }
                    store(ys, dst);
                });
            });
        });
}

/// One block of the int8 encoder.
pub(crate) struct QuantBlock {
    pub(crate) convs: Vec<QuantConv>,
    /// Reads the codes of the block input (quantised as `convs[0]`'s input).
    pub(crate) shortcut: Option<QuantShortcut>,
    pub(crate) pool: bool,
}

/// A block's output: the codes the next block reads, or (the last block) f32 values.
enum Activations {
    Codes(Vec<u8>),
    Floats(Vec<f32>),
}

impl QuantBlock {
    /// The block on the codes of its input (NHWC, quantised as `convs[0]`'s input),
    /// returning its output, quantised as `next` (else f32), pooled when the block pools.
    fn forward(
        &self,
        block_codes: &[u8],
        shape: Shape,
        next: Option<ActivationQuant>,
    ) -> (Activations, Shape) {
        let pixels = shape.n * shape.h * shape.w;
        let block_input = self.convs[0].input;
        let last = self.convs.len() - 1;
        let mut cur: Option<Vec<u8>> = None;
        for (i, conv) in self.convs.iter().enumerate().take(last) {
            // Codes quantised as the next convolution reads them.
            let mut out = vec![0u8; pixels * conv.weights.c_out];
            let input = cur.as_deref().unwrap_or(block_codes);
            let next_input = self.convs[i + 1].input;
            convolve(
                conv,
                input,
                shape,
                None,
                Output::Codes(&mut out, next_input),
            );
            cur = Some(out);
        }
        let conv = &self.convs[last];
        let input = cur.as_deref().unwrap_or(block_codes);
        let shortcut = self
            .shortcut
            .as_ref()
            .map(|s| (s, block_codes, block_input.zero_point));
        let len = pixels * conv.weights.c_out;
        let y = match next {
            Some(next) => {
                let mut out = vec![0u8; len];
                convolve(conv, input, shape, shortcut, Output::Codes(&mut out, next));
                Activations::Codes(out)
            }
            None => {
                let mut out = take_buffer(len);
                convolve(conv, input, shape, shortcut, Output::Floats(&mut out));
                Activations::Floats(out)
            }
        };
        self.pool_output(y, shape)
    }

    /// The block's output `y` (NHWC), max-pooled when the block pools.
    fn pool_output(&self, y: Activations, shape: Shape) -> (Activations, Shape) {
        if !self.pool {
            return (y, shape);
        }
        let c = self.convs.last().map_or(0, |conv| conv.weights.c_out);
        let pooled = Shape {
            n: shape.n,
            h: shape.h / 2,
            w: shape.w / 2,
        };
        let (len, dims) = (
            pooled.n * pooled.h * pooled.w * c,
            (shape.n, shape.h, shape.w),
        );
        let out = match y {
            Activations::Codes(y) => {
                let mut x = vec![0u8; len];
                max_pool_2x2_codes(&y, dims, c, &mut x);
                Activations::Codes(x)
            }
            Activations::Floats(y) => {
                let mut x = take_buffer(len);
                max_pool_2x2(&y, dims, c, &mut x);
                give_buffer(y);
                Activations::Floats(x)
            }
        };
        (out, pooled)
    }
}

/// An encoder on the int8 engine.
pub(crate) struct QuantNet {
    pub(crate) blocks: Vec<QuantBlock>,
    pub(crate) in_channels: usize,
}

impl QuantNet {
    /// Quantises a folded encoder: weights per output channel; each activation's range
    /// calibrated on `images` (normalised NCHW `(n, in_channels, h, w)`) as they arrive
    /// through the layers already quantised, so each range sees the earlier layers' rounding.
    /// Holds one layer's activations of all `n` images at a time.
    pub(crate) fn calibrate(
        folded: &FoldedNet,
        images: &[f32],
        n: usize,
        h: usize,
        w: usize,
    ) -> Self {
        let c = folded.in_channels;
        assert_eq!(images.len(), n * c * h * w);
        let mut x = vec![0.0; images.len()];
        nchw_to_nhwc(images, (n, c, h * w), &mut x);
        let mut shape = Shape { n, h, w };
        let mut blocks = Vec::new();
        for folded_block in &folded.blocks {
            let block_input = ActivationQuant::calibrate(&x);
            let mut block = QuantBlock {
                convs: Vec::new(),
                shortcut: folded_block.shortcut.as_ref().map(|s| {
                    let c_out = folded_block.convs.last().map_or(0, |conv| conv.c_out);
                    let weights = QuantWeights::quantize(s.c_in, c_out, 1, &s.weight);
                    QuantShortcut::new(weights, block_input)
                }),
                pool: folded_block.pool,
            };
            // Each convolution is quantised once its input, through the ones before, is
            // known (as `QuantBlock::forward` runs them).
            let block_codes = block_input.quantize(&x);
            let pixels = shape.n * shape.h * shape.w;
            let last = folded_block.convs.len() - 1;
            let mut cur: Option<Vec<f32>> = None;
            for (i, conv) in folded_block.convs.iter().enumerate() {
                let input = cur
                    .as_deref()
                    .map_or(block_input, ActivationQuant::calibrate);
                let quantized = QuantConv::quantize(conv, input);
                let codes = cur.as_deref().map(|values| input.quantize(values));
                let shortcut = block
                    .shortcut
                    .as_ref()
                    .filter(|_| i == last)
                    .map(|s| (s, &block_codes[..], block_input.zero_point));
                let mut out = vec![0.0; pixels * conv.c_out];
                let codes = codes.as_deref().unwrap_or(&block_codes);
                convolve(&quantized, codes, shape, shortcut, Output::Floats(&mut out));
                cur = Some(out);
                block.convs.push(quantized);
            }
            let y = cur.expect("a block has at least one convolution");
            let (next, next_shape) = block.pool_output(Activations::Floats(y), shape);
            if let Activations::Floats(next) = next {
                x = next;
            }
            shape = next_shape;
            blocks.push(block);
        }
        QuantNet {
            blocks,
            in_channels: c,
        }
    }

    /// Runs the encoder on a normalised NCHW batch `(n, in_channels, h, w)`. Between blocks
    /// only codes exist: with `keep_blocks`, each block's output is the values its codes
    /// stand for (`scale * (code - zero_point)`; the last block's are exact). The caller
    /// checks `h` and `w` are large enough for the poolings.
    pub(crate) fn forward(
        &self,
        nchw: &[f32],
        n: usize,
        h: usize,
        w: usize,
        keep_blocks: bool,
    ) -> FastOutput {
        let c = self.in_channels;
        assert_eq!(nchw.len(), n * c * h * w);
        let mut x = take_buffer(nchw.len());
        nchw_to_nhwc(nchw, (n, c, h * w), &mut x);
        let mut codes = self.blocks[0].convs[0].input.quantize(&x);
        give_buffer(x);
        let mut shape = Shape { n, h, w };
        let mut blocks = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let next = self.blocks.get(i + 1).map(|b| b.convs[0].input);
            let (y, next_shape) = block.forward(&codes, shape, next);
            shape = next_shape;
            let c_y = block.convs.last().map_or(0, |conv| conv.weights.c_out);
            let nchw_of = |nhwc: &[f32]| {
                let mut nchw = vec![0.0; nhwc.len()];
                nhwc_to_nchw(nhwc, (shape.n, c_y, shape.h * shape.w), &mut nchw);
                (nchw, [shape.n, c_y, shape.h, shape.w])
            };
            match (y, next) {
                (Activations::Codes(y), Some(q)) => {
                    if keep_blocks {
                        let zero = f32::from(q.zero_point);
                        let values: Vec<f32> =
                            y.iter().map(|&v| (f32::from(v) - zero) * q.scale).collect();
                        blocks.push(nchw_of(&values));
                    }
                    codes = y;
                }
                (Activations::Floats(y), _) => {
                    if keep_blocks {
                        blocks.push(nchw_of(&y));
                    }
                    let mut features = vec![0.0f32; shape.n * c_y];
                    global_avg_pool(&y, (shape.n, shape.h * shape.w), c_y, &mut features);
                    give_buffer(y);
                    return FastOutput { features, blocks };
                }
                (Activations::Codes(_), None) => unreachable!("the last block gives f32 values"),
            }
        }
        unreachable!("an encoder has blocks and its last gives f32 values")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu_fast::FastNet;
    use crate::model::folded::{FoldedBlock, FoldedShortcut};

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) - 0.5
            })
            .collect()
    }

    fn conv(c_in: usize, c_out: usize, k: usize, slope: f32, seed: u32) -> FoldedConv {
        // Weights of a He-initialised layer, so activations neither vanish nor explode.
        let gain = (6.0 / (k * k * c_in) as f32).sqrt() * 2.0;
        FoldedConv {
            c_in,
            c_out,
            k,
            weight: values(k * k * c_in * c_out, seed)
                .into_iter()
                .map(|v| v * gain)
                .collect(),
            bias: values(c_out, seed + 1),
            slope,
        }
    }

    /// A small ResNet-like encoder (shortcut, LeakyReLU) then a Conv-4-like block (ReLU,
    /// no shortcut, no pool).
    fn folded(c: usize) -> FoldedNet {
        let width = [12, 20];
        let shortcut = |c_in: usize, c_out: usize, seed: u32| FoldedShortcut {
            c_in,
            weight: conv(c_in, c_out, 1, 0.0, seed).weight,
        };
        FoldedNet {
            blocks: vec![
                FoldedBlock {
                    convs: vec![
                        conv(c, width[0], 3, 0.1, 10),
                        conv(width[0], width[0], 3, 0.1, 20),
                        conv(width[0], width[0], 3, 0.1, 30),
                    ],
                    shortcut: Some(shortcut(c, width[0], 40)),
                    pool: true,
                },
                FoldedBlock {
                    convs: vec![conv(width[0], width[1], 3, 0.0, 50)],
                    shortcut: None,
                    pool: false,
                },
            ],
            in_channels: c,
        }
    }

    /// The quantised arithmetic written out directly: codes as `quantize_activations` makes
    /// them, integer sums over the taps inside the image, the epilogue in the documented order.
    fn reference(net: &QuantNet, nchw: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        let c = net.in_channels;
        let mut x = vec![0.0; nchw.len()];
        for image in 0..n {
            for ch in 0..c {
                for p in 0..h * w {
                    x[(image * h * w + p) * c + ch] = nchw[(image * c + ch) * h * w + p];
                }
            }
        }
        let (mut h, mut w, mut c) = (h, w, c);
        let codes_of = |x: &[f32], q: ActivationQuant| {
            let mut codes = vec![0u8; x.len()];
            quantize_activations(x, q.scale, q.zero_point, &mut codes);
            codes
        };
        // `sum_taps (code - zero_point) * weight` at pixel `(image, y, xx)`, column `j`.
        let dot = |codes: &[u8],
                   q: ActivationQuant,
                   wt: &QuantWeights,
                   (h, w): (usize, usize),
                   (image, y, xx): (usize, usize, usize),
                   j: usize| {
            let pad = (wt.k / 2) as isize;
            let mut acc = 0i32;
            for ky in 0..wt.k {
                for kx in 0..wt.k {
                    let iy = y as isize + ky as isize - pad;
                    let ix = xx as isize + kx as isize - pad;
                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                        continue;
                    }
                    let pixel = (image * h + iy as usize) * w + ix as usize;
                    for ci in 0..wt.c_in {
                        let code = i32::from(codes[pixel * wt.c_in + ci]) - i32::from(q.zero_point);
                        let weight = wt.codes[((ky * wt.k + kx) * wt.c_in + ci) * wt.c_out + j];
                        acc += code * i32::from(weight);
                    }
                }
            }
            acc
        };
        for block in &net.blocks {
            let block_input = block.convs[0].input;
            let block_codes = codes_of(&x, block_input);
            let mut cur: Option<Vec<f32>> = None;
            for (i, conv) in block.convs.iter().enumerate() {
                let codes = cur.as_deref().map(|v| codes_of(v, conv.input));
                let codes = codes.as_deref().unwrap_or(&block_codes);
                let c_out = conv.weights.c_out;
                let mut out = vec![0.0f32; n * h * w * c_out];
                for image in 0..n {
                    for y in 0..h {
                        for xx in 0..w {
                            let p = (image * h + y) * w + xx;
                            for j in 0..c_out {
                                let at = (image, y, xx);
                                let acc = dot(codes, conv.input, &conv.weights, (h, w), at, j);
                                let scale = conv.input.scale * conv.weights.scales[j];
                                let mut v = acc as f32 * scale + conv.bias[j];
                                if let (Some(s), true) =
                                    (&block.shortcut, i + 1 == block.convs.len())
                                {
                                    let acc =
                                        dot(&block_codes, block_input, &s.weights, (h, w), at, j);
                                    v += acc as f32 * (block_input.scale * s.weights.scales[j]);
                                }
                                out[p * c_out + j] = v.max(conv.slope * v);
                            }
                        }
                    }
                }
                cur = Some(out);
                c = c_out;
            }
            x = cur.unwrap();
            if block.pool {
                let mut pooled = vec![0.0; n * (h / 2) * (w / 2) * c];
                max_pool_2x2(&x, (n, h, w), c, &mut pooled);
                (x, h, w) = (pooled, h / 2, w / 2);
            }
        }
        let mut features = vec![0.0; n * c];
        global_avg_pool(&x, (n, h * w), c, &mut features);
        features
    }

    #[test]
    fn features_are_the_quantised_arithmetic_exactly_on_any_thread_count() {
        // Odd sizes (a dropped row and column at the pool), more pixels than one chunk, 3
        // input channels (rows padded to 4 bytes).
        let (n, c, h, w) = (3, 3, 13, 11);
        let images = values(n * c * h * w, 7);
        let net = QuantNet::calibrate(&folded(c), &images, n, h, w);
        let expected = reference(&net, &images, n, h, w);
        assert!(expected.iter().filter(|&&v| v != 0.0).count() > expected.len() / 2);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let features = pool.install(|| net.forward(&images, n, h, w, false).features);
            assert_eq!(features, expected, "{threads} threads");
        }
        // Images the calibration did not see: still exact.
        let other = values(c * h * w, 8);
        assert_eq!(
            net.forward(&other, 1, h, w, false).features,
            reference(&net, &other, 1, h, w)
        );
    }

    #[test]
    fn features_stay_close_to_the_f32_engine() {
        let (n, c, h, w) = (8, 3, 16, 16);
        let images = values(n * c * h * w, 9);
        let net = QuantNet::calibrate(&folded(c), &images, n, h, w);
        let quantized = net.forward(&images, n, h, w, false).features;
        let exact = FastNet::new(folded(c))
            .forward(&images, n, h, w, false)
            .features;
        for (q, e) in quantized.chunks(20).zip(exact.chunks(20)) {
            let dot: f32 = q.iter().zip(e).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
            let cosine = dot / (norm(q) * norm(e));
            assert!(cosine > 0.9999, "cosine {cosine}");
        }
    }

    #[test]
    fn calibration_by_hand() {
        // Non-negative values (after a ReLU): zero point 0, the range chosen to the largest.
        let q = ActivationQuant::calibrate(&[0.0, 1.0, 2.0, 2.55]);
        assert_eq!(q.zero_point, 0);
        assert!((q.scale - 0.01).abs() < 1e-6, "{q:?}");
        // Symmetric values: the zero point in the middle.
        let q = ActivationQuant::calibrate(&[-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert!((120..=136).contains(&q.zero_point), "{q:?}");
        // One outlier among many small values: clipped for the many.
        let mut x: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32 / 100.0).collect();
        x.push(50.0);
        let q = ActivationQuant::calibrate(&x);
        assert!(q.scale * 255.0 < 50.0, "{q:?}");
        // All zeros: any scale represents them.
        let q = ActivationQuant::calibrate(&[0.0; 4]);
        assert_eq!((q.scale, q.zero_point), (1.0, 0));
    }
}
