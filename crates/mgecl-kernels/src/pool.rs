//! 2x2 max-pooling, stride 2, floor mode (an odd last row or column is dropped, as PyTorch),
//! on NHWC activations.

use rayon::prelude::*;

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
