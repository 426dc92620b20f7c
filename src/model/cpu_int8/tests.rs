//! The int8 engine against a direct computation of the same quantised arithmetic (exact, on
//! any thread count) and against the f32 engine; the calibration by hand.

use super::*;
use crate::model::cpu_fast::tests::values;
use crate::model::cpu_fast::FastNet;
use crate::model::folded::{FoldedBlock, FoldedShortcut};

fn conv(c_in: usize, c_out: usize, k: usize, slope: f32, seed: u32) -> FoldedConv {
    // Weights of a He-initialised layer, so activations neither vanish nor explode.
    let gain = (6.0 / (k * k * c_in) as f32).sqrt() * 2.0;
    FoldedConv {
        c_in,
        c_out,
        k,
        weight: values(k * k * c_in * c_out, seed)
            .into_iter()
            .map(|v| v * gain)
            .collect(),
        bias: values(c_out, seed + 1),
        slope,
    }
}

/// A small ResNet-like encoder (shortcut, LeakyReLU) then a Conv-4-like block (ReLU,
/// no shortcut, no pool).
fn folded(c: usize) -> FoldedNet {
    let width = [12, 20];
    let shortcut = |c_in: usize, c_out: usize, seed: u32| FoldedShortcut {
        c_in,
        weight: conv(c_in, c_out, 1, 0.0, seed).weight,
    };
    FoldedNet {
        blocks: vec![
            FoldedBlock {
                convs: vec![
                    conv(c, width[0], 3, 0.1, 10),
                    conv(width[0], width[0], 3, 0.1, 20),
                    conv(width[0], width[0], 3, 0.1, 30),
                ],
                shortcut: Some(shortcut(c, width[0], 40)),
                pool: true,
            },
            FoldedBlock {
                convs: vec![conv(width[0], width[1], 3, 0.0, 50)],
                shortcut: None,
                pool: false,
            },
        ],
        in_channels: c,
    }
}

/// The quantised arithmetic written out directly: codes as `quantize_activations` makes
/// them, integer sums over the taps inside the image, the epilogue in the documented order.
fn reference(net: &QuantNet, nchw: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
    let c = net.in_channels;
    let mut x = vec![0.0; nchw.len()];
    for image in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                x[(image * h * w + p) * c + ch] = nchw[(image * c + ch) * h * w + p];
            }
        }
    }
    let (mut h, mut w, mut c) = (h, w, c);
    let codes_of = |x: &[f32], q: ActivationQuant| {
        let mut codes = vec![0u8; x.len()];
        quantize_activations(x, q.scale, q.zero_point, &mut codes);
        codes
    };
    // `sum_taps (code - zero_point) * weight` at pixel `(image, y, xx)`, column `j`.
    let dot = |codes: &[u8],
               q: ActivationQuant,
               wt: &QuantWeights,
               (h, w): (usize, usize),
               (image, y, xx): (usize, usize, usize),
               j: usize| {
        let pad = (wt.k / 2) as isize;
        let mut acc = 0i32;
        for ky in 0..wt.k {
            for kx in 0..wt.k {
                let iy = y as isize + ky as isize - pad;
                let ix = xx as isize + kx as isize - pad;
                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                    continue;
                }
                let pixel = (image * h + iy as usize) * w + ix as usize;
                for ci in 0..wt.c_in {
                    let code = i32::from(codes[pixel * wt.c_in + ci]) - i32::from(q.zero_point);
                    let weight = wt.codes[((ky * wt.k + kx) * wt.c_in + ci) * wt.c_out + j];
                    acc += code * i32::from(weight);
                }
            }
        }
        acc
    };
    for block in &net.blocks {
        let block_input = block.convs[0].input;
        let block_codes = codes_of(&x, block_input);
        let mut cur: Option<Vec<f32>> = None;
        for (i, conv) in block.convs.iter().enumerate() {
            let codes = cur.as_deref().map(|v| codes_of(v, conv.input));
            let codes = codes.as_deref().unwrap_or(&block_codes);
            let c_out = conv.weights.c_out;
            let mut out = vec![0.0f32; n * h * w * c_out];
            for image in 0..n {
                for y in 0..h {
                    for xx in 0..w {
                        let p = (image * h + y) * w + xx;
                        for j in 0..c_out {
                            let at = (image, y, xx);
                            let acc = dot(codes, conv.input, &conv.weights, (h, w), at, j);
                            let scale = conv.input.scale * conv.weights.scales[j];
                            let mut v = acc as f32 * scale + conv.bias[j];
                            if let (Some(s), true) = (&block.shortcut, i + 1 == block.convs.len()) {
                                let acc = dot(&block_codes, block_input, &s.weights, (h, w), at, j);
                                v += acc as f32 * (block_input.scale * s.weights.scales[j]);
                            }
                            out[p * c_out + j] = v.max(conv.slope * v);
                        }
                    }
                }
            }
            cur = Some(out);
            c = c_out;
        }
        x = cur.unwrap();
        if block.pool {
            let mut pooled = vec![0.0; n * (h / 2) * (w / 2) * c];
            max_pool_2x2(&x, (n, h, w), c, &mut pooled);
            (x, h, w) = (pooled, h / 2, w / 2);
        }
    }
    let mut features = vec![0.0; n * c];
    global_avg_pool(&x, (n, h * w), c, &mut features);
    features
}

#[test]
fn features_are_the_quantised_arithmetic_exactly_on_any_thread_count() {
    // Odd sizes (a dropped row and column at the pool), more pixels than one chunk, 3
    // input channels (rows padded to 4 bytes).
    let (n, c, h, w) = (3, 3, 13, 11);
    let images = values(n * c * h * w, 7);
    let net = QuantNet::calibrate(&folded(c), &images, n, h, w);
    let expected = reference(&net, &images, n, h, w);
    assert!(expected.iter().filter(|&&v| v != 0.0).count() > expected.len() / 2);
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let features = pool.install(|| net.forward(&images, n, h, w, false).features);
        assert_eq!(features, expected, "{threads} threads");
    }
    // Images the calibration did not see: still exact.
    let other = values(c * h * w, 8);
    assert_eq!(
        net.forward(&other, 1, h, w, false).features,
        reference(&net, &other, 1, h, w)
    );
}

#[test]
fn features_stay_close_to_the_f32_engine() {
    let (n, c, h, w) = (8, 3, 16, 16);
    let images = values(n * c * h * w, 9);
    let net = QuantNet::calibrate(&folded(c), &images, n, h, w);
    let quantized = net.forward(&images, n, h, w, false).features;
    let exact = FastNet::new(folded(c))
        .forward(&images, n, h, w, false)
        .features;
    for (q, e) in quantized.chunks(20).zip(exact.chunks(20)) {
        let dot: f32 = q.iter().zip(e).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
        let cosine = dot / (norm(q) * norm(e));
        assert!(cosine > 0.9999, "cosine {cosine}");
    }
}

#[test]
fn calibration_by_hand() {
    // Non-negative values (after a ReLU): zero point 0, the range chosen to the largest.
    let q = ActivationQuant::calibrate(&[0.0, 1.0, 2.0, 2.55]);
    assert_eq!(q.zero_point, 0);
    assert!((q.scale - 0.01).abs() < 1e-6, "{q:?}");
    // Symmetric values: the zero point in the middle.
    let q = ActivationQuant::calibrate(&[-1.0, -0.5, 0.0, 0.5, 1.0]);
    assert!((120..=136).contains(&q.zero_point), "{q:?}");
    // One outlier among many small values: clipped for the many.
    let mut x: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32 / 100.0).collect();
    x.push(50.0);
    let q = ActivationQuant::calibrate(&x);
    assert!(q.scale * 255.0 < 50.0, "{q:?}");
    // All zeros: any scale represents them.
    let q = ActivationQuant::calibrate(&[0.0; 4]);
    assert_eq!((q.scale, q.zero_point), (1.0, 0));
}
