//! Winograd F(2x2, 3x3) for the three products of training a 3x3, stride-1, padding-1
//! convolution on NHWC activations, built on `mgecl_kernels::winograd` (the transforms and the
//! rule for when Winograd is used, shared with inference): each product costs 16 matrix
//! products over 2x2 output tiles instead of one 9-tap product over pixels, 2.25 times fewer
//! multiply-adds.
//!
//! With `d` a tile's 4x4 input patch, `g` a 3x3 kernel and `e` the tile's 2x2 output gradient:
//! - forward:         `y  = A^T [(G g G^T) . (B^T d B)] A`;
//! - input gradient:  the forward with the kernel rotated 180 degrees and its channel axes
//!   swapped, applied to the output gradient;
//! - weight gradient: `dg = G^T [sum over tiles (A e A^T) . (B^T d B)] G` (the transpose of
//!   the forward's bilinear form); its `A e A^T` and `G^T M G` are training's own.
//!
//! Tiles past an odd image edge read zeros and their outputs are dropped (or, for the weight
//! gradient, count as zero gradient).

use rayon::prelude::*;

use super::{thread_ranges, Shape};
use mgecl_kernels::scratch::with_scratch;
use mgecl_kernels::winograd::{
    add_signed, convolve_tile_rows, input_transform, plane, split_by_tile_rows, tile_grid,
    tile_row_start, tile_rows_scratch_len, transform_kernels,
};
use mgecl_kernels::{gemm, Mat, Parallelism};

/// Values of one chunk's transformed tiles (4 MiB of f32)...
const CHUNK_VALUES: usize = 1 << 20;
/// ...unless that leaves fewer tiles than this: each chunk streams all 16 transformed weight
/// matrices, so wide layers need tall products for the weights' traffic to pay.
const MIN_CHUNK_TILES: usize = 256;

/// How [`conv`] multiplies by a transformed-weight plane `(rows, cols)`.
#[derive(Clone, Copy)]
pub(crate) enum PlaneLayout {
    /// Planes are `(c_in, c_out)`.
    InOut,
    /// Planes are `(c_out, c_in)`: multiplied by their transpose.
    OutIn,
}

/// Forward weights of a kernel held as `(c_out, 3, 3, c_in)`: planes `(c_out, c_in)`
/// ([`PlaneLayout::OutIn`]).
pub(crate) fn forward_weights(w: &[f32], c_out: usize, c_in: usize, u: &mut Vec<f32>) {
    let tap = |o: usize, y: usize, x: usize| &w[((o * 3 + y) * 3 + x) * c_in..][..c_in];
    transform_kernels(c_out, c_in, tap, u);
}

/// Input-gradient weights: the kernel rotated 180 degrees with its channel axes swapped, so
/// that `dX = conv(dY)` with `c_out` inputs and `c_in` outputs: planes `(c_out, c_in)` =
/// (inputs, outputs) of that convolution ([`PlaneLayout::InOut`]).
pub(crate) fn input_grad_weights(w: &[f32], c_out: usize, c_in: usize, u: &mut Vec<f32>) {
    let tap = |o: usize, y: usize, x: usize| &w[((o * 3 + (2 - y)) * 3 + (2 - x)) * c_in..][..c_in];
    transform_kernels(c_out, c_in, tap, u);
}

/// Chunks of whole tile rows: (first tile row, count), at most `max_tiles` tiles each, and at
/// least one chunk per thread when there are enough tile rows.
fn tile_row_chunks(tile_rows: usize, tw: usize, max_tiles: usize) -> Vec<(usize, usize)> {
    let threads = rayon::current_num_threads().max(1);
    let per_chunk = (max_tiles / tw)
        .max(1)
        .min(tile_rows.div_ceil(threads).max(1));
    (0..tile_rows)
        .step_by(per_chunk)
        .map(|first| (first, per_chunk.min(tile_rows - first)))
        .collect()
}

/// `out = conv3x3(x) (+ bias)` with `u` from [`forward_weights`] (or
/// [`input_grad_weights`]) in `layout`: `x` NHWC with `c_in` channels, `out` with `c_out`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    x: &[f32],
    g: Shape,
    c_in: usize,
    c_out: usize,
    (u, layout): (&[f32], PlaneLayout),
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (th, tw) = tile_grid((g.h, g.w));
    let tile_rows = g.n * th;
    let max_tiles = (CHUNK_VALUES / (16 * (c_in + c_out))).max(MIN_CHUNK_TILES);
    let chunks = tile_row_chunks(tile_rows, tw, max_tiles);
    let parts = split_by_tile_rows(out, (g.h, g.w), c_out, &chunks);
    parts.into_par_iter().for_each(|(first, rows, part)| {
        let base = tile_row_start((g.h, g.w), first);
        let store = |p: usize, y: &[f32]| {
            let dst = &mut part[(p - base) * c_out..(p - base + 1) * c_out];
            match bias {
                Some(b) => {
                    for ((d, v), b) in dst.iter_mut().zip(y).zip(b) {
                        *d = v + b;
                    }
                }
                None => dst.copy_from_slice(y),
            }
        };
        let planes = |xi: usize| match layout {
            PlaneLayout::InOut => plane(u, xi, c_in, c_out),
            PlaneLayout::OutIn => plane(u, xi, c_out, c_in).t(),
        };
        let scratch = tile_rows_scratch_len(rows * tw, c_in, c_out);
        with_scratch(scratch, |scratch| {
            let (hw, channels) = ((g.h, g.w), (c_in, c_out));
            let par = Parallelism::None;
            convolve_tile_rows(x, hw, channels, (first, rows), planes, par, scratch, store);
        });
    });
}

/// `A e A^T` of tile `(image, ty, tx)` of the output gradient `dy` (NHWC, `c` channels), into
/// `v[xi * stride + at .. + c]`; outputs past the image edge count as zero. `scratch` holds
/// 12 `c` values.
#[allow(clippy::too_many_arguments)]
fn gradient_transform(
    dy: &[f32],
    g: Shape,
    c: usize,
    (image, ty, tx): (usize, usize, usize),
    v: &mut [f32],
    stride: usize,
    at: usize,
    scratch: &mut [f32],
) {
    let (zero, ae) = scratch.split_at_mut(4 * c);
    zero[..c].fill(0.0);
    let zero = &zero[..c];
    let e = |oy: usize, ox: usize| {
        let (y, x) = (2 * ty + oy, 2 * tx + ox);
        if y < g.h && x < g.w {
            let p = ((image * g.h + y) * g.w + x) * c;
            &dy[p..p + c]
        } else {
            zero
        }
    };
    // A = [1 0; 1 1; 1 -1; 0 -1]; ae = A e, rows 1 and 2 (rows 0 and 3 are e's rows, ±).
    let (r1, r2) = ae.split_at_mut(4 * c);
    for col in 0..2 {
        let (top, bottom) = (e(0, col), e(1, col));
        add_signed(&mut r1[col * c..(col + 1) * c], top, bottom, 1.0);
        add_signed(&mut r2[col * c..(col + 1) * c], top, bottom, -1.0);
    }
    let rows: [(&[f32], &[f32], f32); 4] = [
        (e(0, 0), e(0, 1), 1.0),
        (&r1[..c], &r1[c..2 * c], 1.0),
        (&r2[..c], &r2[c..2 * c], 1.0),
        (e(1, 0), e(1, 1), -1.0),
    ];
    // (A e) A^T: columns a, a + b, a - b, -b (times the row's sign).
    for (r, (a, b, sign)) in rows.iter().enumerate() {
        let slot = |k: usize| (r * 4 + k) * stride + at;
        for (o, x) in v[slot(0)..slot(0) + c].iter_mut().zip(*a) {
            *o = sign * x;
        }
        for ((o, x), y) in v[slot(1)..slot(1) + c].iter_mut().zip(*a).zip(*b) {
            *o = sign * (x + y);
        }
        for ((o, x), y) in v[slot(2)..slot(2) + c].iter_mut().zip(*a).zip(*b) {
            *o = sign * (x - y);
        }
        for (o, y) in v[slot(3)..slot(3) + c].iter_mut().zip(*b) {
            *o = -sign * y;
        }
    }
}

/// Weight gradient `dw` `(c_out, 3, 3, c_in)` of the convolution from its input `x` and
/// output gradient `dy`: per-thread sums over contiguous tile-row ranges (in `partials`),
/// added in order, then `G^T M G`.
pub(crate) fn weight_grad(
    x: &[f32],
    dy: &[f32],
    g: Shape,
    c_in: usize,
    c_out: usize,
    partials: &mut Vec<f32>,
    dw: &mut [f32],
) {
    let (th, tw) = tile_grid((g.h, g.w));
    let tile_rows = g.n * th;
    let ranges = thread_ranges(tile_rows);
    let size = 16 * c_out * c_in;
    partials.resize(ranges.len() * size, 0.0);
    let max_tiles = (CHUNK_VALUES / (16 * (c_in + c_out))).max(MIN_CHUNK_TILES);
    let max_rows = (max_tiles / tw).max(1);
    partials
        .par_chunks_mut(size)
        .zip(ranges.par_iter())
        .for_each(|(acc, range)| {
            acc.fill(0.0);
            let mut first = range.start;
            while first < range.end {
                let count = max_rows.min(range.end - first);
                let n_tiles = count * tw;
                with_scratch(
                    16 * n_tiles * (c_in + c_out) + 32 * (c_in + c_out),
                    |scratch| {
                        let (v, rest) = scratch.split_at_mut(16 * n_tiles * c_in);
                        let (e, d) = rest.split_at_mut(16 * n_tiles * c_out);
                        for t in 0..n_tiles {
                            let tr = first + t / tw;
                            let tile = (tr / th, tr % th, t % tw);
                            input_transform(
                                x,
                                (g.h, g.w),
                                c_in,
                                tile,
                                v,
                                n_tiles * c_in,
                                t * c_in,
                                d,
                            );
                            let (ve, stride) = (&mut *e, n_tiles * c_out);
                            gradient_transform(dy, g, c_out, tile, ve, stride, t * c_out, d);
                        }
                        for xi in 0..16 {
                            gemm(
                                &mut acc[xi * c_out * c_in..(xi + 1) * c_out * c_in],
                                (c_out, c_in),
                                true,
                                Mat::rows(&e[xi * n_tiles * c_out..], n_tiles, c_out).t(),
                                Mat::rows(&v[xi * n_tiles * c_in..], n_tiles, c_in),
                                Parallelism::None,
                            );
                        }
                    },
                );
                first += count;
            }
        });
    let (sum, rest) = partials.split_at_mut(size);
    for part in rest[..(ranges.len() - 1) * size].chunks_exact(size) {
        for (s, v) in sum.iter_mut().zip(part) {
            *s += v;
        }
    }
    let sum = &*sum;
    // dw[o][y][x][..] = (G^T M_o G)[y][x], M_o's 16 entries being rows o of the planes;
    // rows of G^T: m0 + (m1+m2)/2; (m1-m2)/2; (m1+m2)/2 + m3.
    let plane = c_out * c_in;
    dw.par_chunks_mut(9 * c_in)
        .enumerate()
        .for_each(|(o, dst)| {
            let m: [&[f32]; 16] = std::array::from_fn(|xi| &sum[xi * plane + o * c_in..][..c_in]);
            let (taps, _) = dst.split_at_mut(9 * c_in);
            for i in 0..c_in {
                let gt = |v: [f32; 4]| {
                    [
                        v[0] + 0.5 * (v[1] + v[2]),
                        0.5 * (v[1] - v[2]),
                        0.5 * (v[1] + v[2]) + v[3],
                    ]
                };
                let cols: [[f32; 3]; 4] =
                    std::array::from_fn(|b| gt([m[b][i], m[4 + b][i], m[8 + b][i], m[12 + b][i]]));
                for y in 0..3 {
                    let v = gt([cols[0][y], cols[1][y], cols[2][y], cols[3][y]]);
                    for (x, val) in v.into_iter().enumerate() {
                        taps[(y * 3 + x) * c_in + i] = val;
                    }
                }
            }
        });
}
