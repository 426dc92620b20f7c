//! NCHW (the model's and PyTorch's layout) to and from NHWC (the kernels' layout), and a
//! convolution weight's PyTorch layout `(o, i, k, k)` (OIHW) to and from the kernels' two:
//! the rows of an im2col product `(k, k, i, o)` (HWIO, inference) and `(o, k, k, i)` (OHWI,
//! training's explicit backward).

use rayon::prelude::*;

/// `(n, c, hw)` -> `(n, hw, c)`, one image per task.
///
/// # Panics
/// When either slice is shorter than `n * c * hw`.
pub fn nchw_to_nhwc(src: &[f32], (n, c, hw): (usize, usize, usize), dst: &mut [f32]) {
    let len = n * c * hw;
    if c == 1 {
        dst[..len].copy_from_slice(&src[..len]);
        return;
    }
    dst[..len]
        .par_chunks_mut(c * hw)
        .zip(src[..len].par_chunks(c * hw))
        .for_each(|(dst, src)| {
            for ch in 0..c {
                for (p, v) in src[ch * hw..(ch + 1) * hw].iter().enumerate() {
                    dst[p * c + ch] = *v;
                }
            }
        });
}

/// `(n, hw, c)` -> `(n, c, hw)`, one image per task.
///
/// # Panics
/// When either slice is shorter than `n * c * hw`.
pub fn nhwc_to_nchw(src: &[f32], (n, c, hw): (usize, usize, usize), dst: &mut [f32]) {
    let len = n * c * hw;
    if c == 1 {
        dst[..len].copy_from_slice(&src[..len]);
        return;
    }
    dst[..len]
        .par_chunks_mut(c * hw)
        .zip(src[..len].par_chunks(c * hw))
        .for_each(|(dst, src)| {
            for ch in 0..c {
                for (p, d) in dst[ch * hw..(ch + 1) * hw].iter_mut().enumerate() {
                    *d = src[p * c + ch];
                }
            }
        });
}

/// The shape of an NHWC batch: `n` images of `(h, w)` pixels (the channels are the layer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Images.
    pub n: usize,
    /// Rows of each.
    pub h: usize,
    /// Columns of each.
    pub w: usize,
}

impl Shape {
    /// Pixels in the batch.
    pub fn pixels(self) -> usize {
        self.n * self.h * self.w
    }

    /// After a 2x2 max-pool (floor: an odd last row or column is dropped, as PyTorch).
    pub fn pooled(self) -> Shape {
        Shape {
            n: self.n,
            h: self.h / 2,
            w: self.w / 2,
        }
    }
}

/// The offsets of weight `(co, ci, tap)` (tap = `ky * k + kx`) of an `(o, i, k)` convolution
/// in OIHW and in `layout`, for every weight.
fn weight_offsets(
    (o, i, k): (usize, usize, usize),
    layout: fn(usize, usize, usize, (usize, usize, usize)) -> usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..o).flat_map(move |co| {
        (0..i).flat_map(move |ci| {
            (0..k * k).map(move |tap| {
                (
                    co,
                    (co * i + ci) * k * k + tap,
                    layout(co, ci, tap, (o, i, k)),
                )
            })
        })
    })
}

fn hwio(co: usize, ci: usize, tap: usize, (o, i, _): (usize, usize, usize)) -> usize {
    (tap * i + ci) * o + co
}

fn ohwi(co: usize, ci: usize, tap: usize, (_, i, k): (usize, usize, usize)) -> usize {
    (co * k * k + tap) * i + ci
}

/// An OIHW weight `(o, i, k, k)` as the rows of an im2col product, `(k * k * i, o)` row-major
/// (rows ordered `[ky][kx][ci]`), each value mapped by `f(output channel, value)` on the way
/// (inference folds BatchNorm's per-channel scale in so).
///
/// # Panics
/// When `w` is not `o * i * k * k` values.
pub fn oihw_to_hwio<T: Copy, U: Copy + Default>(
    w: &[T],
    dims: (usize, usize, usize),
    f: impl Fn(usize, T) -> U,
) -> Vec<U> {
    assert_eq!(w.len(), dims.0 * dims.1 * dims.2 * dims.2);
    let mut out = vec![U::default(); w.len()];
    for (co, from, to) in weight_offsets(dims, hwio) {
        out[to] = f(co, w[from]);
    }
    out
}

/// [`oihw_to_hwio`]'s inverse (without a map).
///
/// # Panics
/// When `rows` is not `o * i * k * k` values.
pub fn hwio_to_oihw<T: Copy + Default>(rows: &[T], dims: (usize, usize, usize)) -> Vec<T> {
    assert_eq!(rows.len(), dims.0 * dims.1 * dims.2 * dims.2);
    let mut out = vec![T::default(); rows.len()];
    for (_, to, from) in weight_offsets(dims, hwio) {
        out[to] = rows[from];
    }
    out
}

/// An OIHW weight `(o, i, k, k)` as `(o, k, k, i)`.
///
/// # Panics
/// When `w` is not `o * i * k * k` values.
pub fn oihw_to_ohwi<T: Copy + Default>(w: &[T], dims: (usize, usize, usize)) -> Vec<T> {
    assert_eq!(w.len(), dims.0 * dims.1 * dims.2 * dims.2);
    let mut out = vec![T::default(); w.len()];
    for (_, from, to) in weight_offsets(dims, ohwi) {
        out[to] = w[from];
    }
    out
}

/// [`oihw_to_ohwi`]'s inverse.
///
/// # Panics
/// When `w` is not `o * i * k * k` values.
pub fn ohwi_to_oihw<T: Copy + Default>(w: &[T], dims: (usize, usize, usize)) -> Vec<T> {
    assert_eq!(w.len(), dims.0 * dims.1 * dims.2 * dims.2);
    let mut out = vec![T::default(); w.len()];
    for (_, to, from) in weight_offsets(dims, ohwi) {
        out[to] = w[from];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_move_each_value_where_its_index_says() {
        let (n, c, hw) = (2, 3, 4);
        let nchw: Vec<f32> = (0..n * c * hw).map(|i| i as f32).collect();
        let mut nhwc = vec![0.0; nchw.len()];
        nchw_to_nhwc(&nchw, (n, c, hw), &mut nhwc);
        for i in 0..n {
            for ch in 0..c {
                for p in 0..hw {
                    assert_eq!(nhwc[(i * hw + p) * c + ch], nchw[(i * c + ch) * hw + p]);
                }
            }
        }
        let mut back = vec![0.0; nchw.len()];
        nhwc_to_nchw(&nhwc, (n, c, hw), &mut back);
        assert_eq!(back, nchw);
    }

    /// Each weight lands where its index says, by hand on a (2, 3, 2) kernel, and the
    /// inverses undo the moves.
    #[test]
    fn weight_layouts_by_hand() {
        let (o, i, k) = (2, 3, 2);
        let oihw: Vec<i32> = (0..(o * i * k * k) as i32).collect();
        let at =
            |co: usize, ci: usize, ky: usize, kx: usize| oihw[((co * i + ci) * k + ky) * k + kx];
        let hwio = oihw_to_hwio(&oihw, (o, i, k), |co, v| v * 10 + co as i32);
        let ohwi = oihw_to_ohwi(&oihw, (o, i, k));
        for co in 0..o {
            for ci in 0..i {
                for ky in 0..k {
                    for kx in 0..k {
                        let v = at(co, ci, ky, kx);
                        assert_eq!(hwio[((ky * k + kx) * i + ci) * o + co], v * 10 + co as i32);
                        assert_eq!(ohwi[((co * k + ky) * k + kx) * i + ci], v);
                    }
                }
            }
        }
        let plain = oihw_to_hwio(&oihw, (o, i, k), |_, v| v);
        assert_eq!(hwio_to_oihw(&plain, (o, i, k)), oihw);
        assert_eq!(ohwi_to_oihw(&ohwi, (o, i, k)), oihw);
    }
}
