//! The CPU fast path: inference-only ResNet-12 and Conv-4 forward passes that run at (or, with
//! Winograd, beyond) the machine's matrix-multiply speed.
//!
//! - Built from the folded encoder (`super::folded`): BatchNorm (and Conv-4's convolution
//!   bias) folded into the convolution weights and a per-channel bias.
//! - Activations are NHWC. 3x3 convolutions with at least 16 input and output channels run as
//!   Winograd F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//!   2016): 16 matrix products `(tiles, c_in) x (c_in, c_out)` per tile chunk, 2.25 times fewer
//!   multiply-adds than a direct convolution, unless their transformed weights exceed 8 MiB
//!   (ResNet-12's 640-wide block, which works on few pixels). The rule, the weight transform
//!   (of the folded f32 weights) and the tile transforms are `mgecl_kernels::winograd`'s, the
//!   ones training uses. The others (the first layer, the widest block) are one matrix product
//!   each: an im2col matrix (`mgecl_kernels::conv::im2col`; rows = output pixels, columns =
//!   `[ky][kx][c_in]`) times the folded weights `(9 c_in, c_out)`. The products use the `gemm`
//!   crate (the kernels candle itself uses, AVX-512 enabled).
//! - ResNet-12's shortcut (1x1 conv + BN) is fused into the block's third convolution: on the
//!   im2col path the block input's pixel is appended to each im2col row and the shortcut
//!   weights below conv3's, so conv3 + shortcut + add is one product; on the Winograd path the
//!   shortcut is multiplied into the output first and added in the output transform.
//! - Bias, residual and activation are applied in one pass over each output chunk while it is
//!   still in cache.
//! - The output pixels (or Winograd tile rows) are cut into chunks that run on rayon's
//!   threads; each thread transforms its chunk in a reused thread-local scratch buffer (at most
//!   16 MiB), so no full-size im2col matrix ever exists. Activation buffers are reused across
//!   calls from one bounded process-wide pool (`mgecl_kernels::scratch`), released on request
//!   or when idle; a model stays `Send + Sync` with no mutable state of its own.
//!
//! candle's path (`super::resnet12`, `super::conv4`) is the reference this path is tested
//! against (`tests/encoder_parity.rs`).

use mgecl_kernels::conv::im2col;
use mgecl_kernels::layout::nhwc_to_nchw;
use mgecl_kernels::pool::{global_avg_pool, max_pool_2x2};
use mgecl_kernels::scratch::{give_buffer, take_buffer, with_scratch};
use mgecl_kernels::winograd::{
    contiguous_planes, convolve_tile_rows, split_by_tile_rows, tile_grid, tile_row_start,
    tile_rows_scratch_len, transform_kernels,
};
use mgecl_kernels::{gemm, Mat, Parallelism};
use rayon::prelude::*;

use super::folded::{nhwc_input, FoldedConv, FoldedNet, FoldedShortcut, Shape};

/// `dst (m, n) = lhs (m, k) * rhs (k, n)`, all row-major and contiguous.
fn matmul(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    (m, k, n): (usize, usize, usize),
    par: Parallelism,
) {
    gemm(
        dst,
        (m, n),
        false,
        Mat::rows(lhs, m, k),
        Mat::rows(rhs, k, n),
        par,
    );
}

/// Largest im2col chunk one thread builds, in f32 values (16 MiB).
const MAX_SCRATCH_VALUES: usize = 4 << 20;
/// Fewest output rows per chunk when chunks run on separate threads; below this a single
/// chunk is multiplied with gemm's own threading instead.
const MIN_PARALLEL_ROWS: usize = 192;
/// Scratch for one thread's Winograd tile chunk (transformed input and products), in f32s.
const WINOGRAD_SCRATCH_VALUES: usize = 1 << 20;

/// A 3x3 (pad 1) or 1x1 (pad 0), stride-1 convolution with BatchNorm folded in, optionally
/// with a 1x1 shortcut convolution fused in, followed by `max(x, slope * x)`.
struct FusedConv {
    c_in: usize,
    c_out: usize,
    /// Kernel side (1 or 3).
    k: usize,
    /// Channels of the fused shortcut input (0 when none).
    shortcut_c_in: usize,
    /// `(k * k * c_in + shortcut_c_in, c_out)`, row-major; rows ordered `[ky][kx][c_in]`, then
    /// the shortcut's channels. With `winograd`, only the shortcut's rows.
    weight: Vec<f32>,
    /// `(c_out,)`.
    bias: Vec<f32>,
    /// Negative slope of the activation (0 = ReLU).
    slope: f32,
    /// For 3x3 convolutions where Winograd applies: the weights `U = G g G^T`, 16 contiguous
    /// planes `(c_in, c_out)` (see [`FusedConv::forward_winograd`]).
    winograd: Option<Vec<f32>>,
}

impl FusedConv {
    /// The folded convolution on this path: Winograd's weights when the rule says it
    /// applies, else the im2col ones; `shortcut`'s rows below either.
    fn new(conv: FoldedConv, shortcut: Option<FoldedShortcut>) -> Self {
        let (c_in, c_out) = (conv.c_in, conv.c_out);
        let winograd = mgecl_kernels::winograd::applies(conv.k, c_in, c_out)
            .then(|| winograd_planes(&conv.weight, c_in, c_out));
        // Winograd's weights replace the im2col ones; the fused shortcut's rows follow.
        let mut weight = if winograd.is_some() {
            Vec::new()
        } else {
            conv.weight
        };
        let shortcut_c_in = shortcut.as_ref().map_or(0, |s| s.c_in);
        if let Some(s) = shortcut {
            weight.extend_from_slice(&s.weight);
        }
        FusedConv {
            c_in,
            c_out,
            k: conv.k,
            shortcut_c_in,
            weight,
            bias: conv.bias,
            slope: conv.slope,
            winograd,
        }
    }

    /// Rows of the im2col matrix (and of `weight`).
    fn depth(&self) -> usize {
        self.k * self.k * self.c_in + self.shortcut_c_in
    }

    /// Convolves the NHWC batch `input` `(n, h, w, c_in)` into `out` `(n, h, w, c_out)`;
    /// `shortcut` `(n, h, w, shortcut_c_in)` feeds the fused 1x1 shortcut.
    fn forward(&self, input: &[f32], shape: Shape, shortcut: Option<&[f32]>, out: &mut [f32]) {
        let pixels = shape.pixels();
        assert_eq!(input.len(), pixels * self.c_in);
        assert_eq!(out.len(), pixels * self.c_out);
        match shortcut {
            Some(s) => assert_eq!(s.len(), pixels * self.shortcut_c_in),
            None => assert_eq!(self.shortcut_c_in, 0),
        }
        if self.winograd.is_some() {
            return self.forward_winograd(input, shape, shortcut, out);
        }
        let depth = self.depth();
        let threads = rayon::current_num_threads().max(1);
        let max_rows = (MAX_SCRATCH_VALUES / depth).max(16);
        let per_thread = pixels.div_ceil(threads);
        let run_chunk = |first_row: usize, dst: &mut [f32], parallel: Parallelism| {
            let rows = dst.len() / self.c_out;
            with_scratch(rows * depth, |cols| {
                let pixels = first_row..first_row + rows;
                im2col(
                    input,
                    (shape.h, shape.w),
                    self.c_in,
                    self.k,
                    pixels.clone(),
                    depth,
                    cols,
                );
                if let Some(s) = shortcut {
                    // The fused shortcut's input pixel ends each row.
                    let sc = self.shortcut_c_in;
                    for (p, row) in pixels.zip(cols.chunks_exact_mut(depth)) {
                        row[depth - sc..].copy_from_slice(&s[p * sc..(p + 1) * sc]);
                    }
                }
                matmul(dst, cols, &self.weight, (rows, depth, self.c_out), parallel);
            });
            self.epilogue(dst);
        };
        if threads > 1 && per_thread >= MIN_PARALLEL_ROWS {
            // Equal chunks, a whole number of them per thread, none over `max_rows`.
            let rows = per_thread.div_ceil(per_thread.div_ceil(max_rows));
            out.par_chunks_mut(rows * self.c_out)
                .enumerate()
                .for_each(|(i, dst)| run_chunk(i * rows, dst, Parallelism::None));
        } else {
            let parallel = if threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            for (i, dst) in out.chunks_mut(max_rows * self.c_out).enumerate() {
                run_chunk(i * max_rows, dst, parallel);
            }
        }
    }

    /// The 3x3 convolution as Winograd F(2x2, 3x3) (Lavin & Gray 2016): each 2x2 output
    /// tile is `A^T [sum_ci (G g G^T) . (B^T d B)] A` for its 4x4 input patch `d`, so the
    /// channel sums are 16 matrix products `(tiles, c_in) x (c_in, c_out)` with 2.25 times
    /// fewer multiply-adds than im2col. The shortcut (a 1x1 convolution) is multiplied into
    /// `out` first and added in the output transform.
    fn forward_winograd(
        &self,
        input: &[f32],
        shape: Shape,
        shortcut: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let Some(u) = self.winograd.as_deref() else {
            return;
        };
        let (c_in, c_out) = (self.c_in, self.c_out);
        let threads = rayon::current_num_threads().max(1);
        let par = if threads > 1 {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        };
        let pixels = shape.pixels();
        if let Some(s) = shortcut {
            let sc = self.shortcut_c_in;
            assert_eq!(self.weight.len(), sc * c_out);
            matmul(out, s, &self.weight, (pixels, sc, c_out), par);
        }
        let (th, tw) = tile_grid((shape.h, shape.w));
        let tile_rows = shape.n * th;
        // Chunks of whole tile rows, so each owns a contiguous run of output rows.
        let max_tiles = (WINOGRAD_SCRATCH_VALUES / (16 * (c_in + c_out))).max(tw);
        let per_thread = (tile_rows * tw).div_ceil(threads);
        let parallel = threads > 1 && tile_rows >= 2;
        let chunk_count = if parallel {
            threads * per_thread.div_ceil(max_tiles)
        } else {
            (tile_rows * tw).div_ceil(max_tiles)
        };
        let rows_per_chunk = tile_rows.div_ceil(chunk_count.max(1)).max(1);
        let chunks: Vec<_> = (0..tile_rows)
            .step_by(rows_per_chunk)
            .map(|first| (first, rows_per_chunk.min(tile_rows - first)))
            .collect();
        let parts = split_by_tile_rows(out, (shape.h, shape.w), c_out, &chunks);
        let residual = shortcut.is_some();
        let gemm_par = if parallel { Parallelism::None } else { par };
        let (hw, slope) = ((shape.h, shape.w), self.slope);
        let run = |(first_row, rows, part): (usize, usize, &mut [f32])| {
            let base = tile_row_start(hw, first_row);
            // Bias, the residual already in `part`, activation.
            let epilogue = |p: usize, y: &[f32]| {
                let dst = &mut part[(p - base) * c_out..(p - base + 1) * c_out];
                for ((d, &v), b) in dst.iter_mut().zip(y).zip(&self.bias) {
                    let x = v + b + if residual { *d } else { 0.0 };
                    *d = x.max(slope * x);
                }
            };
            let planes = |xi: usize| Mat::rows(&u[xi * c_in * c_out..], c_in, c_out);
            let scratch_values = tile_rows_scratch_len(rows * tw, c_in, c_out);
            with_scratch(scratch_values, |scratch| {
                let channels = (c_in, c_out);
                let tile_rows = (first_row, rows);
                convolve_tile_rows(
                    input, hw, channels, tile_rows, planes, gemm_par, scratch, epilogue,
                );
            });
        };
        if parallel {
            parts.into_par_iter().for_each(run);
        } else {
            parts.into_iter().for_each(run);
        }
    }

    /// `out = max(out + bias, slope * (out + bias))`, row by row.
    fn epilogue(&self, out: &mut [f32]) {
        let slope = self.slope;
        for row in out.chunks_exact_mut(self.c_out) {
            for (v, b) in row.iter_mut().zip(&self.bias) {
                let x = *v + b;
                *v = x.max(slope * x);
            }
        }
    }
}

/// Winograd weights `U = G g G^T` of folded 3x3 weights `(3, 3, c_in, c_out)`: 16 contiguous
/// planes `(c_in, c_out)`, one after another.
fn winograd_planes(folded: &[f32], c_in: usize, c_out: usize) -> Vec<f32> {
    let tap =
        |ci: usize, ky: usize, kx: usize| &folded[((ky * 3 + kx) * c_in + ci) * c_out..][..c_out];
    let (mut interleaved, mut planes) = (Vec::new(), Vec::new());
    transform_kernels(c_in, c_out, tap, &mut interleaved);
    contiguous_planes(&interleaved, c_in, c_out, &mut planes);
    planes
}

/// One block: convolutions in sequence (a fused shortcut reads the block input), then an
/// optional 2x2 max-pool.
struct Block {
    convs: Vec<FusedConv>,
    pool: bool,
}

/// An encoder on the CPU fast path.
pub(crate) struct FastNet {
    blocks: Vec<Block>,
    in_channels: usize,
}

/// The result of [`FastNet::forward`].
pub(crate) struct FastOutput {
    /// `(n, feature_dim)`: the global average pool of the last block.
    pub(crate) features: Vec<f32>,
    /// With `keep_blocks`: each block's output, NCHW, with its `(n, c, h, w)` shape.
    pub(crate) blocks: Vec<(Vec<f32>, [usize; 4])>,
}

impl FastNet {
    /// The fast path of a folded encoder. Consumes it block by block, so the folded weights
    /// and the transformed ones overlap by at most one block.
    pub(crate) fn new(folded: FoldedNet) -> Self {
        let blocks = folded
            .blocks
            .into_iter()
            .map(|b| {
                let last = b.convs.len() - 1;
                let mut shortcut = b.shortcut;
                let convs = b
                    .convs
                    .into_iter()
                    .enumerate()
                    .map(|(i, conv)| {
                        FusedConv::new(conv, if i == last { shortcut.take() } else { None })
                    })
                    .collect();
                Block {
                    convs,
                    pool: b.pool,
                }
            })
            .collect();
        FastNet {
            blocks,
            in_channels: folded.in_channels,
        }
    }

    /// Runs the encoder on a normalised NCHW batch `(n, in_channels, h, w)`. The caller
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
        let (mut x, mut shape) = nhwc_input(nchw, (n, c, h, w));
        let mut c_x = c;
        let mut blocks = Vec::new();
        for block in &self.blocks {
            let pixels = shape.pixels();
            let mut cur: Option<Vec<f32>> = None;
            for conv in &block.convs {
                let mut out = take_buffer(pixels * conv.c_out);
                let src = cur.as_deref().unwrap_or(&x);
                let shortcut = (conv.shortcut_c_in > 0).then_some(&x[..]);
                conv.forward(src, shape, shortcut, &mut out);
                if let Some(old) = cur.replace(out) {
                    give_buffer(old);
                }
            }
            let y = cur.expect("a block has at least one convolution");
            let c_y = block.convs.last().map_or(c_x, |conv| conv.c_out);
            give_buffer(std::mem::take(&mut x));
            if block.pool {
                let pooled = shape.pooled();
                x = take_buffer(pooled.pixels() * c_y);
                max_pool_2x2(&y, (shape.n, shape.h, shape.w), c_y, &mut x);
                give_buffer(y);
                shape = pooled;
            } else {
                x = y;
            }
            c_x = c_y;
            if keep_blocks {
                let mut nchw = vec![0.0; x.len()];
                nhwc_to_nchw(&x, (shape.n, c_x, shape.h * shape.w), &mut nchw);
                blocks.push((nchw, [shape.n, c_x, shape.h, shape.w]));
            }
        }
        let mut features = vec![0.0f32; shape.n * c_x];
        global_avg_pool(&x, (shape.n, shape.h * shape.w), c_x, &mut features);
        give_buffer(x);
        FastOutput { features, blocks }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A direct NHWC convolution, for checking the im2col + gemm path.
    fn direct(conv: &FusedConv, input: &[f32], s: Shape, shortcut: Option<&[f32]>) -> Vec<f32> {
        let (c, k, co) = (conv.c_in, conv.k, conv.c_out);
        let pad = (k / 2) as isize;
        let mut out = vec![0.0f32; s.n * s.h * s.w * co];
        for image in 0..s.n {
            for y in 0..s.h {
                for x in 0..s.w {
                    let p = (image * s.h + y) * s.w + x;
                    for o in 0..co {
                        let mut acc = f64::from(conv.bias[o]);
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = y as isize + ky as isize - pad;
                                let ix = x as isize + kx as isize - pad;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let q = (image * s.h + iy as usize) * s.w + ix as usize;
                                for i in 0..c {
                                    let wv = conv.weight[((ky * k + kx) * c + i) * co + o];
                                    acc += f64::from(input[q * c + i]) * f64::from(wv);
                                }
                            }
                        }
                        if let Some(sc) = shortcut {
                            let sc_c = conv.shortcut_c_in;
                            for i in 0..sc_c {
                                let wv = conv.weight[(k * k * c + i) * co + o];
                                acc += f64::from(sc[p * sc_c + i]) * f64::from(wv);
                            }
                        }
                        let v = acc as f32;
                        out[p * co + o] = v.max(conv.slope * v);
                    }
                }
            }
        }
        out
    }

    /// `len` pseudo-random values in [-0.5, 0.5) (xorshift from `seed`): test activations
    /// and weights.
    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
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

    #[test]
    fn im2col_gemm_matches_a_direct_convolution() {
        // Odd sizes, a border-heavy 1-pixel-wide image, many chunks (n * h * w > 192 * 2).
        for (s, c_in, c_out, sc) in [
            (Shape { n: 2, h: 7, w: 5 }, 3, 4, 0),
            (Shape { n: 1, h: 1, w: 9 }, 2, 3, 2),
            (Shape { n: 3, h: 21, w: 19 }, 5, 8, 3),
            (Shape { n: 2, h: 10, w: 10 }, 16, 16, 0),
            (Shape { n: 1, h: 2, w: 3 }, 4, 5, 1),
        ] {
            let depth = 9 * c_in + sc;
            let conv = FusedConv {
                c_in,
                c_out,
                k: 3,
                shortcut_c_in: sc,
                weight: values(depth * c_out, 1),
                bias: values(c_out, 2),
                slope: 0.1,
                winograd: None,
            };
            let pixels = s.n * s.h * s.w;
            let input = values(pixels * c_in, 3);
            let shortcut = values(pixels * sc, 4);
            let shortcut = (sc > 0).then_some(&shortcut[..]);
            let expected = direct(&conv, &input, s, shortcut);
            let winograd = FusedConv {
                winograd: Some(winograd_planes(&conv.weight, c_in, c_out)),
                weight: conv.weight[9 * c_in * c_out..].to_vec(),
                bias: conv.bias.clone(),
                ..conv
            };
            for (what, conv) in [("im2col", &conv), ("winograd", &winograd)] {
                let mut out = vec![f32::NAN; pixels * c_out];
                conv.forward(&input, s, shortcut, &mut out);
                let d = out
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(d < 1e-5, "{what} {s:?}: differs by {d}");
            }
        }
    }
}
