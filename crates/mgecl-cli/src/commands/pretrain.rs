//! `mgecl pretrain`: stage 1, cross-entropy pretraining of an encoder.

use anyhow::bail;
use clap::Args;
use mgecl_train::net::EncoderSpec;
use mgecl_train::pretrain::{pretrain, PretrainConfig, Teacher};
use mgecl_train::trainer::Distillation;

use crate::options::{named, run_config, DataArgs, RunArgs, SgdArgs, ValArgs};
use crate::terminal::TerminalProgress;
use mgecl::model::Architecture;

/// Stage 1: cross-entropy pretraining of an encoder on an image-folder dataset.
#[derive(Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    val: ValArgs,
    #[arg(long, value_parser = named::<Architecture>(), default_value = "conv4")]
    arch: Architecture,
    /// Block widths: one value (conv4) or four comma-separated (resnet12).
    #[arg(long, default_value = "64", value_delimiter = ',')]
    widths: Vec<usize>,
    /// Input channels (1 grey, 3 RGB).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Input side in pixels.
    #[arg(long, default_value_t = 28)]
    image_size: usize,
    /// Invert pixels (bright strokes on dark background).
    #[arg(long)]
    invert: bool,
    /// Normalisation mean per channel (default: computed from the training images).
    #[arg(long, value_delimiter = ',', requires = "std")]
    mean: Option<Vec<f32>>,
    /// Normalisation std per channel (with --mean).
    #[arg(long, value_delimiter = ',', requires = "mean")]
    std: Option<Vec<f32>>,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// Epochs at which the learning rate decays.
    #[arg(long, value_delimiter = ',', default_value = "20,25")]
    lr_milestones: Vec<usize>,
    #[command(flatten)]
    sgd: SgdArgs,
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// Weight of the rotation self-supervision loss (0: off): the batch's quarters turned by
    /// 0, 90, 180 and 270 degrees and a 4-way rotation head trained beside the class head.
    #[arg(long, default_value_t = 0.0)]
    rotation_weight: f64,
    /// Distil from this teacher as well (born-again networks, RFS-distill): a checkpoint of a
    /// pretraining run on the same classes, class head included (its best.safetensors).
    #[arg(long, value_name = "CHECKPOINT")]
    teacher: Option<std::path::PathBuf>,
    /// Softmax temperature of the distillation (with --teacher).
    #[arg(long, default_value_t = 4.0, requires = "teacher")]
    distill_temperature: f64,
    /// The distillation's share w of the class loss, (1 - w) CE + w T^2 KL (with --teacher).
    #[arg(long, default_value_t = 0.5, requires = "teacher")]
    distill_weight: f64,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: PretrainArgs) -> anyhow::Result<()> {
    let widths = match a.widths.len() {
        4 => a.widths.clone(),
        1 => vec![a.widths[0]; 4],
        _ => bail!("--widths takes 1 or 4 values"),
    };
    let config = PretrainConfig {
        run: run_config(a.data, &a.val, &a.run, 5)?,
        net: EncoderSpec {
            arch: a.arch,
            widths,
            in_channels: a.channels,
        },
        image_size: a.image_size,
        invert: a.invert,
        mean_std: a.mean.zip(a.std),
        epochs: a.epochs,
        batch_size: a.batch_size,
        optim: a.sgd.config(a.lr, a.lr_milestones, a.epochs),
        label_smoothing: a.label_smoothing,
        rotation_weight: a.rotation_weight,
        teacher: a.teacher.map(|checkpoint| Teacher {
            checkpoint,
            distillation: Distillation {
                temperature: a.distill_temperature,
                weight: a.distill_weight,
            },
        }),
    };
    let summary = pretrain(
        &config,
        a.run.device,
        a.run.resume,
        &mut TerminalProgress::default(),
    )?;
    outln!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
