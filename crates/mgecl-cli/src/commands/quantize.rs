//! `mgecl quantize`: an int8 model from a float32 one.

use std::path::PathBuf;

use clap::Args;
use mgecl_train::data::read_list;
use mgecl_train::quantize::{quantize_file, QuantizeConfig};

use crate::options::parse_meta;

/// Quantise a model to int8 for the CPU's int8 engine (AVX-512 VNNI, AVX-VNNI or portable
/// kernels): BatchNorm folded, weights int8 per output channel, each activation's range
/// calibrated on images of --data (spread evenly over its classes); the confidence
/// calibration, when the model has one, refitted on the quantised features over all of --data.
/// The output loads like any model file, on the CPU.
#[derive(Args)]
pub struct QuantizeArgs {
    /// The float32 model file (safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Override a metadata entry, KEY=VALUE (repeatable); written into the output.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Image-folder root of the model's training data (every folder holding images is a class).
    #[arg(long)]
    data: PathBuf,
    /// File listing the top-level folders to use.
    #[arg(long)]
    include: Option<PathBuf>,
    /// Output model file.
    #[arg(long)]
    out: PathBuf,
    /// Images calibrating the activation ranges.
    #[arg(long, default_value_t = QuantizeConfig::default().images)]
    images: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let include = args.include.as_deref().map(read_list).transpose()?;
    // The data as the user named it, without the machine's folders above it.
    let name = |p: &std::path::Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let description = match &args.include {
        Some(list) => format!("{} (folders listed in {})", name(&args.data), name(list)),
        None => name(&args.data),
    };
    let mut config = QuantizeConfig::default();
    config.images = args.images;
    config.seed = args.seed;
    let report = quantize_file(
        &args.model,
        &parse_meta(&args.meta)?,
        &args.data,
        include.as_deref(),
        &description,
        &args.out,
        &config,
    )?;
    let calibration = match &report.calibration {
        Some(c) => format!("; calibration refitted: {}", c.to_metadata()),
        None => String::new(),
    };
    outln!(
        "{}: int8, activation ranges from {} images of {} classes{calibration}",
        args.out.display(),
        report.images,
        report.classes
    );
    Ok(())
}
