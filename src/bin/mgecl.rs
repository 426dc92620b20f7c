//! `mgecl`: the command-line front end of the SDK. One subcommand per job.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mgecl::{DeviceChoice, Engine, Error, LoadOptions, Model};

#[derive(Parser)]
#[command(
    name = "mgecl",
    version,
    about = "Few-shot image recognition with MGECL encoders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model: architecture, widths, input, feature size, device.
    Info {
        #[command(flatten)]
        model: ModelArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Embed images and write their features as a safetensors file (tensor `features`, [N, D],
    /// rows in argument order, not L2-normalised).
    Embed {
        #[command(flatten)]
        model: ModelArgs,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Images (PNG or JPEG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct ModelArgs {
    /// Model file (safetensors).
    #[arg(long)]
    model: PathBuf,
    /// cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// auto (the CPU fast path on the CPU, candle elsewhere) or candle (candle everywhere).
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Override a metadata entry, KEY=VALUE (repeatable), e.g. --meta image_size=28.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

impl ModelArgs {
    fn load(&self) -> Result<Model, Error> {
        let mut overrides = BTreeMap::new();
        for entry in &self.meta {
            let (k, v) = entry.split_once('=').ok_or_else(|| {
                Error::InvalidArgument(format!("--meta {entry:?}: expected KEY=VALUE"))
            })?;
            overrides.insert(k.to_string(), v.to_string());
        }
        let options = LoadOptions {
            device: self.device.parse::<DeviceChoice>()?,
            engine: self.engine.parse::<Engine>()?,
            metadata_overrides: overrides,
        };
        Model::load(&self.model, &options)
    }
}

/// A progress bar on stderr, shown only for more than a handful of items.
fn progress(len: usize, what: &str) -> ProgressBar {
    if len <= 8 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn info(model: &Model, json: bool) -> Result<(), Error> {
    let info = model.info();
    if json {
        let text = serde_json::to_string(info)
            .map_err(|e| Error::Backend(format!("cannot serialise model info: {e}")))?;
        println!("{text}");
    } else {
        println!("architecture: {}", info.arch);
        println!("widths:       {:?}", info.widths);
        println!(
            "input:        {} channel(s), {}x{} px",
            info.in_channels, info.image_size.0, info.image_size.1
        );
        println!(
            "normalise:    mean {:?}, std {:?}, invert {}",
            info.mean, info.std, info.invert
        );
        println!("feature dim:  {}", info.feature_dim);
        println!("device:       {}", info.device);
        println!("engine:       {}", info.engine);
        println!("fingerprint:  {}", info.fingerprint);
    }
    Ok(())
}

fn embed(model: &Model, out: &Path, images: &[PathBuf]) -> Result<(), Error> {
    let dim = model.feature_dim();
    let bar = progress(images.len(), "embedding");
    let mut features: Vec<f32> = Vec::with_capacity(images.len() * dim);
    for chunk in images.chunks(16) {
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
    .map_err(|e| Error::Backend(format!("cannot build output tensor: {e}")))?;
    let metadata = HashMap::from([
        (
            "model_fingerprint".to_string(),
            model.info().fingerprint.clone(),
        ),
        (
            "images".to_string(),
            serde_json::to_string(images).unwrap_or_default(),
        ),
    ]);
    let file = safetensors::serialize([("features", view)], Some(metadata))
        .map_err(|e| Error::Backend(format!("cannot serialise features: {e}")))?;
    mgecl::atomic::write_file(out, &file)?;
    eprintln!(
        "wrote {} x {dim} features to {}",
        images.len(),
        out.display()
    );
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Info { model, json } => info(&model.load()?, json),
        Command::Embed { model, out, images } => embed(&model.load()?, &out, &images),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
