//! im2col: a convolution as one matrix product, rows = output pixels; and its adjoint,
//! col2im, for the backward pass.

use std::ops::Range;

use crate::window::Window;

/// Rows `pixels` of the im2col matrix of the NHWC batch `x` (images `(h, w)` with `c`
/// channels, padding `k / 2`) into `cols`, one row of `depth` values per pixel: the first
/// `k * k * c` ordered `[ky][kx][c]` (zero outside the image), the rest left to the caller
/// (inference appends the fused shortcut's channels there).
///
/// # Panics
/// When `depth < k * k * c`, `cols` holds fewer than `pixels.len()` rows or `x` is too short
/// for the pixels' images.
pub fn im2col(
    x: &[f32],
    (h, w): (usize, usize),
    c: usize,
    k: usize,
    pixels: Range<usize>,
    depth: usize,
    cols: &mut [f32],
) {
    assert!(depth >= k * k * c && cols.len() >= pixels.len() * depth);
    let pixels = ConvRows::Pixels(pixels).pixels((h, w));
    let copy = |dst: &mut [f32], src: &[f32]| dst.copy_from_slice(src);
    let window = Window::same(k);
    im2col_pixels(x, (h, w), c, window, pixels, depth, 0.0, cols, copy);
}

/// [`im2col`] for any window (a `k x k` kernel, any stride and padding): rows `pixels` of
/// the batch's OUTPUT pixels (image-major over the `window.output_hw((h, w))` grid), each
/// `depth` values of which the first `k * k * c` are the taps `[ky][kx][c]` (zero in the
/// padding) and the rest are left to the caller.
///
/// # Panics
/// When the window does not fit the image ([`Window::output_hw`] is `None`),
/// `depth < k * k * c`, `cols` holds fewer than `pixels.len()` rows or `x` is too short for
/// the pixels' images.
pub fn im2col_window(
    x: &[f32],
    (h, w): (usize, usize),
    c: usize,
    window: Window,
    pixels: Range<usize>,
    depth: usize,
    cols: &mut [f32],
) {
    let k = window.k;
    assert!(depth >= k * k * c && cols.len() >= pixels.len() * depth);
    let out_hw = window.output_hw((h, w)).expect("the window fits the image");
    let pixels = ConvRows::Pixels(pixels).pixels(out_hw);
    let copy = |dst: &mut [f32], src: &[f32]| dst.copy_from_slice(src);
    im2col_pixels(x, (h, w), c, window, pixels, depth, 0.0, cols, copy);
}

/// The adjoint of [`im2col_window`], for a convolution's input gradient: adds each row of
/// `cols` (the gradients of output pixels `pixels`, `depth` values apart, the first
/// `k * k * c` ordered `[ky][kx][c]`) to the NHWC input pixels its taps read, in `dx`; taps
/// in the padding are dropped. It adds to `dx` rather than overwriting it, since windows
/// that overlap (a stride below `k`) share input pixels: for a plain gradient a caller
/// clears `dx` first. Rows of different images touch different images of `dx`, so a caller
/// that splits the work across threads splits it by image (each image's slices, its pixels
/// counted from 0).
///
/// # Panics
/// As [`im2col_window`], with `dx` in place of `x`.
pub fn col2im(
    cols: &[f32],
    (h, w): (usize, usize),
    c: usize,
    window: Window,
    pixels: Range<usize>,
    depth: usize,
    dx: &mut [f32],
) {
    let Window { k, stride, pad } = window;
    assert!(depth >= k * k * c && cols.len() >= pixels.len() * depth);
    let out_hw = window.output_hw((h, w)).expect("the window fits the image");
    let pixels = ConvRows::Pixels(pixels).pixels(out_hw);
    let add = |dst: &mut [f32], src: &[f32]| dst.iter_mut().zip(src).for_each(|(d, g)| *d += g);
    for ((image, oy, ox), row) in pixels.zip(cols.chunks_exact(depth)) {
        // The window's first column, wrapped past usize::MAX when it starts in the padding.
        let left = (ox * stride).wrapping_sub(pad);
        for (ky, tap_row) in row[..k * k * c].chunks_exact(k * c).enumerate() {
            let iy = (oy * stride + ky).wrapping_sub(pad);
            if iy >= h {
                continue;
            }
            let line = &mut dx[(image * h + iy) * w * c..(image * h + iy + 1) * w * c];
            if left < w && left + k <= w {
                add(&mut line[left * c..(left + k) * c], tap_row);
            } else {
                for (kx, tap) in tap_row.chunks_exact(c).enumerate() {
                    let ix = left.wrapping_add(kx);
                    if ix < w {
                        add(&mut line[ix * c..(ix + 1) * c], tap);
                    }
                }
            }
        }
    }
}

/// [`im2col`] of int8 activation codes ([`crate::int8::quantize_activations`]), padded with
/// `zero_point` (the code of 0.0), for the output pixels `rows` in their order; `depth` is the
/// row stride the int8 product reads ([`crate::int8::PackedWeights::row_stride`]).
///
/// # Panics
/// As [`im2col`].
#[allow(clippy::too_many_arguments)]
pub fn im2col_codes(
    x: &[u8],
    (h, w): (usize, usize),
    c: usize,
    k: usize,
    rows: &ConvRows,
    depth: usize,
    zero_point: u8,
    cols: &mut [u8],
) {
    assert!(depth >= k * k * c && cols.len() >= rows.len() * depth);
    let pixels = rows.pixels((h, w));
    let window = Window::same(k);
    im2col_code_pixels(x, (h, w), c, window, pixels, depth, zero_point, cols);
}

/// [`im2col_codes`] for any window, as [`im2col_window`] is [`im2col`]'s: `rows` are
/// output pixels (or 2x2 windows of them) of the `window.output_hw((h, w))` grid.
///
/// # Panics
/// As [`im2col_window`].
#[allow(clippy::too_many_arguments)]
pub fn im2col_codes_window(
    x: &[u8],
    (h, w): (usize, usize),
    c: usize,
    window: Window,
    rows: &ConvRows,
    depth: usize,
    zero_point: u8,
    cols: &mut [u8],
) {
    let k = window.k;
    assert!(depth >= k * k * c && cols.len() >= rows.len() * depth);
    let out_hw = window.output_hw((h, w)).expect("the window fits the image");
    let pixels = rows.pixels(out_hw);
    im2col_code_pixels(x, (h, w), c, window, pixels, depth, zero_point, cols);
}

/// [`im2col_pixels`] of codes.
#[allow(clippy::too_many_arguments)]
fn im2col_code_pixels(
    x: &[u8],
    hw: (usize, usize),
    c: usize,
    window: Window,
    pixels: RowPixels,
    depth: usize,
    zero_point: u8,
    cols: &mut [u8],
) {
    // The input layers' tap rows are a few bytes (3 for one channel, 9 for RGB): copied as
    // fixed-size arrays, not through a call to memcpy each.
    fn fixed<const RUN: usize>(dst: &mut [u8], src: &[u8]) {
        let run: [u8; RUN] = src.try_into().expect("a run of RUN codes");
        dst.copy_from_slice(&run);
    }
    let zero = zero_point;
    match window.k * c {
        3 => im2col_pixels(x, hw, c, window, pixels, depth, zero, cols, fixed::<3>),
        9 => im2col_pixels(x, hw, c, window, pixels, depth, zero, cols, fixed::<9>),
        _ => {
            let copy = |dst: &mut [u8], src: &[u8]| dst.copy_from_slice(src);
            im2col_pixels(x, hw, c, window, pixels, depth, zero, cols, copy)
        }
    }
}

/// Which output pixels of a convolution are computed, in which order: one row of the
/// product each. `(h, w)` below is the output's size: the input's for a stride-1
/// convolution, [`Window::output_hw`] of it for any other window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvRows {
    /// Pixels `range` of the batch (image-major, then rows, then columns), in that order.
    Pixels(Range<usize>),
    /// The 2x2 max-pooling windows `range` of the batch (`h / 2` by `w / 2` per image,
    /// image-major; a last odd row or column of pixels is in none), each as its 4 pixels:
    /// top left, top right, bottom left, bottom right.
    Windows(Range<usize>),
}

impl ConvRows {
    /// Rows of the product.
    pub fn len(&self) -> usize {
        match self {
            ConvRows::Pixels(range) => range.len(),
            ConvRows::Windows(range) => 4 * range.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(image, y, x)` of each row, in order.
    pub fn pixels(&self, (h, w): (usize, usize)) -> RowPixels {
        match self {
            ConvRows::Pixels(range) => {
                let p = range.start;
                let (h1, w1) = (h.max(1), w.max(1));
                RowPixels(Walk::InOrder {
                    at: (p / (h1 * w1), (p / w1) % h1, p % w1),
                    left: range.len(),
                    hw: (h, w),
                })
            }
            ConvRows::Windows(range) => RowPixels(Walk::ByWindow {
                windows: range.clone(),
                corner: 0,
                hw: (h, w),
            }),
        }
    }
}

/// The iterator of [`ConvRows::pixels`].
#[derive(Debug, Clone)]
pub struct RowPixels(Walk);

#[derive(Debug, Clone)]
enum Walk {
    /// Pixels in order: the next one's coordinates, advanced one step at a time (no
    /// divisions per pixel).
    InOrder {
        at: (usize, usize, usize),
        left: usize,
        hw: (usize, usize),
    },
    /// Windows: the next window and which of its 4 pixels is next.
    ByWindow {
        windows: Range<usize>,
        corner: usize,
        hw: (usize, usize),
    },
}

impl Iterator for RowPixels {
    type Item = (usize, usize, usize);

    #[inline]
    fn next(&mut self) -> Option<(usize, usize, usize)> {
        match &mut self.0 {
            Walk::InOrder { at, left, hw } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                let here = *at;
                at.2 += 1;
                if at.2 == hw.1 {
                    *at = (at.0, at.1 + 1, 0);
                    if at.1 == hw.0 {
                        *at = (at.0 + 1, 0, 0);
                    }
                }
                Some(here)
            }
            Walk::ByWindow {
                windows,
                corner,
                hw: (h, w),
            } => {
                if windows.start >= windows.end {
                    return None;
                }
                let (h2, w2, q) = (*h / 2, *w / 2, windows.start);
                let (image, y, x) = (q / (h2 * w2), 2 * ((q / w2) % h2), 2 * (q % w2));
                let here = (image, y + *corner / 2, x + *corner % 2);
                *corner += 1;
                if *corner == 4 {
                    *corner = 0;
                    windows.start += 1;
                }
                Some(here)
            }
        }
    }
}

/// The rows of a stride-1 `k x k` convolution (padding `k / 2`) of NHWC codes, read in place:
/// for each output pixel, `k` runs of `k * c` codes, one per kernel row `ky`, each the `k`
/// neighbouring pixels' channels (`[kx][c]`, contiguous in NHWC). A run inside the image is
/// read from the batch itself; the others (an image row above or below the image, or a pixel
/// at a left or right edge) from [`TapRuns::pad`], where they are written out with the zero
/// point. What [`crate::int8::Kernel::convolve`] reads instead of im2col rows (the same
/// codes in the same order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapRuns {
    /// Per pixel and kernel row: where its run starts, in the batch, or with [`IN_PAD`] set,
    /// in [`TapRuns::pad`].
    pub offsets: Vec<usize>,
    /// The runs not inside the image: first one of zero points, then the edge pixels' runs.
    pub pad: Vec<u8>,
}

/// Marks an offset of [`TapRuns::offsets`] as one into [`TapRuns::pad`].
pub const IN_PAD: usize = 1 << (usize::BITS - 1);

/// [`TapRuns`] of the output pixels `rows` of the NHWC batch `x` (`(h, w)` images of `c`
/// channels, padded with `zero_point`).
///
/// # Panics
/// When `x` is too short for the pixels' images.
pub fn tap_runs(
    x: &[u8],
    (h, w): (usize, usize),
    c: usize,
    k: usize,
    rows: &ConvRows,
    zero_point: u8,
) -> TapRuns {
    let (pad, run, line) = (k / 2, k * c, w * c);
    let mut offsets = vec![IN_PAD; rows.len() * k];
    let mut pad_runs = vec![zero_point; run];
    for ((image, y, xx), offsets) in rows.pixels((h, w)).zip(offsets.chunks_exact_mut(k)) {
        let top = image * h;
        if xx >= pad && xx + pad < w {
            // Inside the image's width: each kernel row's run is in the batch (or, above or
            // below the image, the run of zero points).
            let start = (xx - pad) * c;
            for (ky, offset) in offsets.iter_mut().enumerate() {
                let iy = (y + ky).wrapping_sub(pad);
                if iy < h {
                    *offset = (top + iy) * line + start;
                }
            }
            continue;
        }
        // An edge pixel: its runs written out, the zero point outside the image.
        for (ky, offset) in offsets.iter_mut().enumerate() {
            let iy = (y + ky).wrapping_sub(pad);
            if iy >= h {
                continue;
            }
            let codes = &x[(top + iy) * line..(top + iy + 1) * line];
            *offset = IN_PAD | pad_runs.len();
            for kx in 0..k {
                let ix = (xx + kx).wrapping_sub(pad);
                match codes.get(ix * c..(ix + 1) * c).filter(|_| ix < w) {
                    Some(pixel) => pad_runs.extend_from_slice(pixel),
                    None => pad_runs.resize(pad_runs.len() + c, zero_point),
                }
            }
        }
    }
    TapRuns {
        offsets,
        pad: pad_runs,
    }
}

/// The im2col rows of the output pixels `(image, oy, ox)` of `window` over the `(h, w)`
/// images of `x`, one per `depth` values of `cols`.
#[allow(clippy::too_many_arguments)]
fn im2col_pixels<T: Copy>(
    x: &[T],
    (h, w): (usize, usize),
    c: usize,
    window: Window,
    pixels: impl Iterator<Item = (usize, usize, usize)>,
    depth: usize,
    zero: T,
    cols: &mut [T],
    copy_run: impl Fn(&mut [T], &[T]),
) {
    let Window { k, stride, pad } = window;
    for ((image, oy, ox), row) in pixels.zip(cols.chunks_exact_mut(depth)) {
        // The window's first column, wrapped past usize::MAX when it starts in the padding.
        let left = (ox * stride).wrapping_sub(pad);
        for (ky, tap_row) in row[..k * k * c].chunks_exact_mut(k * c).enumerate() {
            let iy = (oy * stride + ky).wrapping_sub(pad);
            if iy >= h {
                tap_row.fill(zero);
                continue;
            }
            let line = &x[(image * h + iy) * w * c..(image * h + iy + 1) * w * c];
            if left < w && left + k <= w {
                // The whole tap row is inside the image: one copy.
                copy_run(tap_row, &line[left * c..(left + k) * c]);
            } else {
                for (kx, tap) in tap_row.chunks_exact_mut(c).enumerate() {
                    let ix = left.wrapping_add(kx);
                    if ix < w {
                        tap.copy_from_slice(&line[ix * c..(ix + 1) * c]);
                    } else {
                        tap.fill(zero);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod window_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definition, pixel by pixel: 1x1 and 3x3 kernels, odd and one-pixel-wide
    /// images, a chunk starting mid-image, and a tail the kernel must not touch.
    #[test]
    fn rows_match_the_definition() {
        for ((n, h, w), c, k, tail) in [
            ((2, 5, 4), 3, 3, 0),
            ((1, 1, 7), 2, 3, 2),
            ((3, 3, 1), 4, 3, 1),
            ((2, 4, 3), 5, 1, 3),
        ] {
            let x: Vec<f32> = (0..n * h * w * c).map(|i| i as f32 + 1.0).collect();
            let depth = k * k * c + tail;
            let pixels = 1..n * h * w;
            let mut cols = vec![f32::NAN; pixels.len() * depth];
            im2col(&x, (h, w), c, k, pixels.clone(), depth, &mut cols);
            let pad = (k / 2) as isize;
            for (r, p) in pixels.clone().enumerate() {
                let (image, y, xx) = (p / (h * w), (p / w) % h, p % w);
                let row = &cols[r * depth..(r + 1) * depth];
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = y as isize + ky as isize - pad;
                        let ix = xx as isize + kx as isize - pad;
                        let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                        for ch in 0..c {
                            let want = if inside {
                                x[((image * h + iy as usize) * w + ix as usize) * c + ch]
                            } else {
                                0.0
                            };
                            assert_eq!(row[(ky * k + kx) * c + ch], want, "pixel {p}");
                        }
                    }
                }
                assert!(row[k * k * c..].iter().all(|v| v.is_nan()), "tail touched");
            }
            // The codes' version: the same rows, padded with the code of zero.
            let codes: Vec<u8> = x.iter().map(|&v| (v as usize % 97 + 1) as u8).collect();
            let mut code_cols = vec![7u8; pixels.len() * depth];
            im2col_codes(
                &codes,
                (h, w),
                c,
                k,
                &ConvRows::Pixels(pixels.clone()),
                depth,
                0,
                &mut code_cols,
            );
            for (i, (&code, &value)) in code_cols.iter().zip(&cols).enumerate() {
                let want = match value {
                    v if v.is_nan() => 7,
                    0.0 => 0,
                    v => (v as usize % 97 + 1) as u8,
                };
                assert_eq!(code, want, "code {i}");
            }
        }
    }
}
