//! Criterion benchmarks of the encoder forward pass on the CPU, both engines, on the
//! repository's fixture models (ResNet-12 widths 16-40-80-160 at 84x84, Conv-4 width 64 at
//! 28x28). For the full-width model against PyTorch see `scripts/bench/compare.py`.
//!
//!     cargo bench --bench forward
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mgecl::{Engine, LoadOptions, Model};

fn model(name: &str, engine: Engine) -> Model {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.safetensors"));
    let options = LoadOptions::default().with_engine(engine);
    Model::load(path, &options).expect("fixture model loads")
}

fn input(model: &Model, batch: usize) -> Vec<f32> {
    let (c, h, w) = model.preprocessor().input_shape();
    (0..batch * c * h * w)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn forward(c: &mut Criterion) {
    for (name, batches) in [("resnet12_small", [1, 25]), ("conv4_gray", [1, 100])] {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        for engine in [Engine::Auto, Engine::Candle] {
            let m = model(name, engine);
            for batch in batches {
                let x = input(&m, batch);
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_with_input(
                    BenchmarkId::new(m.info().engine.name(), batch),
                    &x,
                    |b, x| b.iter(|| m.embed_preprocessed(x).expect("forward")),
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
