use super::*;
use crate::conv::ConvRows;
use crate::test_values::xorshift;

/// A reproducible sequence covering the whole range of each type.
fn bytes(len: usize, seed: u32) -> Vec<u8> {
    xorshift(seed).take(len).map(|s| (s >> 24) as u8).collect()
}

/// Every implementation equals the definition exactly, for shapes with row, column and
/// depth tails, the extremes of both types included (the largest products and sums).
#[test]
fn products_match_the_definition_exactly() {
    for (m, k, n) in [
        (1, 1, 1),
        (9, 7, 5),
        (17, 27, 32),
        (3, 288, 80),
        (20, 13, 48),
        (8, 4, 17),
        (25, 40, 33),
        (24, 12, 64),
    ] {
        let mut a = bytes(m * k, 3);
        let mut w: Vec<i8> = bytes(k * n, 7).into_iter().map(|b| b as i8).collect();
        a[0] = 255;
        w[0] = -128;
        let packed = PackedWeights::new(&w, k, n);
        let lda = packed.row_stride();
        // Rows padded to the stride with bytes that must not count.
        let mut rows = vec![0xEEu8; m * lda];
        for i in 0..m {
            rows[i * lda..i * lda + k].copy_from_slice(&a[i * k..(i + 1) * k]);
        }
        let want: Vec<i32> = (0..m * n)
            .map(|p| {
                let (i, j) = (p / n, p % n);
                (0..k)
                    .map(|l| (i32::from(a[i * k + l]) - 128) * i32::from(w[l * n + j]))
                    .sum()
            })
            .collect();
        for kernel in Kernel::available() {
            let mut dst = vec![i32::MIN; m * n + 3];
            kernel.run(&rows, m, &packed, &mut Output::Sums(&mut dst));
            assert_eq!(&dst[..m * n], &want[..], "{kernel:?} {m}x{k}x{n}");
            assert!(
                dst[m * n..].iter().all(|&v| v == i32::MIN),
                "{kernel:?}: tail written"
            );
        }
        let mut dst = vec![0; m * n];
        gemm_u8s8(&mut dst, &rows, m, &packed);
        assert_eq!(dst, want);
    }
}

/// The stores that finish a convolution, on every implementation, against the epilogue
/// written out value by value: each optional step on and off, column tails, a residual, and
/// codes that must equal `quantize_activations` of those values.
#[test]
fn epilogues_match_the_definition_exactly() {
    let signed = |len, seed| -> Vec<f32> {
        bytes(len, seed)
            .into_iter()
            .map(|b| (f32::from(b) - 127.5) / 64.0)
            .collect()
    };
    for (m, k, n) in [(13, 27, 32), (5, 288, 80), (30, 44, 17), (1, 8, 50)] {
        let a = bytes(m * k, 11);
        let w: Vec<i8> = bytes(k * n, 12).into_iter().map(|b| b as i8).collect();
        let packed = PackedWeights::new(&w, k, n);
        let lda = packed.row_stride();
        let mut rows = vec![0u8; m * lda];
        for i in 0..m {
            rows[i * lda..i * lda + k].copy_from_slice(&a[i * k..(i + 1) * k]);
        }
        let offsets: Vec<i32> = (0..n as i32).map(|j| (j - 7) * 1013).collect();
        // Values of order 1: the sums' spread is about 74^2 sqrt(k).
        let unit = 1.0 / (5476.0 * (k as f32).sqrt());
        let mut multipliers: Vec<f32> = signed(n, 13).iter().map(|v| v.abs() * unit).collect();
        // One column of overflowing values: infinities, clamped like any code.
        multipliers[n / 2] = 3e38;
        let (bias, addend) = (signed(n, 14), signed(m * n, 15));
        for (with_bias, with_addend, slope) in [
            (false, false, None),
            (true, false, Some(0.1)),
            (true, true, Some(0.0)),
            (false, true, Some(1.0)),
        ] {
            let epilogue = Epilogue {
                offsets: &offsets,
                multipliers: &multipliers,
                bias: with_bias.then_some(&bias[..]),
                addend: with_addend.then_some(&addend[..]),
                slope,
            };
            let want: Vec<f32> = (0..m * n)
                .map(|p| {
                    let (i, j) = (p / n, p % n);
                    let sum: i32 = (0..k)
                        .map(|l| (i32::from(a[i * k + l]) - 128) * i32::from(w[l * n + j]))
                        .sum();
                    let mut y = (sum + offsets[j]) as f32 * multipliers[j];
                    if with_bias {
                        y += bias[j];
                    }
                    if with_addend {
                        y += addend[p];
                    }
                    slope.map_or(y, |s| y.max(s * y))
                })
                .collect();
            let (scale, zero_point) = (0.03, 100);
            let mut want_codes = vec![0u8; m * n];
            quantize_activations(&want, scale, zero_point, &mut want_codes);
            let inside = want_codes.iter().filter(|&&c| c != 0 && c != 255).count();
            assert!(inside > m * n * 2 / 3, "codes mostly clipped");
            assert!(want.iter().any(|v| v.is_infinite()));
            for kernel in Kernel::available() {
                let mut floats = vec![f32::NAN; m * n + 1];
                kernel.run(
                    &rows,
                    m,
                    &packed,
                    &mut Output::Floats(&mut floats, epilogue),
                );
                assert_eq!(&floats[..m * n], &want[..], "{kernel:?} {m}x{k}x{n}");
                assert!(floats[m * n].is_nan(), "{kernel:?}: tail written");
                let mut codes = vec![7u8; m * n + 1];
                let mut out = Output::Codes {
                    codes: &mut codes,
                    epilogue,
                    scale,
                    zero_point,
                };
                kernel.run(&rows, m, &packed, &mut out);
                assert_eq!(&codes[..m * n], &want_codes[..], "{kernel:?} {m}x{k}x{n}");
                assert_eq!(codes[m * n], 7, "{kernel:?}: tail written");
            }
        }
    }
}

/// Convolutions read in place (and through im2col where channels are not a multiple of 4)
/// against the definition, on every implementation: 3x3 and 1x1, images one or two pixels
/// wide or high (every tap at an edge), chunks starting mid-image, padding with a zero point
/// other than the kernel's shift; pixels in order and by 2x2 window (odd sides: the last
/// row and column in no window), unpooled and max-pooled, as sums, values (with and without
/// a residual: with one, the epilogue cannot be pooled through the sums) and codes.
#[test]
fn convolutions_match_the_definition_exactly() {
    for ((n, h, w), c, k, c_out, pixels, windows) in [
        ((2, 5, 6), 8, 3, 20, 7..53, 1..11),
        ((3, 1, 1), 4, 3, 16, 0..3, 0..0),
        ((2, 2, 7), 12, 3, 33, 0..28, 0..6),
        ((1, 9, 2), 4, 3, 5, 3..18, 0..4),
        ((2, 4, 3), 3, 3, 17, 1..24, 1..4),
        ((2, 4, 5), 8, 1, 40, 5..40, 0..8),
        ((1, 3, 3), 5, 1, 7, 0..9, 0..1),
        ((2, 7, 7), 4, 3, 32, 0..98, 0..18),
    ] {
        let x = bytes(n * h * w * c, 21);
        let weights: Vec<i8> = bytes(k * k * c * c_out, 22)
            .into_iter()
            .map(|b| b as i8)
            .collect();
        let packed = PackedWeights::new(&weights, k * k * c, c_out);
        let input = ConvInput {
            codes: &x,
            hw: (h, w),
            channels: c,
            kernel: k,
            zero_point: 37,
        };
        let pad = (k / 2) as isize;
        // The definition: sum over the taps inside the image of (code - 128) * weight, the
        // padding reading the zero point.
        let sum_at = |(image, y, xx): (usize, usize, usize), j: usize| {
            let mut sum = 0;
            for ky in 0..k {
                for kx in 0..k {
                    let iy = y as isize + ky as isize - pad;
                    let ix = xx as isize + kx as isize - pad;
                    let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                    for ch in 0..c {
                        let code = if inside {
                            x[((image * h + iy as usize) * w + ix as usize) * c + ch]
                        } else {
                            input.zero_point
                        };
                        let weight = weights[((ky * k + kx) * c + ch) * c_out + j];
                        sum += (i32::from(code) - 128) * i32::from(weight);
                    }
                }
            }
            sum
        };
        let at = |p: usize| (p / (h * w), (p / w) % h, p % w);
        let by_window = |q: usize| {
            let (h2, w2) = (h / 2, w / 2);
            let (image, y, xx) = (q / (h2 * w2), 2 * ((q / w2) % h2), 2 * (q % w2));
            [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(dy, dx)| (image, y + dy, xx + dx))
        };
        let in_order: Vec<_> = pixels.clone().map(at).collect();
        let windowed: Vec<_> = windows.clone().flat_map(by_window).collect();
        for (rows, coordinates) in [
            (ConvRows::Pixels(pixels.clone()), &in_order),
            (ConvRows::Windows(windows.clone()), &windowed),
        ] {
            let m = coordinates.len();
            let want: Vec<i32> = coordinates
                .iter()
                .flat_map(|&p| (0..c_out).map(move |j| (p, j)))
                .map(|(p, j)| sum_at(p, j))
                .collect();
            // The epilogue of the outputs, by the definition, each row's addend its own.
            let unit = 1.0 / (5476.0 * ((k * k * c) as f32).sqrt());
            let offsets: Vec<i32> = (0..c_out as i32).map(|j| (j % 7 - 3) * 911).collect();
            let multipliers: Vec<f32> = (0..c_out).map(|j| unit * (1.0 + j as f32 / 9.0)).collect();
            let bias: Vec<f32> = (0..c_out).map(|j| (j % 5) as f32 * 0.1 - 0.2).collect();
            let addend: Vec<f32> = (0..m * c_out)
                .map(|i| (i % 11) as f32 * 0.05 - 0.25)
                .collect();
            let (scale, zero_point) = (0.02, 90u8);
            for kernel in Kernel::available() {
                let shape = format!("{kernel:?} {n}x{h}x{w}x{c} k{k} {rows:?}");
                let mut sums = vec![i32::MIN; m * c_out + 1];
                kernel.convolve(&input, &rows, false, &packed, &mut Output::Sums(&mut sums));
                assert_eq!(&sums[..m * c_out], &want[..], "{shape}");
                assert_eq!(sums[m * c_out], i32::MIN, "{shape}: tail written");
                if !matches!(rows, ConvRows::Windows(_)) {
                    continue;
                }
                let pool = |values: &[f32]| -> Vec<f32> {
                    (0..m / 4 * c_out)
                        .map(|o| {
                            let (q, j) = (o / c_out, o % c_out);
                            (0..4).fold(f32::NEG_INFINITY, |a, r| {
                                a.max(values[(4 * q + r) * c_out + j])
                            })
                        })
                        .collect()
                };
                let mut pooled_sums = vec![0; m / 4 * c_out];
                let mut out = Output::Sums(&mut pooled_sums);
                kernel.convolve(&input, &rows, true, &packed, &mut out);
                let want_f: Vec<f32> = want.iter().map(|&v| v as f32).collect();
                let pooled_want: Vec<i32> = pool(&want_f).iter().map(|&v| v as i32).collect();
                assert_eq!(pooled_sums, pooled_want, "{shape} pooled sums");
                for with_addend in [false, true] {
                    let epilogue = Epilogue {
                        offsets: &offsets,
                        multipliers: &multipliers,
                        bias: Some(&bias),
                        addend: with_addend.then_some(&addend[..]),
                        slope: Some(0.1),
                    };
                    let values: Vec<f32> = want
                        .iter()
                        .enumerate()
                        .map(|(i, &s)| {
                            let j = i % c_out;
                            let mut y = (s + offsets[j]) as f32 * multipliers[j] + bias[j];
                            if with_addend {
                                y += addend[i];
                            }
                            y.max(0.1 * y)
                        })
                        .collect();
                    let mut floats = vec![0.0; m / 4 * c_out];
                    let mut out = Output::Floats(&mut floats, epilogue);
                    kernel.convolve(&input, &rows, true, &packed, &mut out);
                    assert_eq!(floats, pool(&values), "{shape} pooled values");
                    let mut codes = vec![0u8; m / 4 * c_out];
                    let mut out = Output::Codes {
                        codes: &mut codes,
                        epilogue,
                        scale,
                        zero_point,
                    };
                    kernel.convolve(&input, &rows, true, &packed, &mut out);
                    let mut want_codes = vec![0u8; m / 4 * c_out];
                    quantize_activations(&pool(&values), scale, zero_point, &mut want_codes);
                    assert_eq!(codes, want_codes, "{shape} pooled codes");
                }
            }
        }
    }
}

#[test]
fn quantisation_by_hand() {
    let mut out = [0u8; 7];
    let x = [0.0, 0.25, 0.75, -0.25, 100.0, -100.0, 0.5];
    quantize_activations(&x, 0.5, 128, &mut out);
    // 0.5 and 1.5 round to even (0 and 2); out of range clamps to 0 and 255.
    assert_eq!(out, [128, 128, 130, 128, 255, 0, 129]);
    quantize_activations(&x, 0.5, 3, &mut out);
    assert_eq!(out, [3, 3, 5, 3, 203, 0, 4]);
    let (codes, scales) = quantize_weights(&[1.0, 0.0, -2.54, 0.0, 0.5, 0.0], 3, 2);
    assert_eq!(scales, [0.02, 1.0]);
    assert_eq!(codes, [50, 0, -127, 0, 25, 0]);
}

/// The vectorisable rounding against the standard library's: ties both ways, tiny and
/// huge values, infinities, every zero point's clamp.
#[test]
fn codes_match_the_definition() {
    let mut x: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.25).collect();
    x.extend([
        1e-8,
        -1e-8,
        0.49999997,
        -0.49999997,
        1e30,
        -1e30,
        8_388_609.0,
    ]);
    x.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        f32::EPSILON,
    ]);
    for (scale, zero_point) in [(1.0, 0u8), (0.5, 128), (2.0, 255), (0.013, 77)] {
        let mut out = vec![0u8; x.len()];
        quantize_activations(&x, scale, zero_point, &mut out);
        // The portable loop gives the same codes as the dispatched (AVX2) one.
        let mut portable = vec![0u8; x.len()];
        quantize_loop(&x, scale, zero_point, &mut portable);
        assert_eq!(portable, out);
        let inverse = 1.0 / scale;
        for (&v, &code) in x.iter().zip(&out) {
            let want = ((v * inverse).round_ties_even() + f32::from(zero_point)).clamp(0.0, 255.0);
            assert_eq!(
                code, want as u8,
                "{v} at scale {scale}, zero point {zero_point}"
            );
        }
    }
}

/// The largest depth the networks use, all values at the extremes: no overflow.
#[test]
fn the_deepest_product_at_the_extremes_is_exact() {
    let (m, k, n) = (2, 9 * 640, 16);
    let packed = PackedWeights::new(&vec![-128i8; k * n], k, n);
    let a = vec![0u8; m * packed.row_stride()];
    for kernel in Kernel::available() {
        let mut dst = vec![0; m * n];
        kernel.run(&a, m, &packed, &mut Output::Sums(&mut dst));
        assert!(dst.iter().all(|&v| v == 128 * 128 * k as i32), "{kernel:?}");
    }
}

/// The kernels a CI machine must have exercised above (e.g. `MGECL_KERNELS_EXPECTED=Dotprod`
/// under qemu-aarch64, whose CPU has the extension), so that a detection mistake cannot leave
/// a kernel untested while every test passes on the portable one.
#[test]
fn the_expected_kernels_are_available() {
    let Ok(expected) = std::env::var("MGECL_KERNELS_EXPECTED") else {
        return;
    };
    let available: Vec<String> = Kernel::available()
        .iter()
        .map(|k| format!("{k:?}"))
        .collect();
    for name in expected.split(',').filter(|s| !s.is_empty()) {
        assert!(
            available.iter().any(|a| a == name),
            "{name} expected, this CPU runs {available:?}"
        );
    }
}

/// Convolutions of any window through `convolve_window` against the integer definition, on
/// every implementation: torchvision's 7x7/2/3 stem on odd sizes with RGB (im2col rows),
/// 3x3/2/1 and 1x1/2/0 on channels that are a multiple of 4 (which stride 1 would read in
/// place), a stride-1 5x5 (too many runs to read in place), outputs of 1x1, today's 3x3 and
/// 1x1 (read in place); output pixels from mid-image, and 2x2 windows of outputs pooled.
#[test]
fn windowed_convolutions_match_the_definition_exactly() {
    use crate::window::Window;
    for ((n, h, w), c, window, c_out) in [
        ((2, 23, 19), 3, Window::new(7, 2, 3), 20),
        ((2, 9, 8), 8, Window::new(3, 2, 1), 33),
        ((2, 7, 6), 12, Window::new(1, 2, 0), 17),
        ((1, 6, 5), 4, Window::new(5, 1, 2), 16),
        ((3, 1, 1), 3, Window::new(7, 2, 3), 5),
        ((2, 2, 2), 4, Window::new(3, 2, 1), 16),
        ((2, 5, 6), 8, Window::same(3), 20),
        ((2, 4, 5), 8, Window::same(1), 40),
    ] {
        let k = window.k;
        let x = bytes(n * h * w * c, 31);
        let weights: Vec<i8> = bytes(k * k * c * c_out, 32)
            .into_iter()
            .map(|b| b as i8)
            .collect();
        let packed = PackedWeights::new(&weights, k * k * c, c_out);
        let input = WindowInput {
            codes: &x,
            hw: (h, w),
            channels: c,
            window,
            zero_point: 37,
        };
        let (oh, ow) = window.output_hw((h, w)).unwrap();
        // The definition: sum over the window's taps of (code - 128) * weight, the padding
        // reading the zero point.
        let sum_at = |(image, oy, ox): (usize, usize, usize), j: usize| {
            let mut sum = 0;
            for ky in 0..k {
                for kx in 0..k {
                    let iy = (oy * window.stride + ky) as isize - window.pad as isize;
                    let ix = (ox * window.stride + kx) as isize - window.pad as isize;
                    let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                    for ch in 0..c {
                        let code = if inside {
                            x[((image * h + iy as usize) * w + ix as usize) * c + ch]
                        } else {
                            input.zero_point
                        };
                        let weight = weights[((ky * k + kx) * c + ch) * c_out + j];
                        sum += (i32::from(code) - 128) * i32::from(weight);
                    }
                }
            }
            sum
        };
        let total = n * oh * ow;
        let pixels = total / 3..total;
        let windows = 0..n * (oh / 2) * (ow / 2);
        let at = |p: usize| (p / (oh * ow), (p / ow) % oh, p % ow);
        let by_window = |q: usize| {
            let (h2, w2) = (oh / 2, ow / 2);
            let (image, y, xx) = (q / (h2 * w2), 2 * ((q / w2) % h2), 2 * (q % w2));
            [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(dy, dx)| (image, y + dy, xx + dx))
        };
        let in_order: Vec<_> = pixels.clone().map(at).collect();
        let windowed: Vec<_> = windows.clone().flat_map(by_window).collect();
        for (rows, coordinates) in [
            (ConvRows::Pixels(pixels.clone()), &in_order),
            (ConvRows::Windows(windows.clone()), &windowed),
        ] {
            let m = coordinates.len();
            let want: Vec<i32> = coordinates
                .iter()
                .flat_map(|&p| (0..c_out).map(move |j| sum_at(p, j)))
                .collect();
            let pooled_want: Vec<i32> = (0..m / 4 * c_out)
                .map(|o| {
                    let (q, j) = (o / c_out, o % c_out);
                    (0..4).map(|r| want[(4 * q + r) * c_out + j]).max().unwrap()
                })
                .collect();
            for kernel in Kernel::available() {
                let shape = format!("{kernel:?} {n}x{h}x{w}x{c} {window:?} {rows:?}");
                let mut sums = vec![i32::MIN; m * c_out + 1];
                let mut out = Output::Sums(&mut sums);
                kernel.convolve_window(&input, &rows, false, &packed, &mut out);
                assert_eq!(&sums[..m * c_out], &want[..], "{shape}");
                assert_eq!(sums[m * c_out], i32::MIN, "{shape}: tail written");
                if matches!(rows, ConvRows::Windows(_)) {
                    let mut pooled = vec![0; m / 4 * c_out];
                    let mut out = Output::Sums(&mut pooled);
                    kernel.convolve_window(&input, &rows, true, &packed, &mut out);
                    assert_eq!(pooled, pooled_want, "{shape} pooled");
                }
            }
        }
    }
}
