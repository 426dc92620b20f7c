//! `mgecl calibrate`: fit a model's confidence calibration and write the model with it.

use clap::Args;
use mgecl_train::calibrate::{calibrate_file, CalibrateConfig};

use crate::options::RewriteArgs;

/// Fit a model's confidence calibration on labelled images from its training classes and
/// write the model with it (the weights unchanged; --meta overrides are written into its
/// metadata, e.g. --meta feature_power=0.5).
#[derive(Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    io: RewriteArgs,
    /// Episodes per (ways, shots) shape.
    #[arg(long, default_value_t = 40)]
    episodes_per_shape: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the features' centre on this data (metadata `feature_mean`: the mean of the
    /// class means, subtracted from every feature before the classifier), calibrating for it.
    #[arg(long)]
    centre: bool,
}

pub fn run(args: CalibrateArgs) -> anyhow::Result<()> {
    let (meta, include) = (args.io.metadata()?, args.io.include_list()?);
    let config = CalibrateConfig {
        episodes_per_shape: args.episodes_per_shape,
        seed: args.seed,
        ..CalibrateConfig::default()
    };
    let io = &args.io;
    let calibration = calibrate_file(
        &io.model,
        &meta,
        &io.data,
        include.as_deref(),
        &io.out,
        &config,
        args.centre,
    )?;
    outln!("{}: {}", io.out.display(), calibration.to_metadata());
    Ok(())
}
