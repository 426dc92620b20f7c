//! The int8 CPU engine: a folded encoder (`super::folded`) with int8 weights and activations.
//!
//! - Weights: symmetric `s8`, one scale per output channel (`mgecl_kernels::int8::
//!   quantize_weights`). Activations: affine `u8` codes, one scale and zero point per tensor
//!   (the input of each convolution; a block's shortcut reads the block input's codes),
//!   calibrated on images ([`QuantNet::calibrate`]).
//! - Each convolution is a product of codes times the packed weights, exact in `i32`
//!   (`mgecl_kernels::int8::Kernel::convolve`, which reads the input's taps in place), then
//!   one f32 epilogue per value in the kernel's store: `y = (acc + offset[j]) as f32 *
//!   multiplier[j] + bias[j]`, plus the shortcut's product the same way (computed first, in a
//!   chunk of scratch), then `max(y, slope * y)`. `offset` undoes the kernel's shift for the
//!   input's zero point; `multiplier = input scale * weight scale`.
//! - Only codes pass between layers: each convolution quantises its outputs as the next
//!   convolution reads them. A block's 2x2 max-pool happens in its last convolution's store:
//!   the pixels are computed window by window and each window stores the max of its 4
//!   outputs (a last odd row or column, which the pool drops, is never computed). The last
//!   block gives f32 values for the global average pool.
//! - Integer products and a fixed order of f32 operations: the features do not depend on the
//!   thread count or the kernel (AVX-512 VNNI, AVX-VNNI, aarch64 `sdot`, portable) that runs.

use mgecl_kernels::conv::ConvRows;
use mgecl_kernels::int8::{
    self, quantize_activations, quantize_weights, ConvInput, Epilogue, Kernel, PackedWeights,
};
use mgecl_kernels::layout::nhwc_to_nchw;
use mgecl_kernels::pool::{global_avg_pool, max_pool_2x2};
use mgecl_kernels::scratch::{give_buffer, take_buffer, with_scratch};
use rayon::prelude::*;

use super::cpu_fast::FastOutput;
use super::folded::{nhwc_input, FoldedConv, FoldedNet, Shape};

/// Most output pixels one task computes (its shortcut scratch: 256 rows of f32 outputs).
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
        let mut codes = take_buffer(x.len());
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
    /// `zero_point`) at the output pixels `rows` (max-pooled by window with `pooled`),
    /// written as `out` says. The kernel sums
    /// `(code - ZERO_POINT) * w`; [`Dequantize`]'s offsets make them sums of
    /// `code - zero_point`.
    fn product(
        &self,
        input: &[u8],
        hw: (usize, usize),
        zero_point: u8,
        (rows, pooled): (&ConvRows, bool),
        kernel: Kernel,
        out: &mut int8::Output,
    ) {
        let input = ConvInput {
            codes: input,
            hw,
            channels: self.c_in,
            kernel: self.k,
            zero_point,
        };
        kernel.convolve(&input, rows, pooled, &self.packed, out);
    }

    /// How this product over the codes of `input` becomes values.
    fn dequantize(&self, input: ActivationQuant) -> Dequantize {
        let shift = i32::from(mgecl_kernels::int8::ZERO_POINT) - i32::from(input.zero_point);
        Dequantize {
            multipliers: self.scales.iter().map(|s| input.scale * s).collect(),
            offsets: self.column_sums.iter().map(|s| shift * s).collect(),
        }
    }
}

/// Per output channel, what turns the kernel's sums over an input's codes into values:
/// `(acc + offset) as f32 * multiplier`. `offset = (ZERO_POINT - zero_point) * sum_l w[l][j]`
/// makes the kernel's `sum (code - ZERO_POINT) * w` a sum of `code - zero_point`;
/// `multiplier = input scale * weight scale`.
struct Dequantize {
    multipliers: Vec<f32>,
    offsets: Vec<i32>,
}

impl Dequantize {
    /// The kernel's epilogue: these values, then the bias, the addend and the activation.
    fn epilogue<'a>(
        &'a self,
        bias: Option<&'a [f32]>,
        addend: Option<&'a [f32]>,
        slope: Option<f32>,
    ) -> Epilogue<'a> {
        Epilogue {
            offsets: &self.offsets,
            multipliers: &self.multipliers,
            bias,
            addend,
            slope,
        }
    }
}

/// One convolution: int8 weights, its input's quantisation, the folded bias and activation.
pub(crate) struct QuantConv {
    pub(crate) weights: QuantWeights,
    pub(crate) input: ActivationQuant,
    pub(crate) bias: Vec<f32>,
    pub(crate) slope: f32,
    dequantize: Dequantize,
}

impl QuantConv {
    pub(crate) fn new(
        weights: QuantWeights,
        input: ActivationQuant,
        bias: Vec<f32>,
        slope: f32,
    ) -> Self {
        assert_eq!(bias.len(), weights.c_out);
        let dequantize = weights.dequantize(input);
        QuantConv {
            weights,
            input,
            bias,
            slope,
            dequantize,
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
    /// Over the block input's codes.
    dequantize: Dequantize,
}

impl QuantShortcut {
    pub(crate) fn new(weights: QuantWeights, input: ActivationQuant) -> Self {
        let dequantize = weights.dequantize(input);
        QuantShortcut {
            weights,
            dequantize,
        }
    }
}

/// Where a convolution writes: its f32 outputs, or their codes for the layer that reads
/// them (the same values quantised: `quantize_activations` of each output).
enum Output<'a> {
    Floats(&'a mut [f32]),
    Codes(&'a mut [u8], ActivationQuant),
}

/// Convolves `codes` (NHWC, `conv`'s input quantisation) into `out` (NHWC), with the
/// shortcut of `block_codes` (the block input's codes and zero point) added before the
/// activation; with `pool`, `out` is the 2x2 max-pool of the outputs (computed window by
/// window: a last odd row or column of outputs, which the pool drops, is never computed).
fn convolve(
    conv: &QuantConv,
    codes: &[u8],
    shape: Shape,
    shortcut: Option<(&QuantShortcut, &[u8], u8)>,
    pool: bool,
    out: Output<'_>,
) {
    let layer = Layer {
        conv,
        codes,
        shape,
        shortcut,
        pool,
    };
    match out {
        Output::Floats(out) => convolve_into(layer, out, |out, epilogue| {
            int8::Output::Floats(out, epilogue)
        }),
        Output::Codes(out, next) => {
            convolve_into(layer, out, |codes, epilogue| int8::Output::Codes {
                codes,
                epilogue,
                scale: next.scale,
                zero_point: next.zero_point,
            })
        }
    }
}

/// What [`convolve`] computes.
#[derive(Clone, Copy)]
struct Layer<'a> {
    conv: &'a QuantConv,
    codes: &'a [u8],
    shape: Shape,
    shortcut: Option<(&'a QuantShortcut, &'a [u8], u8)>,
    pool: bool,
}

/// [`convolve`] in chunks of output rows (pixels, or pooling windows), each written by the
/// kernel as `output` makes of the chunk of `out` and the epilogue: the shortcut's values
/// first (into a scratch chunk, the pixels in the same order), then the convolution's sums
/// finished with the bias, the shortcut and the activation (and the pool).
fn convolve_into<T: Send>(
    layer: Layer,
    out: &mut [T],
    output: impl for<'a> Fn(&'a mut [T], Epilogue<'a>) -> int8::Output<'a> + Sync,
) {
    let Layer {
        conv,
        codes,
        shape,
        shortcut,
        pool,
    } = layer;
    let c_out = conv.weights.c_out;
    let pixels = shape.pixels();
    assert_eq!(codes.len(), pixels * conv.weights.c_in);
    // Output rows: pixels, or windows of 4 pixels.
    let (rows, per_row) = if pool {
        (shape.pooled().pixels(), 4)
    } else {
        (pixels, 1)
    };
    assert_eq!(out.len(), rows * c_out);
    let kernel = Kernel::detect();
    let hw = (shape.h, shape.w);
    let chunk_rows = chunk_rows(rows * per_row, rayon::current_num_threads()).div_ceil(per_row);
    out.par_chunks_mut(chunk_rows * c_out)
        .enumerate()
        .for_each(|(chunk, dst)| {
            let first = chunk * chunk_rows;
            let range = first..first + dst.len() / c_out;
            let rows = if pool {
                ConvRows::Windows(range)
            } else {
                ConvRows::Pixels(range)
            };
            let residual_len = if shortcut.is_some() {
                rows.len() * c_out
            } else {
                0
            };
            with_scratch(residual_len, |residual| {
                if let Some((s, block_codes, zero)) = shortcut {
                    let epilogue = s.dequantize.epilogue(None, None, None);
                    let mut out = int8::Output::Floats(residual, epilogue);
                    s.weights
                        .product(block_codes, hw, zero, (&rows, false), kernel, &mut out);
                }
                let addend = shortcut.map(|_| &residual[..]);
                let epilogue = conv
                    .dequantize
                    .epilogue(Some(&conv.bias), addend, Some(conv.slope));
                let zero = conv.input.zero_point;
                let mut out = output(dst, epilogue);
                conv.weights
                    .product(codes, hw, zero, (&rows, pool), kernel, &mut out);
            });
        });
}

/// Output pixels per task for `pixels` on `threads`: at most [`CHUNK_ROWS`], in a number
/// of chunks that is a multiple of the thread count, so that a small layer (the last block
/// of one image: 100 pixels) still keeps every thread busy and they finish together. Each
/// pixel's outputs do not depend on the split.
fn chunk_rows(pixels: usize, threads: usize) -> usize {
    let chunks = pixels.div_ceil(CHUNK_ROWS).div_ceil(threads.max(1)) * threads.max(1);
    pixels.div_ceil(chunks.max(1)).max(1)
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
        let pixels = shape.pixels();
        let block_input = self.convs[0].input;
        let last = self.convs.len() - 1;
        let mut cur: Option<Vec<u8>> = None;
        for (i, conv) in self.convs.iter().enumerate().take(last) {
            // Codes quantised as the next convolution reads them.
            let mut out_codes = take_buffer(pixels * conv.weights.c_out);
            let input = cur.as_deref().unwrap_or(block_codes);
            let next_input = self.convs[i + 1].input;
            let out = Output::Codes(&mut out_codes, next_input);
            convolve(conv, input, shape, None, false, out);
            if let Some(used) = cur.replace(out_codes) {
                give_buffer(used);
            }
        }
        let conv = &self.convs[last];
        let input = cur.as_deref().unwrap_or(block_codes);
        let shortcut = self
            .shortcut
            .as_ref()
            .map(|s| (s, block_codes, block_input.zero_point));
        // The block's pool happens in the last convolution's store (window by window).
        let out_shape = if self.pool { shape.pooled() } else { shape };
        let len = out_shape.pixels() * conv.weights.c_out;
        let pool = self.pool;
        let y = match next {
            Some(next) => {
                let mut out = take_buffer(len);
                let codes = Output::Codes(&mut out, next);
                convolve(conv, input, shape, shortcut, pool, codes);
                Activations::Codes(out)
            }
            None => {
                let mut out = take_buffer(len);
                convolve(conv, input, shape, shortcut, pool, Output::Floats(&mut out));
                Activations::Floats(out)
            }
        };
        if let Some(used) = cur {
            give_buffer(used);
        }
        (y, out_shape)
    }

    /// Calibration's f32 block output `y` (NHWC), max-pooled when the block pools (what
    /// [`QuantBlock::forward`] does in the last convolution's store).
    fn pool_values(&self, y: Vec<f32>, shape: Shape) -> (Vec<f32>, Shape) {
        if !self.pool {
            return (y, shape);
        }
        let c = self.convs.last().map_or(0, |conv| conv.weights.c_out);
        let pooled = shape.pooled();
        let mut x = vec![0.0; pooled.pixels() * c];
        max_pool_2x2(&y, (shape.n, shape.h, shape.w), c, &mut x);
        (x, pooled)
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
        let (mut x, mut shape) = nhwc_input(images, (n, c, h, w));
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
            let pixels = shape.pixels();
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
                let values = Output::Floats(&mut out);
                convolve(&quantized, codes, shape, shortcut, false, values);
                cur = Some(out);
                block.convs.push(quantized);
            }
            let y = cur.expect("a block has at least one convolution");
            (x, shape) = block.pool_values(y, shape);
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
        let (x, mut shape) = nhwc_input(nchw, (n, self.in_channels, h, w));
        let mut codes = self.blocks[0].convs[0].input.quantize(&x);
        give_buffer(x);
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
                    give_buffer(std::mem::replace(&mut codes, y));
                }
                (Activations::Floats(y), _) => {
                    if keep_blocks {
                        blocks.push(nchw_of(&y));
                    }
                    let mut features = vec![0.0f32; shape.n * c_y];
                    global_avg_pool(&y, (shape.n, shape.h * shape.w), c_y, &mut features);
                    give_buffer(y);
                    give_buffer(codes);
                    return FastOutput { features, blocks };
                }
                (Activations::Codes(_), None) => unreachable!("the last block gives f32 values"),
            }
        }
        unreachable!("an encoder has blocks and its last gives f32 values")
    }
}

#[cfg(test)]
mod tests;
