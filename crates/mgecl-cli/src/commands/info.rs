//! `mgecl info`: what a model file holds.

use clap::Args;

use crate::options::ModelArgs;

/// Describe a model: architecture, widths, input, feature size, device.
#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let info = model.info();
    if args.json {
        outln!("{}", serde_json::to_string(info)?);
        return Ok(());
    }
    outln!("architecture: {}", info.arch);
    outln!("widths:       {:?}", info.widths);
    outln!(
        "input:        {} channel(s), {}x{} px",
        info.input.in_channels,
        info.input.image_size.0,
        info.input.image_size.1
    );
    outln!(
        "normalise:    mean {:?}, std {:?}, invert {}",
        info.input.mean,
        info.input.std,
        info.input.invert
    );
    outln!("feature dim:  {}", info.feature_dim);
    if let Some(power) = info.metadata.get("feature_power") {
        outln!("features:     encoder outputs ^ {power}");
    }
    let calibrated = match model.calibration() {
        None => "no",
        Some(c) if c.unaugmented.is_some() => "yes (tasks with and without augmentation)",
        Some(_) => "yes",
    };
    outln!("calibrated:   {calibrated}");
    let tasks = model.task_defaults();
    let queries = if tasks.augment_queries {
        " (support and queries)"
    } else {
        ""
    };
    let copies = if tasks.augmented_copies == 1 {
        "copy"
    } else {
        "copies"
    };
    outln!(
        "tasks:        {} classifier, {} {} {copies}{queries}",
        tasks.classifier,
        tasks.augmented_copies,
        tasks.augmentation,
    );
    outln!("device:       {}", info.device);
    outln!("engine:       {}", info.engine);
    outln!("fingerprint:  {}", info.fingerprint);
    Ok(())
}
