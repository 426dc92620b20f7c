//! `mgecl calibrate`: fit a model's confidence calibration and write the model with it.

use std::path::PathBuf;

use clap::Args;
use mgecl_train::calibrate::{calibrate_file, CalibrateConfig};
use mgecl_train::data::read_list;

use crate::options::parse_meta;

/// Fit a model's confidence calibration on labelled images from its training classes and
/// write the model with it (the weights unchanged; --meta overrides are written into its
/// metadata, e.g. --meta feature_power=0.5).
#[derive(Args)]
pub struct CalibrateArgs {
    /// Model file (safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Override a metadata entry, KEY=VALUE (repeatable); written into the output.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Image-folder root (every folder holding images is a class).
    #[arg(long)]
    data: PathBuf,
    /// File listing the top-level folders to use.
    #[arg(long)]
    include: Option<PathBuf>,
    /// Output model file.
    #[arg(long)]
    out: PathBuf,
    /// Episodes per (ways, shots) shape.
    #[arg(long, default_value_t = 40)]
    episodes_per_shape: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: CalibrateArgs) -> anyhow::Result<()> {
    let include = args.include.as_deref().map(read_list).transpose()?;
    let config = CalibrateConfig {
        episodes_per_shape: args.episodes_per_shape,
        seed: args.seed,
        ..CalibrateConfig::default()
    };
    let calibration = calibrate_file(
        &args.model,
        &parse_meta(&args.meta)?,
        &args.data,
        include.as_deref(),
        &args.out,
        &config,
    )?;
    outln!("{}: {}", args.out.display(), calibration.to_metadata());
    Ok(())
}
