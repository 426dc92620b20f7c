//! Flags that several commands share (the model to load, test-time augmentation, the
//! training data and run settings) and the enumerated values they take.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use std::str::FromStr;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use mgecl::model::Architecture;
use mgecl::{Augmentation, ClassifierKind, DeviceChoice, Engine, LoadOptions, Model, TaskConfig};
use mgecl_train::augment::AugmentConfig;
use mgecl_train::data::EpisodeClasses;
use mgecl_train::optim::OptimConfig;
use mgecl_train::{RunConfig, ValidationConfig};

/// A core enum the CLI takes by name: the core's values and names, listed in `--help`
/// and parsed by the core's `FromStr`, so the CLI keeps no copy of the type.
pub trait Named: FromStr<Err = mgecl::Error> + Copy + Send + Sync + 'static {
    /// Every value.
    fn all() -> &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
}

impl Named for Architecture {
    fn all() -> &'static [Self] {
        &Architecture::ALL
    }
    fn name(self) -> &'static str {
        Architecture::name(self)
    }
}

impl Named for Engine {
    fn all() -> &'static [Self] {
        &Engine::ALL
    }
    fn name(self) -> &'static str {
        Engine::name(self)
    }
}

impl Named for ClassifierKind {
    fn all() -> &'static [Self] {
        &ClassifierKind::ALL
    }
    fn name(self) -> &'static str {
        ClassifierKind::name(self)
    }
}

impl Named for Augmentation {
    fn all() -> &'static [Self] {
        &Augmentation::ALL
    }
    fn name(self) -> &'static str {
        Augmentation::name(self)
    }
}

/// The clap parser of a [`Named`] core enum.
pub fn named<T: Named>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::all().iter().map(|v| v.name())).try_map(|name| name.parse::<T>())
}

/// `--augment`: training augmentation preset.
#[derive(Clone, Copy, ValueEnum)]
pub enum AugmentPreset {
    None,
    /// Small rotations, shifts and scaling (drawings).
    Omniglot,
    /// RFS's padded random crop, colour jitter and horizontal flip (photographs).
    Imagenet,
}

impl AugmentPreset {
    fn config(self) -> anyhow::Result<AugmentConfig> {
        Ok(AugmentConfig::preset(match self {
            AugmentPreset::None => "none",
            AugmentPreset::Omniglot => "omniglot",
            AugmentPreset::Imagenet => "imagenet",
        })?)
    }
}

/// The model file to load and how.
#[derive(Args)]
pub struct ModelArgs {
    /// Model file (safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Which implementation runs the encoder.
    #[arg(long, value_parser = named::<Engine>(), default_value = "auto")]
    pub engine: Engine,
    /// Override a metadata entry, KEY=VALUE (repeatable), e.g. --meta image_size=28.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Most memory one forward pass may take, in MiB: batches are cut to fit, and a model
    /// whose single image needs more is refused.
    #[arg(long, value_name = "MIB", default_value_t = mgecl::DEFAULT_MAX_EMBED_BYTES >> 20)]
    pub max_memory: u64,
}

impl ModelArgs {
    /// Loads the model with the flags' device, engine and metadata overrides.
    pub fn load(&self) -> anyhow::Result<Model> {
        let mut options = LoadOptions::default()
            .with_device(self.device)
            .with_engine(self.engine)
            .with_max_embed_bytes(self.max_memory.saturating_mul(1 << 20));
        options.metadata_overrides = parse_meta(&self.meta)?;
        Model::load(&self.model, &options).map_err(|e| match e {
            mgecl::Error::LimitExceeded(_) => anyhow::Error::new(e)
                .context("cannot load the model (--max-memory raises the bound)"),
            other => other.into(),
        })
    }
}

/// `--meta KEY=VALUE` entries as a map.
pub fn parse_meta(entries: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for entry in entries {
        let (k, v) = entry
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("--meta {entry:?}: expected KEY=VALUE"))?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

/// The task flags of the commands that classify: the classifier and its probabilities.
#[derive(Args)]
pub struct TaskArgs {
    /// The per-task classifier. Default: the model's recommendation, else prototype.
    #[arg(long, value_parser = named::<ClassifierKind>())]
    pub classifier: Option<ClassifierKind>,
    /// The classifier's raw probabilities (logistic: scikit-learn's) instead of the model's
    /// calibrated ones.
    #[arg(long)]
    pub raw_probabilities: bool,
    /// Classify the images of a run together: the class prototypes are refined with the
    /// unlabelled images themselves before answering (class proportions estimated, images of
    /// no support class kept out), so an image's answer depends on the others. Needs at
    /// least 2 images per class, else the answers are the usual ones. (label's default.)
    #[arg(long)]
    pub transductive: bool,
    #[command(flatten)]
    pub tta: TtaArgs,
}

/// Test-time augmentation (the task's augmented copies); unset flags take the model's
/// recommendation (its `task_defaults` metadata; none: no augmentation).
#[derive(Args)]
pub struct TtaArgs {
    /// Augmented copies embedded with each support image (0-8; 0 = off). Default: the
    /// model's recommendation, else 0.
    #[arg(long)]
    pub augmented_copies: Option<usize>,
    /// Which copies. Default: the model's recommendation, else rotate.
    #[arg(long, value_parser = named::<Augmentation>())]
    pub augmentation: Option<Augmentation>,
    /// Also embed each image to classify with the copies and classify their mean direction
    /// (1 + copies times the embedding cost). Default: the model's recommendation, else off.
    #[arg(long, conflicts_with = "no_augment_queries")]
    pub augment_queries: bool,
    /// Embed each image to classify alone, whatever the model recommends.
    #[arg(long)]
    pub no_augment_queries: bool,
}

impl TtaArgs {
    /// `--augment-queries` (true), `--no-augment-queries` (false) or neither (None).
    fn augment_queries(&self) -> Option<bool> {
        match (self.augment_queries, self.no_augment_queries) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

impl TaskArgs {
    /// The task settings: the model's recommended ones ([`Model::task_defaults`]) with the
    /// flags over them.
    pub fn config(&self, model: &Model) -> anyhow::Result<TaskConfig> {
        let base = model.task_defaults().clone();
        let copies = self.tta.augmented_copies.unwrap_or(base.augmented_copies);
        // A model's recommended query augmentation lapses with `--augmented-copies 0`.
        let augment_queries = self
            .tta
            .augment_queries()
            .unwrap_or(base.augment_queries && copies > 0);
        if augment_queries && copies == 0 {
            bail!("--augment-queries needs --augmented-copies 1 or more");
        }
        Ok(TaskConfig {
            classifier: self.classifier.map_or(base.classifier, Into::into),
            calibrated: !self.raw_probabilities,
            augmented_copies: copies,
            augmentation: self.tta.augmentation.map_or(base.augmentation, Into::into),
            augment_queries,
            transductive: self.transductive || base.transductive,
            ..base
        })
    }
}

/// A model rewritten from labelled images of its training classes (`calibrate`, `quantize`):
/// the model in, metadata overrides, the data, the model out.
#[derive(Args)]
pub struct RewriteArgs {
    /// Model file (safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Override a metadata entry, KEY=VALUE (repeatable); written into the output.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Image-folder root (every folder holding images is a class).
    #[arg(long)]
    pub data: PathBuf,
    /// File listing the top-level folders to use.
    #[arg(long)]
    pub include: Option<PathBuf>,
    /// Output model file.
    #[arg(long)]
    pub out: PathBuf,
}

impl RewriteArgs {
    /// The `--meta` overrides, parsed.
    pub fn metadata(&self) -> anyhow::Result<BTreeMap<String, String>> {
        parse_meta(&self.meta)
    }

    /// The folders `--include` lists, if given.
    pub fn include_list(&self) -> anyhow::Result<Option<Vec<String>>> {
        let list = self.include.as_deref().map(mgecl_train::data::read_list);
        Ok(list.transpose()?)
    }
}

/// The training data of both training stages.
#[derive(Args)]
pub struct DataArgs {
    /// Image-folder root (every folder holding images is a class).
    #[arg(long)]
    data: PathBuf,
    /// File listing the top-level folders to train on.
    #[arg(long)]
    include: Option<PathBuf>,
    /// File listing the held-out top-level folders to validate on.
    #[arg(long)]
    val_include: Option<PathBuf>,
    /// Also train on every training class rotated by 90, 180 and 270 degrees, as three more
    /// classes each (square images; the Omniglot standard).
    #[arg(long)]
    rotate_classes: bool,
}

/// Validation during training.
#[derive(Args)]
pub struct ValArgs {
    /// Validate (and checkpoint) every N epochs (pretrain) or episodes (metatrain).
    #[arg(long)]
    val_every: Option<usize>,
    /// Validation episodes.
    #[arg(long, default_value_t = 300)]
    val_episodes: usize,
    /// Validation ways.
    #[arg(long, default_value_t = 5)]
    val_ways: usize,
    /// Validation shots.
    #[arg(long, default_value_t = 1)]
    val_shots: usize,
    /// Validation queries per class.
    #[arg(long, default_value_t = 15)]
    val_queries: usize,
    /// Validation classifier.
    #[arg(long, value_parser = named::<ClassifierKind>(), default_value = "logistic")]
    val_classifier: ClassifierKind,
    /// Validation episodes draw their classes from one alphabet (parent folder).
    #[arg(long)]
    val_within_alphabet: bool,
}

/// Run settings both training stages share.
#[derive(Args)]
pub struct RunArgs {
    /// Augmentation preset.
    #[arg(long, value_enum, default_value_t = AugmentPreset::Omniglot)]
    augment: AugmentPreset,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (best.safetensors, last.safetensors, log.jsonl).
    #[arg(long)]
    out: PathBuf,
    /// Continue from OUT/last.safetensors if it exists.
    #[arg(long)]
    pub resume: bool,
    /// Stop after N epochs (pretrain) or episodes (metatrain) in this invocation; continue
    /// later with --resume.
    #[arg(long)]
    stop_after: Option<usize>,
    /// cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Training implementation (candle: candle's autograd everywhere).
    #[arg(long, value_parser = named::<Engine>(), default_value = "auto")]
    engine: Engine,
    /// Most memory one training step's batch may hold, in MiB (estimated from the input size,
    /// widths and images per step); more is refused before training starts.
    #[arg(long, value_name = "MIB", default_value_t = mgecl_train::memory::DEFAULT_MAX_STEP_BYTES >> 20)]
    max_memory: u64,
}

/// SGD settings both training stages share.
#[derive(Args)]
pub struct SgdArgs {
    /// Learning-rate decay factor at each milestone.
    #[arg(long, default_value_t = 0.1)]
    lr_decay: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Learning-rate schedule: step decay at the milestones, or cosine annealing over the
    /// whole run (the milestones then unused).
    #[arg(long, value_enum, default_value_t = LrSchedule::Step)]
    lr_schedule: LrSchedule,
}

/// `--lr-schedule`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LrSchedule {
    Step,
    Cosine,
}

impl SgdArgs {
    /// The optimiser with the stage's own learning rate, milestones and length (epochs or
    /// episodes, what a cosine schedule anneals over).
    pub fn config(&self, lr: f64, lr_milestones: Vec<usize>, steps: usize) -> OptimConfig {
        let cosine = self.lr_schedule == LrSchedule::Cosine;
        OptimConfig {
            lr,
            lr_milestones: if cosine { Vec::new() } else { lr_milestones },
            lr_decay: self.lr_decay,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            cosine_steps: cosine.then_some(steps),
        }
    }
}

/// Episodes of any classes, or of classes of one parent folder (an alphabet).
pub fn episode_classes(within_alphabet: bool) -> EpisodeClasses {
    if within_alphabet {
        EpisodeClasses::WithinGroup
    } else {
        EpisodeClasses::Any
    }
}

/// The settings both training subcommands share; `val_every` is the stage's default.
pub fn run_config(
    data: DataArgs,
    val: &ValArgs,
    run: &RunArgs,
    val_every: usize,
) -> anyhow::Result<RunConfig> {
    Ok(RunConfig {
        data: data.data,
        train_list: data.include,
        val_list: data.val_include,
        rotate_classes: data.rotate_classes,
        augment: run.augment.config()?,
        val_every: val.val_every.unwrap_or(val_every),
        validation: ValidationConfig {
            episodes: val.val_episodes,
            ways: val.val_ways,
            shots: val.val_shots,
            queries: val.val_queries,
            classifier: val.val_classifier,
            classes: episode_classes(val.val_within_alphabet),
        },
        seed: run.seed,
        out_dir: run.out.clone(),
        stop_after: run.stop_after,
        engine: run.engine,
        max_step_bytes: run.max_memory.saturating_mul(1 << 20),
    })
}
