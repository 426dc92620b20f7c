//! Max-pooling on NHWC activations: 2x2 with stride 2, and any window (torchvision's
//! `MaxPool2d(3, 2, 1)`), in floor mode (a last partial step is dropped, as PyTorch);
//! forward and backward. Global average pooling.

use rayon::prelude::*;

use crate::window::Window;

/// `(n, h, w, c)` -> `(n, h / 2, w / 2, c)`, the maximum of each window.
///
/// # Panics
/// When `input` is not `n * h * w * c` values or `out` not `n * (h / 2) * (w / 2) * c`.
pub fn max_pool_2x2(input: &[f32], (n, h, w): (usize, usize, usize), c: usize, out: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    assert_eq!(input.len(), n * h * w * c);
    assert_eq!(out.len(), n * oh * ow * c);
    if oh == 0 || ow == 0 {
        return;
    }
    let line = w * c;
    out.par_chunks_mut(ow * c).enumerate().for_each(|(i, dst)| {
        let (image, oy) = (i / oh, i % oh);
        let top = (image * h + 2 * oy) * line;
        let (a, b) = (&input[top..top + line], &input[top + line..top + 2 * line]);
        // Zipped slices rather than indices: no bounds checks, so the loop vectorises.
        let windows = a.chunks_exact(2 * c).zip(b.chunks_exact(2 * c));
        for (d, (a, b)) in dst.chunks_exact_mut(c).zip(windows) {
            let ((a0, a1), (b0, b1)) = (a.split_at(c), b.split_at(c));
            let columns = a0.iter().zip(a1).zip(b0.iter().zip(b1));
            for (v, ((&p, &q), (&r, &s))) in d.iter_mut().zip(columns) {
                *v = p.max(q).max(r).max(s);
            }
        }
    });
}

/// Backward of `max_pool_2x2(leaky_relu(z))` with respect to `z`, given the activation
/// `a = leaky_relu(z)` `(n, h, w, c)` and the gradient of the pooled output `d_out`: each
/// window's gradient goes to its first maximum in row-major order (PyTorch's choice), times
/// the activation's derivative (1 above zero, `slope` at or below); pixels outside every
/// window get 0.
///
/// # Panics
/// When the slices do not have the sizes of the shapes.
pub fn max_pool_2x2_leaky_backward(
    a: &[f32],
    (n, h, w): (usize, usize, usize),
    c: usize,
    slope: f32,
    d_out: &[f32],
    dz: &mut [f32],
) {
    let (oh, ow) = (h / 2, w / 2);
    assert_eq!(a.len(), n * h * w * c);
    assert_eq!(dz.len(), a.len());
    assert_eq!(d_out.len(), n * oh * ow * c);
    let row = w * c;
    if oh == 0 || ow == 0 {
        dz.fill(0.0);
        return;
    }
    dz.par_chunks_mut(h * row)
        .zip(a.par_chunks(h * row))
        .zip(d_out.par_chunks(oh * ow * c))
        .for_each(|((dz_img, a_img), d_img)| {
            for oy in 0..oh {
                let (dz_top, dz_bottom) =
                    dz_img[2 * oy * row..(2 * oy + 2) * row].split_at_mut(row);
                let top = &a_img[2 * oy * row..(2 * oy + 1) * row];
                let bottom = &a_img[(2 * oy + 1) * row..(2 * oy + 2) * row];
                for ox in 0..ow {
                    let at = 2 * ox * c;
                    let grad = &d_img[(oy * ow + ox) * c..][..c];
                    let (a0, a1) = (&top[at..at + c], &top[at + c..at + 2 * c]);
                    let (a2, a3) = (&bottom[at..at + c], &bottom[at + c..at + 2 * c]);
                    let (d0, d1) = dz_top[at..at + 2 * c].split_at_mut(c);
                    let (d2, d3) = dz_bottom[at..at + 2 * c].split_at_mut(c);
                    for j in 0..c {
                        let (v0, v1, v2, v3) = (a0[j], a1[j], a2[j], a3[j]);
                        let m = v0.max(v1).max(v2).max(v3);
                        let s0 = v0 == m;
                        let s1 = !s0 && v1 == m;
                        let s2 = !s0 && !s1 && v2 == m;
                        let s3 = !s0 && !s1 && !s2;
                        let gm = if m > 0.0 { grad[j] } else { slope * grad[j] };
                        d0[j] = if s0 { gm } else { 0.0 };
                        d1[j] = if s1 { gm } else { 0.0 };
                        d2[j] = if s2 { gm } else { 0.0 };
                        d3[j] = if s3 { gm } else { 0.0 };
                    }
                }
                // An odd last column belongs to no window.
                if w % 2 == 1 {
                    dz_top[(w - 1) * c..].fill(0.0);
                    dz_bottom[(w - 1) * c..].fill(0.0);
                }
            }
            // An odd last row belongs to no window.
            dz_img[2 * oh * row..].fill(0.0);
        });
}

/// `(n, h, w, c)` -> `(n, oh, ow, c)`, `(oh, ow) = window.output_hw((h, w))`: the maximum
/// of each window's pixels inside the image, as PyTorch's `MaxPool2d(k, stride, pad)`, whose
/// padding is -infinity (it never wins). Where a window holds equal maxima the first in
/// row-major order is the one taken (the one [`max_pool_backward`] routes to); a NaN is
/// not propagated unless it is the window's first pixel.
///
/// # Panics
/// When `2 * window.pad > window.k` (PyTorch's rule, which keeps a pixel in every window),
/// the image is empty or smaller than the window with its padding, or `input` is not
/// `n * h * w * c` values or `out` not `n * oh * ow * c`.
pub fn max_pool(
    input: &[f32],
    (n, h, w): (usize, usize, usize),
    c: usize,
    window: Window,
    out: &mut [f32],
) {
    let (oh, ow) = pooled_hw(window, (h, w));
    assert_eq!(input.len(), n * h * w * c);
    assert_eq!(out.len(), n * oh * ow * c);
    if out.is_empty() {
        return;
    }
    let line = w * c;
    out.par_chunks_mut(ow * c).enumerate().for_each(|(i, dst)| {
        let (image, oy) = (i / oh, i % oh);
        let rows = window.inside(oy, h);
        for (ox, d) in dst.chunks_exact_mut(c).enumerate() {
            let columns = window.inside(ox, w);
            let mut pixels = rows.clone().flat_map(|iy| {
                let top = (image * h + iy) * line;
                columns
                    .clone()
                    .map(move |ix| &input[top + ix * c..top + (ix + 1) * c])
            });
            d.copy_from_slice(pixels.next().expect("a pixel in every window"));
            for pixel in pixels {
                for (v, &p) in d.iter_mut().zip(pixel) {
                    // Strictly greater: a tie keeps the first maximum.
                    if p > *v {
                        *v = p;
                    }
                }
            }
        }
    });
}

/// Backward of [`max_pool`]: `d_input` (`(n, h, w, c)`, overwritten) gets each output's
/// gradient `d_out` at its window's first maximum in row-major order (PyTorch's choice),
/// summed where windows overlap; pixels that are no window's maximum get 0.
///
/// # Panics
/// As [`max_pool`], with `d_out` in place of `out`, and when `d_input` is not as long as
/// `input`.
pub fn max_pool_backward(
    input: &[f32],
    (n, h, w): (usize, usize, usize),
    c: usize,
    window: Window,
    d_out: &[f32],
    d_input: &mut [f32],
) {
    route_to_maxima(input, (n, h, w), c, window, None, d_out, d_input);
}

/// Backward of `max_pool(leaky_relu(z))` with respect to `z`, given the activation
/// `a = leaky_relu(z)` `(n, h, w, c)` and the gradient of the pooled output `d_out`: the
/// gradient [`max_pool_backward`] gives `a`, times the activation's derivative (1 above
/// zero, `slope` at or below; `slope` 0 is ReLU's). `dz` is overwritten.
///
/// # Panics
/// As [`max_pool_backward`].
pub fn max_pool_leaky_backward(
    a: &[f32],
    (n, h, w): (usize, usize, usize),
    c: usize,
    window: Window,
    slope: f32,
    d_out: &[f32],
    dz: &mut [f32],
) {
    route_to_maxima(a, (n, h, w), c, window, Some(slope), d_out, dz);
}

/// The output size of pooling `(h, w)` images with `window`.
///
/// # Panics
/// When the window breaks PyTorch's rule (`2 * pad <= k`), the image is empty or the
/// window does not fit it.
fn pooled_hw(window: Window, (h, w): (usize, usize)) -> (usize, usize) {
    assert!(2 * window.pad <= window.k, "padding over half the window");
    assert!(h > 0 && w > 0, "an empty image");
    window.output_hw((h, w)).expect("the window fits the image")
}

/// [`max_pool_backward`], then with `slope` the leaky ReLU's derivative at `input`.
#[allow(clippy::too_many_arguments)]
fn route_to_maxima(
    input: &[f32],
    (n, h, w): (usize, usize, usize),
    c: usize,
    window: Window,
    slope: Option<f32>,
    d_out: &[f32],
    d_input: &mut [f32],
) {
    let (oh, ow) = pooled_hw(window, (h, w));
    assert_eq!(input.len(), n * h * w * c);
    assert_eq!(d_input.len(), input.len());
    assert_eq!(d_out.len(), n * oh * ow * c);
    if input.is_empty() {
        return;
    }
    // By image: windows overlap within an image, never across.
    d_input
        .par_chunks_mut(h * w * c)
        .zip(input.par_chunks(h * w * c))
        .zip(d_out.par_chunks(oh * ow * c))
        .for_each(|((d_image, image), d_pooled)| {
            d_image.fill(0.0);
            // Per channel, the maximum so far and where it is in the image.
            let (mut best, mut best_at) = (vec![0.0f32; c], vec![0usize; c]);
            for (o, grad) in d_pooled.chunks_exact(c).enumerate() {
                let (rows, columns) = (window.inside(o / ow, h), window.inside(o % ow, w));
                let mut first = true;
                for iy in rows {
                    for ix in columns.clone() {
                        let at = (iy * w + ix) * c;
                        let pixel = &image[at..at + c];
                        if first {
                            best.copy_from_slice(pixel);
                            best_at.fill(at);
                            first = false;
                            continue;
                        }
                        for ((b, b_at), &p) in best.iter_mut().zip(&mut best_at).zip(pixel) {
                            if p > *b {
                                (*b, *b_at) = (p, at);
                            }
                        }
                    }
                }
                for (j, (&at, &g)) in best_at.iter().zip(grad).enumerate() {
                    d_image[at + j] += g;
                }
            }
            if let Some(slope) = slope {
                for (d, &v) in d_image.iter_mut().zip(image) {
                    if v <= 0.0 {
                        *d *= slope;
                    }
                }
            }
        });
}

/// Global average pool `(n, hw, c)` -> `(n, c)`, summed in f64 and rounded once.
///
/// # Panics
/// When `x` is not `n * hw * c` values or `out` not `n * c`.
pub fn global_avg_pool(x: &[f32], (n, hw): (usize, usize), c: usize, out: &mut [f32]) {
    assert_eq!(x.len(), n * hw * c);
    assert_eq!(out.len(), n * c);
    let mut sum = vec![0.0f64; c];
    for (image, feature) in x.chunks_exact(hw * c).zip(out.chunks_exact_mut(c)) {
        sum.fill(0.0);
        for pixel in image.chunks_exact(c) {
            for (s, &v) in sum.iter_mut().zip(pixel) {
                *s += f64::from(v);
            }
        }
        for (f, s) in feature.iter_mut().zip(&sum) {
            *f = (s / hw as f64) as f32;
        }
    }
}

#[cfg(test)]
mod window_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x5 single-channel image (odd both ways): the 1x2 output holds each window's
    /// maximum; the gradient goes to the first maximum of a tied window, scaled by the slope
    /// where the maximum is negative, and the dropped row and column get none.
    #[test]
    fn pooling_and_its_gradient_by_hand() {
        #[rustfmt::skip]
        let a = [
            1.0, 4.0, -3.0, -1.0, 9.0,
            4.0, 2.0, -2.0, -5.0, 9.0,
            7.0, 7.0, 7.0, 7.0, 7.0,
        ];
        let mut out = [0.0; 2];
        max_pool_2x2(&a, (1, 3, 5), 1, &mut out);
        assert_eq!(out, [4.0, -1.0]);
        let mut dz = [f32::NAN; 15];
        max_pool_2x2_leaky_backward(&a, (1, 3, 5), 1, 0.1, &[10.0, 10.0], &mut dz);
        #[rustfmt::skip]
        let want = [
            0.0, 10.0, 0.0, 1.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(dz, want);
    }

    #[test]
    fn global_average_is_the_mean_of_each_channel() {
        // Two images of 2 pixels, 2 channels.
        let x = [1.0, 10.0, 3.0, 30.0, -1.0, 0.5, 1.0, 0.25];
        let mut out = [0.0; 4];
        global_avg_pool(&x, (2, 2), 2, &mut out);
        assert_eq!(out, [2.0, 20.0, 0.0, 0.375]);
    }
}
