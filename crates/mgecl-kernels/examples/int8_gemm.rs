//! The int8 matrix product against the f32 one on the convolutions of the photo model
//! (ResNet-12, widths 32-80-160-320, 84x84, batch 25, as im2col products): best of
//! `REPEATS` runs each, interleaved, on all of rayon's threads. Prints one JSON line per shape.
//!
//!     cargo run --release -p mgecl-kernels --example int8_gemm [REPEATS]

use std::time::Instant;

use mgecl_kernels::int8::{gemm_u8s8, Kernel, PackedWeights};
use mgecl_kernels::{gemm, Mat, Parallelism};

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let batch = 25;
    // (name, output pixels, k, n): each block's 3x3 convolutions at its resolution.
    let shapes = [
        ("block1 3x3 32->32", batch * 84 * 84, 9 * 32, 32),
        ("block2 3x3 32->80", batch * 42 * 42, 9 * 32, 80),
        ("block2 3x3 80->80", batch * 42 * 42, 9 * 80, 80),
        ("block3 3x3 160->160", batch * 21 * 21, 9 * 160, 160),
        ("block4 3x3 320->320", batch * 10 * 10, 9 * 320, 320),
    ];
    let threads = rayon::current_num_threads();
    println!(
        "{{\"kernel\": \"{:?}\", \"threads\": {threads}}}",
        Kernel::detect()
    );
    for (name, m, k, n) in shapes {
        let a32: Vec<f32> = (0..m * k).map(|i| (i % 251) as f32 / 251.0 - 0.5).collect();
        let w32: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        let mut d32 = vec![0f32; m * n];
        let w8: Vec<i8> = (0..k * n).map(|i| (i % 255) as i8).collect();
        let packed = PackedWeights::new(&w8, k, n);
        let a8: Vec<u8> = (0..m * packed.row_stride())
            .map(|i| (i % 253) as u8)
            .collect();
        let mut d8 = vec![0i32; m * n];
        let (mut f32_best, mut int8_best) = (f64::MAX, f64::MAX);
        for _ in 0..repeats {
            let t = Instant::now();
            gemm(
                &mut d32,
                (m, n),
                false,
                Mat::rows(&a32, m, k),
                Mat::rows(&w32, k, n),
                Parallelism::Rayon(threads),
            );
            f32_best = f32_best.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            gemm_u8s8(&mut d8, &a8, m, &packed);
            int8_best = int8_best.min(t.elapsed().as_secs_f64());
        }
        let ops = 2.0 * (m * k * n) as f64;
        println!(
            "{{\"shape\": \"{name}\", \"m\": {m}, \"k\": {k}, \"n\": {n}, \"f32_ms\": {:.2}, \"int8_ms\": {:.2}, \"f32_gops\": {:.0}, \"int8_gops\": {:.0}, \"speedup\": {:.2}}}",
            f32_best * 1e3,
            int8_best * 1e3,
            ops / f32_best / 1e9,
            ops / int8_best / 1e9,
            f32_best / int8_best
        );
    }
}
