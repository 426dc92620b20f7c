//! Runs the SGD steps a training-step fixture describes and writes every tensor afterwards
//! (`head.*` included) and `loss` (one f32 per step, before its update), as the fixture's
//! `_expected` file holds them (format: `crates/mgecl-train/tests/data/train/make_train_fixtures.py`).
//!
//!     cargo run --release --example train_steps -- FIXTURE.safetensors OUT.safetensors [auto|candle]

use mgecl::Engine;
use mgecl_train::trainer::run_step_fixture;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(fixture), Some(out)) = (args.get(1), args.get(2)) else {
        return Err("usage: train_steps FIXTURE.safetensors OUT.safetensors [auto|candle]".into());
    };
    let engine: Engine = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or_default();
    let tensors = run_step_fixture(&std::fs::read(fixture)?, engine)?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, None, std::path::Path::new(out))?;
    println!("{out}: {} tensors", bytes.len());
    Ok(())
}
