//! Max-pooling of any window against the definition, written as direct loops over
//! `(n, oy, ox, ky, kx, c)`, and by hand.

use super::*;
use crate::test_values::integers;

/// `(pooled, d_input)` by the definition: each window's maximum over its taps inside the
/// image, the first in row-major order `(ky, kx)` winning ties, and its gradient added
/// there, output after output; with a slope, the sums times the leaky ReLU's derivative.
fn pool_by_definition(
    input: &[f32],
    (n, h, w): (usize, usize, usize),
    c: usize,
    window: Window,
    slope: Option<f32>,
    d_out: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let Window { k, stride, pad } = window;
    let (oh, ow) = window.output_hw((h, w)).unwrap();
    let mut pooled = vec![f32::NAN; n * oh * ow * c];
    let mut d_input = vec![0.0; input.len()];
    for image in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut best: Option<(f32, usize)> = None;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if !(0..h as isize).contains(&iy) || !(0..w as isize).contains(&ix) {
                                continue;
                            }
                            let at = ((image * h + iy as usize) * w + ix as usize) * c + ch;
                            if best.is_none_or(|(v, _)| input[at] > v) {
                                best = Some((input[at], at));
                            }
                        }
                    }
                    let (value, at) = best.expect("a pixel in every window");
                    let o = ((image * oh + oy) * ow + ox) * c + ch;
                    pooled[o] = value;
                    d_input[at] += d_out[o];
                }
            }
        }
    }
    if let Some(slope) = slope {
        for (d, &v) in d_input.iter_mut().zip(input) {
            if v <= 0.0 {
                *d *= slope;
            }
        }
    }
    (pooled, d_input)
}

/// Forward and both backwards against the definition: torchvision's 3x3/2/1 on odd and even
/// sizes, outputs of 1x1 (a 2x2 and a 1x1 image), a stride-1 3x3 (every pixel in up to 9
/// windows), a 5x5/3/2, and 2x2/2/0, which must equal today's 2x2 functions.
#[test]
fn windowed_pooling_matches_the_definition() {
    for ((n, h, w), c, window) in [
        ((2, 23, 19), 3, Window::new(3, 2, 1)),
        ((2, 8, 10), 5, Window::new(3, 2, 1)),
        ((1, 2, 2), 3, Window::new(3, 2, 1)),
        ((3, 1, 1), 2, Window::new(3, 2, 1)),
        ((2, 6, 5), 4, Window::same(3)),
        ((1, 11, 9), 3, Window::new(5, 3, 2)),
        ((2, 7, 6), 4, Window::new(2, 2, 0)),
    ] {
        let shape = format!("{n}x{h}x{w}x{c} {window:?}");
        let (oh, ow) = window.output_hw((h, w)).unwrap();
        let input = integers(n * h * w * c, 4, 3);
        let d_out: Vec<f32> = integers(n * oh * ow * c, 1000, 4)
            .iter()
            .map(|v| v / 7.0)
            .collect();
        let mut pooled = vec![f32::NAN; d_out.len()];
        max_pool(&input, (n, h, w), c, window, &mut pooled);
        let mut d_input = vec![f32::NAN; input.len()];
        max_pool_backward(&input, (n, h, w), c, window, &d_out, &mut d_input);
        let (want, want_d) = pool_by_definition(&input, (n, h, w), c, window, None, &d_out);
        assert_eq!(pooled, want, "{shape}");
        assert_eq!(d_input, want_d, "{shape}");
        let mut dz = vec![f32::NAN; input.len()];
        max_pool_leaky_backward(&input, (n, h, w), c, window, 0.1, &d_out, &mut dz);
        let (_, want_dz) = pool_by_definition(&input, (n, h, w), c, window, Some(0.1), &d_out);
        assert_eq!(dz, want_dz, "{shape}");
        if window == Window::new(2, 2, 0) {
            let mut today = vec![0.0; pooled.len()];
            max_pool_2x2(&input, (n, h, w), c, &mut today);
            assert_eq!(today, pooled, "{shape}");
            let mut today_dz = vec![0.0; input.len()];
            max_pool_2x2_leaky_backward(&input, (n, h, w), c, 0.1, &d_out, &mut today_dz);
            assert_eq!(today_dz, dz, "{shape}");
        }
    }
}

/// A 3x3 image, 3x3/2/1 (2x2 outputs, the centre pixel in all 4 windows): a tied window
/// routes its gradient to its first maximum; a pixel that is two windows' maximum gets both
/// gradients; the leaky ReLU's slope applies where the maximum is at or below zero.
#[test]
fn overlapping_windows_by_hand() {
    let window = Window::new(3, 2, 1);
    #[rustfmt::skip]
    let a = [
        0.0, 0.0, -4.0,
        0.0, -3.0, 2.0,
        -5.0, -2.0, -2.0,
    ];
    let mut out = [f32::NAN; 4];
    max_pool(&a, (1, 3, 3), 1, window, &mut out);
    assert_eq!(out, [0.0, 2.0, 0.0, 2.0]);
    let d_out = [1.0, 10.0, 100.0, 1000.0];
    let mut d_a = [f32::NAN; 9];
    max_pool_backward(&a, (1, 3, 3), 1, window, &d_out, &mut d_a);
    #[rustfmt::skip]
    let want = [
        1.0, 0.0, 0.0,
        100.0, 0.0, 1010.0,
        0.0, 0.0, 0.0,
    ];
    assert_eq!(d_a, want);
    let mut dz = [f32::NAN; 9];
    max_pool_leaky_backward(&a, (1, 3, 3), 1, window, 0.5, &d_out, &mut dz);
    #[rustfmt::skip]
    let want = [
        0.5, 0.0, 0.0,
        50.0, 0.0, 1010.0,
        0.0, 0.0, 0.0,
    ];
    assert_eq!(dz, want);
}

/// Padding is -infinity, not zero: a window of negative values pools to the largest of
/// them, never to the padding's 0.
#[test]
fn padding_never_wins() {
    let a = [-3.0, -1.0, -2.0, -4.0];
    let mut out = [0.0; 1];
    max_pool(&a, (1, 2, 2), 1, Window::new(3, 2, 1), &mut out);
    assert_eq!(out, [-1.0]);
}
