//! `mgecl metatrain`: stage 2, MGECL's episodic training of a pretrained encoder.

use std::path::PathBuf;

use clap::Args;
use mgecl_train::metatrain::{metatrain, MetatrainConfig};

use crate::options::{episode_classes, run_config, DataArgs, RunArgs, SgdArgs, ValArgs};
use crate::terminal::TerminalProgress;

/// Stage 2: MGECL meta-training from a pretrained encoder.
#[derive(Args)]
pub struct MetatrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    val: ValArgs,
    /// Pretrained model to start from.
    #[arg(long)]
    init: PathBuf,
    #[arg(long, default_value_t = 3000)]
    episodes: usize,
    #[arg(long, default_value_t = 5)]
    ways: usize,
    #[arg(long, default_value_t = 1)]
    shots: usize,
    #[arg(long, default_value_t = 15)]
    queries: usize,
    /// Training episodes draw their classes from one alphabet (parent folder).
    #[arg(long)]
    within_alphabet: bool,
    /// Augmented views per support image (instance loss).
    #[arg(long, default_value_t = 4)]
    views: usize,
    #[arg(long, default_value_t = 0.2)]
    margin: f64,
    #[arg(long, default_value_t = 0.1)]
    tau: f64,
    #[arg(long, default_value_t = 1.0)]
    lambda: f64,
    /// Turn the class-granularity loss off.
    #[arg(long)]
    no_class_loss: bool,
    /// Turn the instance-granularity loss off.
    #[arg(long)]
    no_instance_loss: bool,
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    #[arg(long, value_delimiter = ',')]
    lr_milestones: Vec<usize>,
    #[command(flatten)]
    sgd: SgdArgs,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: MetatrainArgs) -> anyhow::Result<()> {
    let config = MetatrainConfig {
        init: a.init,
        run: run_config(a.data, &a.val, &a.run, 500)?,
        episodes: a.episodes,
        ways: a.ways,
        shots: a.shots,
        queries: a.queries,
        classes: episode_classes(a.within_alphabet),
        views: a.views,
        margin: a.margin,
        tau: a.tau,
        lambda: a.lambda,
        class_loss: !a.no_class_loss,
        instance_loss: !a.no_instance_loss,
        optim: a.sgd.config(a.lr, a.lr_milestones, a.episodes),
    };
    let summary = metatrain(
        &config,
        a.run.device,
        a.run.resume,
        &mut TerminalProgress::default(),
    )?;
    outln!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
