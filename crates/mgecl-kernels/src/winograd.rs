//! Winograd F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016) for 3x3, stride-1, padding-1 convolutions on NHWC activations: with `d` a 2x2
//! output tile's 4x4 input patch and `g` a 3x3 kernel, the tile is
//! `A^T [sum over input channels (G g G^T) . (B^T d B)] A`, so a convolution is 16 matrix
//! products over tiles, 2.25 times fewer multiply-adds than im2col's one product over pixels.
//!
//! B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//! A^T = [1 1 1 0; 0 1 -1 -1]. This module holds the one implementation of each transform
//! (weights [`transform_kernels`], input tiles [`input_transform`], output tiles
//! [`output_transform`]), the rule for when Winograd is used ([`applies`]) and the rows of B^T
//! and A^T as sums and differences, applied to one tile position's channels at a time. Tiles
//! past an odd image edge read zeros and their outputs are dropped.

use rayon::prelude::*;

use crate::{gemm, Mat, Parallelism};

/// Fewest input and output channels for Winograd: the transforms cost per channel what the
/// products save per channel pair, so narrow layers (the first, on 1 or 3 channels) stay
/// im2col.
pub const MIN_CHANNELS: usize = 16;
/// Most bytes of transformed weights (16 / 9 of the plain ones) for Winograd: the widest
/// layers (ResNet-12's 640-wide block) work on few pixels, where streaming the larger weights
/// costs more than the multiply-adds saved.
pub const MAX_WEIGHT_BYTES: usize = 8 << 20;

/// Whether a `k`x`k` convolution from `c_in` to `c_out` channels runs as Winograd F(2x2, 3x3)
/// (inference and training decide alike, so both run the same arithmetic).
pub fn applies(k: usize, c_in: usize, c_out: usize) -> bool {
    k == 3
        && c_in >= MIN_CHANNELS
        && c_out >= MIN_CHANNELS
        && 16 * c_in * c_out * std::mem::size_of::<f32>() <= MAX_WEIGHT_BYTES
}

/// Tile grid of `(h, w)` images: (tile rows per image, tiles per tile row).
pub fn tile_grid((h, w): (usize, usize)) -> (usize, usize) {
    (h.div_ceil(2), w.div_ceil(2))
}

/// B^T's rows as `x[a] + sign * x[b]`.
pub const BT_PAIRS: [(usize, usize, f32); 4] =
    [(0, 2, -1.0), (1, 2, 1.0), (2, 1, -1.0), (1, 3, -1.0)];
/// A^T's rows as `x[a] + sign * (x[b] + x[c])`.
pub const AT_TRIPLES: [(usize, usize, usize, f32); 2] = [(0, 1, 2, 1.0), (1, 2, 3, -1.0)];

/// `dst = x + sign * y`. Inlined (into both crates' transforms): the slices are one tile
/// position's channels, often only 32-80 values, so a call costs as much as the work.
#[inline]
pub fn add_signed(dst: &mut [f32], x: &[f32], y: &[f32], sign: f32) {
    for ((d, a), b) in dst.iter_mut().zip(x).zip(y) {
        *d = a + sign * b;
    }
}

/// `dst = x + sign * (y + z)`. Inlined, as [`add_signed`].
#[inline]
pub fn add3_signed(dst: &mut [f32], x: &[f32], y: &[f32], z: &[f32], sign: f32) {
    for (((d, a), b), c) in dst.iter_mut().zip(x).zip(y).zip(z) {
        *d = a + sign * (b + c);
    }
}

/// First output pixel of tile row `tr` (counted across the batch) of `(h, w)` images: an odd
/// image's last tile row holds one output row.
pub fn tile_row_start((h, w): (usize, usize), tr: usize) -> usize {
    let th = h.div_ceil(2);
    ((tr / th) * h + 2 * (tr % th)) * w
}

/// `out` (NHWC, `(h, w)` images, `c` channels) cut into the output pixels of consecutive
/// chunks of whole tile rows `(first tile row, count)`, from tile row 0 on: `(first, count,
/// pixels)` each, so that the chunks can write their outputs on separate threads.
///
/// # Panics
/// When the chunks need more pixels than `out` holds.
pub fn split_by_tile_rows<'o>(
    out: &'o mut [f32],
    (h, w): (usize, usize),
    c: usize,
    chunks: &[(usize, usize)],
) -> Vec<(usize, usize, &'o mut [f32])> {
    let mut parts = Vec::with_capacity(chunks.len());
    let mut rest = out;
    for &(first, count) in chunks {
        let pixels = tile_row_start((h, w), first + count) - tile_row_start((h, w), first);
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(pixels * c);
        parts.push((first, count, part));
        rest = tail;
    }
    parts
}

/// `u[a][xi][..] = (G k_a G^T)[xi]` for `rows` kernels whose taps `tap(a, y, x)` are slices of
/// `cols` channels, vectorised over the channels, one kernel row per rayon task. Plane `xi` is
/// the `(rows, cols)` matrix [`plane`] views: a kernel held as `(c_out, 3, 3, c_in)` gives
/// planes `(c_out, c_in)`, one held as `(3, 3, c_in, c_out)` planes `(c_in, c_out)`.
#[allow(clippy::needless_range_loop)] // the channel index j addresses 9 taps and 16 outputs
pub fn transform_kernels<'w>(
    rows: usize,
    cols: usize,
    tap: impl Fn(usize, usize, usize) -> &'w [f32] + Sync,
    u: &mut Vec<f32>,
) {
    u.resize(16 * rows * cols, 0.0);
    u.par_chunks_mut(16 * cols)
        .enumerate()
        .for_each(|(a, out)| {
            let k: [&[f32]; 9] = std::array::from_fn(|t| &tap(a, t / 3, t % 3)[..cols]);
            for j in 0..cols {
                // t = G k (rows of G: k0; (k0+k1+k2)/2; (k0-k1+k2)/2; k2), then t G^T likewise.
                let col = |x: usize| {
                    let (k0, k1, k2) = (k[x][j], k[3 + x][j], k[6 + x][j]);
                    [k0, 0.5 * (k0 + k1 + k2), 0.5 * (k0 - k1 + k2), k2]
                };
                let (c0, c1, c2) = (col(0), col(1), col(2));
                for r in 0..4 {
                    let (t0, t1, t2) = (c0[r], c1[r], c2[r]);
                    let at = r * 4 * cols + j;
                    out[at] = t0;
                    out[at + cols] = 0.5 * (t0 + t1 + t2);
                    out[at + 2 * cols] = 0.5 * (t0 - t1 + t2);
                    out[at + 3 * cols] = t2;
                }
            }
        });
}

/// Plane `xi` of transformed weights from [`transform_kernels`]: `(rows, cols)`, rows
/// `16 * cols` apart (the 16 planes are interleaved, each kernel's 16 values together).
pub fn plane(u: &[f32], xi: usize, rows: usize, cols: usize) -> Mat<'_> {
    Mat {
        data: &u[xi * cols..],
        rows,
        cols,
        rs: 16 * cols,
        cs: 1,
    }
}

/// The 16 planes of [`transform_kernels`]' `u` one after another: plane `xi` is the contiguous
/// `(rows, cols)` matrix at `out[xi * rows * cols..]`. A copy, no arithmetic: for inference,
/// which multiplies by the same planes on every call, where rows `16 * cols` apart (4 KiB for
/// 64 channels) would fall into the same cache sets.
pub fn contiguous_planes(u: &[f32], rows: usize, cols: usize, out: &mut Vec<f32>) {
    out.resize(16 * rows * cols, 0.0);
    for (xi, dst) in out.chunks_exact_mut(rows * cols).enumerate() {
        for (r, dst) in dst.chunks_exact_mut(cols).enumerate() {
            dst.copy_from_slice(&u[(r * 16 + xi) * cols..][..cols]);
        }
    }
}

/// `B^T d B` of the 4x4 patch `d` of tile `(image, ty, tx)` of `x` (NHWC, images `(h, w)`,
/// `c` channels) into `v[xi * stride + at ..][..c]` for the 16 positions `xi`; `scratch`
/// holds at least 32 `c` values.
#[allow(clippy::too_many_arguments)]
pub fn input_transform(
    x: &[f32],
    (h, w): (usize, usize),
    c: usize,
    (image, ty, tx): (usize, usize, usize),
    v: &mut [f32],
    stride: usize,
    at: usize,
    scratch: &mut [f32],
) {
    let (d, e) = scratch.split_at_mut(16 * c);
    // d[(r * 4 + col) * c ..]: the patch, zero outside the image.
    for (rc, dst) in d.chunks_exact_mut(c).enumerate() {
        let iy = (2 * ty + rc / 4).wrapping_sub(1);
        let ix = (2 * tx + rc % 4).wrapping_sub(1);
        if iy < h && ix < w {
            let src = ((image * h + iy) * w + ix) * c;
            dst.copy_from_slice(&x[src..src + c]);
        } else {
            dst.fill(0.0);
        }
    }
    let at_rc = |r: usize, col: usize| (r * 4 + col) * c..(r * 4 + col + 1) * c;
    // e = B^T d (rows), then v = e B (columns).
    for col in 0..4 {
        for (r, (a, b, sign)) in BT_PAIRS.iter().enumerate() {
            add_signed(
                &mut e[at_rc(r, col)],
                &d[at_rc(*a, col)],
                &d[at_rc(*b, col)],
                *sign,
            );
        }
    }
    for r in 0..4 {
        for (col, (a, b, sign)) in BT_PAIRS.iter().enumerate() {
            let xi = r * 4 + col;
            let dst = &mut v[xi * stride + at..xi * stride + at + c];
            add_signed(dst, &e[at_rc(r, *a)], &e[at_rc(r, *b)], *sign);
        }
    }
}

/// `A^T m A` of tile `(image, ty, tx)` of images `(h, w)`, where m's 16 slices of `c` values
/// are at `m[xi * stride + at ..]`: hands each of the tile's output pixels inside the image
/// to `epilogue(pixel, values)` (pixel = `(image * h + y) * w + x`, values its `c` channels),
/// which stores it (with bias, residual, activation, as the caller needs); `scratch` holds at
/// least 12 `c` values.
#[allow(clippy::too_many_arguments)]
pub fn output_transform(
    m: &[f32],
    stride: usize,
    at: usize,
    (h, w): (usize, usize),
    c: usize,
    (image, ty, tx): (usize, usize, usize),
    scratch: &mut [f32],
    mut epilogue: impl FnMut(usize, &[f32]),
) {
    let (s, y) = scratch.split_at_mut(8 * c);
    let mt = |r: usize, col: usize| &m[(r * 4 + col) * stride + at..][..c];
    // A^T's rows as x[a] + sign * (x[b] + x[cc]): s = A^T m (2x4), y = s A (2x2).
    for col in 0..4 {
        for (r, (a, b, cc, sign)) in AT_TRIPLES.iter().enumerate() {
            let dst = &mut s[(r * 4 + col) * c..(r * 4 + col + 1) * c];
            add3_signed(dst, mt(*a, col), mt(*b, col), mt(*cc, col), *sign);
        }
    }
    for r in 0..2 {
        for (col, (a, b, cc, sign)) in AT_TRIPLES.iter().enumerate() {
            let sl = |k: usize| &s[(r * 4 + k) * c..(r * 4 + k + 1) * c];
            let dst = &mut y[(r * 2 + col) * c..(r * 2 + col + 1) * c];
            add3_signed(dst, sl(*a), sl(*b), sl(*cc), *sign);
        }
    }
    for (rc, src) in y.chunks_exact(c).take(4).enumerate() {
        let (oy, ox) = (2 * ty + rc / 2, 2 * tx + rc % 2);
        if oy < h && ox < w {
            epilogue((image * h + oy) * w + ox, src);
        }
    }
}

/// Scratch values [`convolve_tile_rows`] needs for `tiles` tiles of `c_in` input and `c_out`
/// output channels: their transformed inputs and products, and one tile's transform space.
pub fn tile_rows_scratch_len(tiles: usize, c_in: usize, c_out: usize) -> usize {
    16 * tiles * (c_in + c_out) + 32 * (c_in + c_out)
}

/// One chunk of a Winograd F(2x2, 3x3) convolution, the loop both CPU engines run: the tile
/// rows `first..first + rows` (counted across the batch) of the NHWC batch `x` (images `hw`,
/// `c_in` channels) are transformed ([`input_transform`]), multiplied position by position
/// with the weights (`planes(xi)`: the `(c_in, c_out)` matrix of position `xi`; products on
/// `par`), and each output pixel of the chunk is handed to `store(pixel, values)`
/// ([`output_transform`]). `scratch` holds at least [`tile_rows_scratch_len`] values.
#[allow(clippy::too_many_arguments)]
pub fn convolve_tile_rows<'w>(
    x: &[f32],
    hw: (usize, usize),
    (c_in, c_out): (usize, usize),
    (first, rows): (usize, usize),
    planes: impl Fn(usize) -> Mat<'w>,
    par: Parallelism,
    scratch: &mut [f32],
    mut store: impl FnMut(usize, &[f32]),
) {
    let (th, tw) = tile_grid(hw);
    let count = rows * tw;
    let tile = |t: usize| {
        let tr = first + t / tw;
        (tr / th, tr % th, t % tw)
    };
    let (v, rest) = scratch.split_at_mut(16 * count * c_in);
    let (m, tile_scratch) = rest.split_at_mut(16 * count * c_out);
    for t in 0..count {
        input_transform(
            x,
            hw,
            c_in,
            tile(t),
            v,
            count * c_in,
            t * c_in,
            tile_scratch,
        );
    }
    for xi in 0..16 {
        gemm(
            &mut m[xi * count * c_out..(xi + 1) * count * c_out],
            (count, c_out),
            false,
            Mat::rows(&v[xi * count * c_in..], count, c_in),
            planes(xi),
            par,
        );
    }
    for t in 0..count {
        let (stride, at) = (count * c_out, t * c_out);
        output_transform(m, stride, at, hw, c_out, tile(t), tile_scratch, &mut store);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BT: [[f64; 4]; 4] = [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ];
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

    /// `l x r^T` for `l` (a, n), `x` (n, n), `r` (b, n), in f64.
    fn sandwich<const A: usize, const B: usize, const N: usize>(
        l: &[[f64; N]; A],
        x: &[[f64; N]; N],
        r: &[[f64; N]; B],
    ) -> [[f64; B]; A] {
        std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                let mut acc = 0.0;
                for (p, lp) in l[i].iter().enumerate() {
                    for (q, rq) in r[j].iter().enumerate() {
                        acc += lp * x[p][q] * rq;
                    }
                }
                acc
            })
        })
    }

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

    #[test]
    fn applies_to_wide_enough_3x3_convolutions_with_small_enough_weights() {
        assert!(applies(3, 16, 16) && applies(3, 64, 160) && applies(3, 320, 320));
        assert!(!applies(1, 64, 64) && !applies(3, 3, 64) && !applies(3, 64, 8));
        // 16 * 640 * 640 * 4 bytes = 25 MiB: ResNet-12's widest block stays im2col.
        assert!(!applies(3, 640, 640) && !applies(3, 320, 640));
    }

    /// Every plane entry of both layouts a kernel's axes give, and of the contiguous planes, is
    /// `G g G^T` in f64.
    #[test]
    fn weight_transform_is_g_g_gt() {
        let (c_out, c_in) = (5, 3);
        let ohwi = values(c_out * 9 * c_in, 7);
        let g = |o: usize, i: usize| -> [[f64; 3]; 3] {
            std::array::from_fn(|y| {
                std::array::from_fn(|x| f64::from(ohwi[((o * 3 + y) * 3 + x) * c_in + i]))
            })
        };
        let hwio: Vec<f32> = (0..9 * c_in * c_out)
            .map(|j| {
                let (tap, i, o) = (j / (c_in * c_out), (j / c_out) % c_in, j % c_out);
                ohwi[(o * 9 + tap) * c_in + i]
            })
            .collect();
        let (mut out_in, mut in_out) = (Vec::new(), Vec::new());
        transform_kernels(
            c_out,
            c_in,
            |o, y, x| &ohwi[((o * 3 + y) * 3 + x) * c_in..][..c_in],
            &mut out_in,
        );
        transform_kernels(
            c_in,
            c_out,
            |i, y, x| &hwio[((y * 3 + x) * c_in + i) * c_out..][..c_out],
            &mut in_out,
        );
        let mut planes = Vec::new();
        contiguous_planes(&in_out, c_in, c_out, &mut planes);
        for o in 0..c_out {
            for i in 0..c_in {
                let want = sandwich(&G, &g(o, i), &G);
                for xi in 0..16 {
                    let want = want[xi / 4][xi % 4];
                    let a = plane(&out_in, xi, c_out, c_in);
                    let b = plane(&in_out, xi, c_in, c_out);
                    let c = planes[(xi * c_in + i) * c_out + o];
                    for got in [a.data[o * a.rs + i * a.cs], b.data[i * b.rs + o * b.cs], c] {
                        assert!((f64::from(got) - want).abs() < 1e-6, "{o} {i} {xi}");
                    }
                }
            }
        }
    }

    /// Every tile of odd-sized images (edge tiles read zeros) against `B^T d B` in f64,
    /// written at its strided place.
    #[test]
    fn input_transform_is_bt_d_b() {
        let ((n, h, w), c) = ((2, 5, 3), 4);
        let x = values(n * h * w * c, 3);
        let (th, tw) = tile_grid((h, w));
        let tiles = n * th * tw;
        let mut v = vec![f32::NAN; 16 * tiles * c];
        let mut scratch = vec![0.0; 32 * c];
        for t in 0..tiles {
            let tile = (t / (th * tw), (t / tw) % th, t % tw);
            input_transform(&x, (h, w), c, tile, &mut v, tiles * c, t * c, &mut scratch);
        }
        for t in 0..tiles {
            let (image, ty, tx) = (t / (th * tw), (t / tw) % th, t % tw);
            for ch in 0..c {
                let d: [[f64; 4]; 4] = std::array::from_fn(|r| {
                    std::array::from_fn(|col| {
                        let (iy, ix) = ((2 * ty + r) as isize - 1, (2 * tx + col) as isize - 1);
                        if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                            let p = (image * h + iy as usize) * w + ix as usize;
                            f64::from(x[p * c + ch])
                        } else {
                            0.0
                        }
                    })
                });
                let want = sandwich(&BT, &d, &BT);
                for xi in 0..16 {
                    let got = f64::from(v[xi * tiles * c + t * c + ch]);
                    assert!((got - want[xi / 4][xi % 4]).abs() < 1e-6, "tile {t} {xi}");
                }
            }
        }
    }

    /// Chunks of tile rows of odd-height images own exactly their tiles' output rows.
    #[test]
    fn tile_rows_split_the_output_at_their_first_pixels() {
        let ((n, h, w), c) = ((2, 5, 3), 2);
        assert_eq!(tile_grid((h, w)), (3, 2));
        let starts: Vec<usize> = (0..=6).map(|tr| tile_row_start((h, w), tr)).collect();
        assert_eq!(starts, [0, 6, 12, 15, 21, 27, 30]);
        let mut out = vec![0.0; n * h * w * c];
        let parts = split_by_tile_rows(&mut out, (h, w), c, &[(0, 2), (2, 3), (5, 1)]);
        let lens: Vec<_> = parts.iter().map(|(f, n, p)| (*f, *n, p.len())).collect();
        assert_eq!(lens, [(0, 2, 24), (2, 3, 30), (5, 1, 6)]);
    }

    /// `A^T m A` in f64, each output pixel once, none past the image edge.
    #[test]
    fn output_transform_is_at_m_a() {
        let ((n, h, w), c) = ((2, 3, 5), 3);
        let (th, tw) = tile_grid((h, w));
        let tiles = n * th * tw;
        let m = values(16 * tiles * c, 5);
        let mut out = vec![f32::NAN; n * h * w * c];
        let mut scratch = vec![0.0; 12 * c];
        for t in 0..tiles {
            let tile = (t / (th * tw), (t / tw) % th, t % tw);
            output_transform(
                &m,
                tiles * c,
                t * c,
                (h, w),
                c,
                tile,
                &mut scratch,
                |p, y| {
                    let dst = &mut out[p * c..(p + 1) * c];
                    assert!(dst.iter().all(|v| v.is_nan()), "pixel {p} written twice");
                    dst.copy_from_slice(y);
                },
            );
        }
        for (p, pixel) in out.chunks_exact(c).enumerate() {
            let (image, y, x) = (p / (h * w), (p / w) % h, p % w);
            let t = (image * th + y / 2) * tw + x / 2;
            for (ch, got) in pixel.iter().enumerate() {
                let mt: [[f64; 4]; 4] = std::array::from_fn(|r| {
                    std::array::from_fn(|col| f64::from(m[(r * 4 + col) * tiles * c + t * c + ch]))
                });
                let want = sandwich(&AT, &mt, &AT)[y % 2][x % 2];
                assert!((f64::from(*got) - want).abs() < 1e-6, "pixel {p}");
            }
        }
    }

    /// The pairs and triples are the textbook matrices
    /// B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], A^T = [[1,1,1,0],[0,1,-1,-1]].
    #[test]
    fn rows_are_lavin_and_grays_matrices() {
        let bt = [
            [1.0, 0.0, -1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, -1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, -1.0],
        ];
        let at = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
        let x = [[3.0f32], [-2.0], [5.0], [7.0]];
        for (row, (a, b, sign)) in bt.iter().zip(BT_PAIRS) {
            let mut d = [0.0];
            add_signed(&mut d, &x[a], &x[b], sign);
            let want: f32 = row.iter().zip(&x).map(|(r, v)| r * v[0]).sum();
            assert_eq!(d[0], want);
        }
        for (row, (a, b, c, sign)) in at.iter().zip(AT_TRIPLES) {
            let mut d = [0.0];
            add3_signed(&mut d, &x[a], &x[b], &x[c], sign);
            let want: f32 = row.iter().zip(&x).map(|(r, v)| r * v[0]).sum();
            assert_eq!(d[0], want);
        }
    }
}
