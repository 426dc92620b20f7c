//! Times the encoder's forward pass (`Model::embed_preprocessed`, no preprocessing) on a random normalised batch and prints one JSON line; used by
//! `scripts/bench/compare.py` (which also measures this process's peak resident memory).
//!
//!     cargo run --release --example bench_embed -- MODEL BATCH [REPEATS] [auto|candle]

use std::time::Instant;

use mgecl::{Engine, LoadOptions, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: bench_embed MODEL BATCH [REPEATS] [auto|candle]".into());
    }
    let batch: usize = args[1].parse()?;
    let repeats: usize = args.get(2).map_or(Ok(10), |r| r.parse())?;
    let engine: Engine = args.get(3).map_or(Ok(Engine::Auto), |e| e.parse())?;
    let options = LoadOptions::default().with_engine(engine);
    let model = Model::load(&args[0], &options)?;
    let (c, h, w) = model.preprocessor().input_shape();
    // A fixed pseudo-random input, roughly unit variance like a normalised image.
    let mut state = 0x2545_f491_u32;
    let values: Vec<f32> = (0..batch * c * h * w)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 3.4
        })
        .collect();
    model.embed_preprocessed(&values)?; // warm-up: page in weights, fill the buffer pools
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        let features = model.embed_preprocessed(&values)?;
        std::hint::black_box(features);
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let best = times[0];
    let median = times[times.len() / 2];
    println!(
        "{{\"engine\": \"{}\", \"batch\": {batch}, \"best_s\": {best:.6}, \"median_s\": {median:.6}, \"images_per_s\": {:.3}}}",
        model.info().engine,
        batch as f64 / best
    );
    Ok(())
}
