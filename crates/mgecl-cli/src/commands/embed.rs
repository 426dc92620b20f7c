//! `mgecl embed`: features of images as a safetensors file.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::options::ModelArgs;
use crate::terminal::progress;

/// Embed images and write their features as a safetensors file (tensor `features`, [N, D],
/// rows in argument order, not L2-normalised).
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Images embedded per forward pass (decoded together; memory grows with it).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch_size: u16,
    /// Images (PNG, JPEG, WebP, BMP, GIF or TIFF).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let images = &args.images;
    let dim = model.feature_dim();
    let bar = progress(images.len(), "embedding");
    let mut features: Vec<f32> = Vec::with_capacity(images.len() * dim);
    for chunk in images.chunks(usize::from(args.batch_size)) {
        let rows = model.embed_paths(chunk)?;
        features.extend(rows.iter());
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![images.len(), dim],
        &bytes,
    )
    .context("cannot build the output tensor")?;
    let metadata = HashMap::from([
        (
            "model_fingerprint".to_string(),
            model.info().fingerprint.clone(),
        ),
        ("images".to_string(), serde_json::to_string(images)?),
    ]);
    let file = safetensors::serialize([("features", view)], Some(metadata))
        .context("cannot serialise the features")?;
    mgecl::internals::write_file(&args.out, &file)?;
    eprintln!(
        "wrote {} x {dim} features to {}",
        images.len(),
        args.out.display()
    );
    Ok(())
}
