//! `mgecl quantize`: an int8 model from a float32 one.

use clap::Args;
use mgecl_train::quantize::{quantize_file, QuantizeConfig};

use crate::options::RewriteArgs;

/// Quantise a model to int8 for the CPU's int8 engine (AVX-512 VNNI, AVX-VNNI or portable
/// kernels): BatchNorm folded, weights int8 per output channel, each activation's range
/// calibrated on images of --data (spread evenly over its classes); the confidence
/// calibration, when the model has one, refitted on the quantised features over all of --data.
/// The output loads like any model file, on the CPU.
#[derive(Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    io: RewriteArgs,
    /// Images calibrating the activation ranges.
    #[arg(long, default_value_t = QuantizeConfig::default().images)]
    images: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let (meta, include) = (args.io.metadata()?, args.io.include_list()?);
    let io = &args.io;
    // The data as the user named it, without the machine's folders above it.
    let name = |p: &std::path::Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let description = match &io.include {
        Some(list) => format!("{} (folders listed in {})", name(&io.data), name(list)),
        None => name(&io.data),
    };
    let mut config = QuantizeConfig::default();
    config.images = args.images;
    config.seed = args.seed;
    let report = quantize_file(
        &io.model,
        &meta,
        &io.data,
        include.as_deref(),
        &description,
        &io.out,
        &config,
    )?;
    let calibration = match &report.calibration {
        Some(c) => format!("; calibration refitted: {}", c.to_metadata()),
        None => String::new(),
    };
    outln!(
        "{}: int8, activation ranges from {} images of {} classes{calibration}",
        io.out.display(),
        report.images,
        report.classes
    );
    Ok(())
}
