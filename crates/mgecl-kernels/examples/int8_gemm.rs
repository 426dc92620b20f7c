//! The int8 products against the f32 one on the convolutions of the photo model (ResNet-12,
//! widths 32-80-160-320, 84x84, batch 25) or with `omniglot` of the Omniglot one (Conv-4,
//! width 256, 28x28, batch 100): best of `REPEATS` runs each, interleaved, on all of rayon's
//! threads, in chunks of 256 output pixels as the engine runs them. Prints one JSON line per
//! shape:
//!
//! - `f32`: `gemm` of the im2col matrix (built beforehand, not timed);
//! - `int8_gemm`: `gemm_u8s8` of the int8 im2col matrix (built beforehand, not timed);
//! - `int8_conv`: `Kernel::convolve` from the NHWC codes, everything timed (im2col or the
//!   tap table, the product, and the store of the next layer's codes).
//!
//!     cargo run --release -p mgecl-kernels --example int8_gemm [REPEATS] [omniglot]

use std::time::Instant;

use mgecl_kernels::conv::{im2col_codes, ConvRows};
use mgecl_kernels::int8::{gemm_u8s8, ConvInput, Epilogue, Kernel, Output, PackedWeights};
use mgecl_kernels::{gemm, Mat, Parallelism};
use rayon::prelude::*;

/// Output pixels per task, as the engine's chunks.
const CHUNK: usize = 256;

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let omniglot = std::env::args().nth(2).as_deref() == Some("omniglot");
    let batch = if omniglot { 100 } else { 25 };
    // (name, image side, c_in, c_out, k).
    let omniglot_shapes = [
        ("conv4 3x3 1->256", 28, 1, 256, 3),
        ("conv4 3x3 256->256 14x14", 14, 256, 256, 3),
        ("conv4 3x3 256->256 7x7", 7, 256, 256, 3),
        ("conv4 3x3 256->256 3x3", 3, 256, 256, 3),
    ];
    let photo_shapes = [
        ("block1 3x3 3->32", 84, 3, 32, 3),
        ("block1 3x3 32->32", 84, 32, 32, 3),
        ("block2 3x3 32->80", 42, 32, 80, 3),
        ("block2 3x3 80->80", 42, 80, 80, 3),
        ("block3 3x3 80->160", 21, 80, 160, 3),
        ("block3 3x3 160->160", 21, 160, 160, 3),
        ("block4 3x3 160->320", 10, 160, 320, 3),
        ("block4 3x3 320->320", 10, 320, 320, 3),
        ("block4 1x1 160->320", 10, 160, 320, 1),
    ];
    let shapes = if omniglot {
        &omniglot_shapes[..]
    } else {
        &photo_shapes[..]
    };
    let threads = rayon::current_num_threads();
    let kernel = Kernel::detect();
    println!("{{\"kernel\": \"{kernel:?}\", \"threads\": {threads}}}");
    let (mut total_f32, mut total_conv) = (0.0, 0.0);
    for &(name, side, c, n, k) in shapes {
        let (m, depth) = (batch * side * side, k * k * c);
        let a32: Vec<f32> = (0..m * depth)
            .map(|i| (i % 251) as f32 / 251.0 - 0.5)
            .collect();
        let w32: Vec<f32> = (0..depth * n)
            .map(|i| (i % 13) as f32 / 13.0 - 0.5)
            .collect();
        let mut d32 = vec![0f32; m * n];
        let w8: Vec<i8> = (0..depth * n).map(|i| (i % 255) as i8).collect();
        let packed = PackedWeights::new(&w8, depth, n);
        let x: Vec<u8> = (0..m * c).map(|i| (i % 253) as u8).collect();
        let mut cols = vec![0u8; m * packed.row_stride()];
        for (p, rows) in cols.chunks_mut(CHUNK * packed.row_stride()).enumerate() {
            let pixels = ConvRows::Pixels(p * CHUNK..(p * CHUNK + CHUNK).min(m));
            im2col_codes(
                &x,
                (side, side),
                c,
                k,
                &pixels,
                packed.row_stride(),
                128,
                rows,
            );
        }
        let mut d8 = vec![0i32; m * n];
        let mut codes = vec![0u8; m * n];
        let (offsets, multipliers, bias) = (vec![-5; n], vec![1e-4; n], vec![0.1; n]);
        let epilogue = Epilogue {
            offsets: &offsets,
            multipliers: &multipliers,
            bias: Some(&bias),
            addend: None,
            slope: Some(0.1),
        };
        let mut best = [f64::MAX; 3];
        for _ in 0..repeats {
            let t = Instant::now();
            gemm(
                &mut d32,
                (m, n),
                false,
                Mat::rows(&a32, m, depth),
                Mat::rows(&w32, depth, n),
                Parallelism::Rayon(threads),
            );
            best[0] = best[0].min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            gemm_u8s8(&mut d8, &cols, m, &packed);
            best[1] = best[1].min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            codes
                .par_chunks_mut(CHUNK * n)
                .enumerate()
                .for_each(|(p, codes)| {
                    let pixels = ConvRows::Pixels(p * CHUNK..p * CHUNK + codes.len() / n);
                    let mut out = Output::Codes {
                        codes,
                        epilogue,
                        scale: 0.05,
                        zero_point: 0,
                    };
                    let input = ConvInput {
                        codes: &x,
                        hw: (side, side),
                        channels: c,
                        kernel: k,
                        zero_point: 128,
                    };
                    kernel.convolve(&input, &pixels, false, &packed, &mut out);
                });
            best[2] = best[2].min(t.elapsed().as_secs_f64());
        }
        total_f32 += best[0];
        total_conv += best[2];
        let gops = |s: f64| 2.0 * (m * depth * n) as f64 / s / 1e9;
        println!(
            "{{\"shape\": \"{name}\", \"m\": {m}, \"k\": {depth}, \"n\": {n}, \"f32_ms\": {:.2}, \"int8_gemm_ms\": {:.2}, \"int8_conv_ms\": {:.2}, \"f32_gops\": {:.0}, \"int8_gemm_gops\": {:.0}, \"int8_conv_gops\": {:.0}}}",
            best[0] * 1e3,
            best[1] * 1e3,
            best[2] * 1e3,
            gops(best[0]),
            gops(best[1]),
            gops(best[2]),
        );
    }
    println!(
        "{{\"total_f32_ms\": {:.2}, \"total_int8_conv_ms\": {:.2}}}",
        total_f32 * 1e3,
        total_conv * 1e3
    );
}
