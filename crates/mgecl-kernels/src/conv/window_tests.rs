//! im2col and col2im of any window against the definitions, written as direct loops over
//! `(n, oy, ox, ky, kx, c)`.

use super::*;
use crate::test_values::integers;

/// Non-integer values, for results that must be equal bit for bit.
fn fractions(len: usize, seed: u32) -> Vec<f32> {
    integers(len, 1 << 20, seed)
        .into_iter()
        .map(|v| v / 3.0e4)
        .collect()
}

/// The shapes: torchvision's stem (7x7/2/3) on odd sizes with RGB, its 3x3/2/1 and 1x1/2/0
/// convolutions, a 5x5/3/0 one, images smaller than the window, outputs of 1x1, and the
/// stride-1 `same` window of today's convolutions.
const CASES: &[Case] = &[
    ((2, 23, 19), 3, Window::new(7, 2, 3), 2),
    ((2, 9, 8), 5, Window::new(3, 2, 1), 1),
    ((2, 7, 6), 4, Window::new(1, 2, 0), 3),
    ((1, 23, 19), 2, Window::new(5, 3, 0), 1),
    ((1, 3, 2), 2, Window::new(7, 2, 3), 0),
    ((3, 1, 1), 3, Window::new(7, 2, 3), 1),
    ((2, 2, 2), 3, Window::new(3, 2, 1), 0),
    ((3, 1, 1), 4, Window::new(1, 2, 0), 0),
    ((2, 5, 4), 3, Window::same(3), 1),
];

/// `((n, h, w), c, window, tail)`: the batch, its channels, the window, and the values
/// each row holds past the taps.
type Case = ((usize, usize, usize), usize, Window, usize);

/// The output pixels a case converts: from a third of the batch (mid-image where an image
/// has more than one output) to a fifth before its end.
fn chosen_pixels(total: usize) -> Range<usize> {
    total / 3..total - total / 5
}

/// For each output pixel of the range, each of its taps inside the image:
/// `(row, tap offset in the row, offset of the input value in the batch)`, by the definition.
fn taps_inside(
    (n, h, w): (usize, usize, usize),
    c: usize,
    window: Window,
    pixels: &Range<usize>,
) -> Vec<(usize, usize, usize)> {
    let Window { k, stride, pad } = window;
    let (oh, ow) = window.output_hw((h, w)).unwrap();
    let mut taps = Vec::new();
    for image in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let p = (image * oh + oy) * ow + ox;
                if !pixels.contains(&p) {
                    continue;
                }
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * stride + ky) as isize - pad as isize;
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        if !(0..h as isize).contains(&iy) || !(0..w as isize).contains(&ix) {
                            continue;
                        }
                        for ch in 0..c {
                            let at = ((image * h + iy as usize) * w + ix as usize) * c + ch;
                            taps.push((p - pixels.start, (ky * k + kx) * c + ch, at));
                        }
                    }
                }
            }
        }
    }
    taps
}

/// Rows of f32 values and of codes against the definition: the taps inside the image are
/// the input's, those in the padding zero (the zero point), the tail untouched; a `same`
/// window gives today's `im2col`.
#[test]
fn rows_match_the_definition() {
    for &((n, h, w), c, window, tail) in CASES {
        let shape = format!("{n}x{h}x{w}x{c} {window:?}");
        let x = fractions(n * h * w * c, 5);
        let (oh, ow) = window.output_hw((h, w)).unwrap();
        let pixels = chosen_pixels(n * oh * ow);
        let depth = window.k * window.k * c + tail;
        let mut want = vec![0.0; pixels.len() * depth];
        for row in want.chunks_exact_mut(depth) {
            row[depth - tail..].fill(f32::NAN);
        }
        for (row, tap, at) in taps_inside((n, h, w), c, window, &pixels) {
            want[row * depth + tap] = x[at];
        }
        let mut cols = vec![f32::NAN; pixels.len() * depth];
        im2col_window(&x, (h, w), c, window, pixels.clone(), depth, &mut cols);
        let same = |a: &f32, b: &f32| a == b || (a.is_nan() && b.is_nan());
        for (i, (got, want)) in cols.iter().zip(&want).enumerate() {
            assert!(same(got, want), "{shape}: value {i}: {got} for {want}");
        }
        if window == Window::same(window.k) {
            let mut today = vec![f32::NAN; cols.len()];
            im2col(&x, (h, w), c, window.k, pixels.clone(), depth, &mut today);
            assert!(today.iter().zip(&cols).all(|(a, b)| same(a, b)), "{shape}");
        }
        // The codes' version: the same taps, the padding the zero point.
        let codes: Vec<u8> = (0..x.len()).map(|i| (i % 251) as u8).collect();
        let zero_point = 77;
        let mut want_codes = vec![zero_point; pixels.len() * depth];
        for row in want_codes.chunks_exact_mut(depth) {
            row[depth - tail..].fill(5);
        }
        for (row, tap, at) in taps_inside((n, h, w), c, window, &pixels) {
            want_codes[row * depth + tap] = codes[at];
        }
        let mut code_cols = vec![5u8; pixels.len() * depth];
        let rows = ConvRows::Pixels(pixels.clone());
        im2col_codes_window(
            &codes,
            (h, w),
            c,
            window,
            &rows,
            depth,
            zero_point,
            &mut code_cols,
        );
        assert_eq!(code_cols, want_codes, "{shape}");
    }
}

/// col2im is im2col's adjoint, `<col2im(g), x> == <g, im2col(x)>` (exact on integers), and
/// equals the definition's scatter-add bit for bit: it adds to what `dx` held, leaves the
/// pixels no window reads alone, and ignores the rows' tails.
#[test]
fn col2im_is_the_adjoint_of_im2col() {
    for &((n, h, w), c, window, tail) in CASES {
        let shape = format!("{n}x{h}x{w}x{c} {window:?}");
        let (oh, ow) = window.output_hw((h, w)).unwrap();
        let pixels = chosen_pixels(n * oh * ow);
        let (taps, depth) = (window.k * window.k * c, window.k * window.k * c + tail);
        let x = integers(n * h * w * c, 50, 7);
        let mut g = integers(pixels.len() * depth, 50, 8);
        for row in g.chunks_exact_mut(depth) {
            row[taps..].fill(f32::NAN);
        }
        let mut cols = vec![0.0; pixels.len() * depth];
        im2col_window(&x, (h, w), c, window, pixels.clone(), depth, &mut cols);
        let mut dx = vec![0.0; x.len()];
        col2im(&g, (h, w), c, window, pixels.clone(), depth, &mut dx);
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum()
        };
        let through_cols: f64 = g
            .chunks_exact(depth)
            .zip(cols.chunks_exact(depth))
            .map(|(g, cols)| dot(&g[..taps], &cols[..taps]))
            .sum();
        assert_eq!(dot(&dx, &x), through_cols, "{shape}");
        assert!(through_cols != 0.0, "{shape}: a trivial check");

        // Against the definition, added to what `dx` held.
        let g = fractions(pixels.len() * depth, 9);
        let before = fractions(x.len(), 10);
        let mut want = before.clone();
        for (row, tap, at) in taps_inside((n, h, w), c, window, &pixels) {
            want[at] += g[row * depth + tap];
        }
        let mut dx = before;
        col2im(&g, (h, w), c, window, pixels.clone(), depth, &mut dx);
        assert_eq!(dx, want, "{shape}");
    }
}

/// The definition's order of additions (pixel, then `ky`, `kx`, `c`) is col2im's: where
/// windows overlap, a pixel's gradient is the sum of every window's, in that order.
#[test]
fn overlapping_windows_add_up() {
    // One 3-pixel row, one channel, 3x3/1/1: the middle pixel is in all 3 windows.
    let window = Window::same(3);
    let mut g = vec![0.0; 3 * 9];
    // Row r, tap (ky = 1, kx): the output pixel r's middle row of taps.
    for r in 0..3 {
        for kx in 0..3 {
            g[r * 9 + 3 + kx] = (10 * (r + 1) + kx) as f32;
        }
    }
    let mut dx = vec![0.5; 3];
    col2im(&g, (1, 3), 1, window, 0..3, 9, &mut dx);
    // Pixel 0: windows 0 (kx 1) and 1 (kx 0); pixel 1: windows 0 (2), 1 (1), 2 (0); ...
    assert_eq!(
        dx,
        [
            0.5 + 11.0 + 20.0,
            0.5 + 12.0 + 21.0 + 30.0,
            0.5 + 22.0 + 31.0
        ]
    );
}
