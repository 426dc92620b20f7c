//! `mgecl`: the command-line front end of the SDK. One subcommand per job.

mod label;
mod plot;
mod progress;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;

use mgecl::convert::{convert_checkpoint_file, ConvertOptions};
use mgecl::{DeviceChoice, Engine, Error, LoadOptions, Model, Task, TaskConfig};
use mgecl_train::augment::AugmentConfig;
use mgecl_train::calibrate::{calibrate_file, CalibrateConfig};
use mgecl_train::data::{
    add_unknown_queries, check_episodes, read_list, sample_episodes, scan_classes, Dataset,
    EpisodeClasses,
};
use mgecl_train::evaluate::{embed_dataset, evaluate_episodes, EpisodesFile};
use mgecl_train::metatrain::{metatrain, MetatrainConfig};
use mgecl_train::net::NetSpec;
use mgecl_train::optim::OptimConfig;
use mgecl_train::pretrain::{pretrain, MeanStd, PretrainConfig};
use mgecl_train::rng::Rng;
use mgecl_train::{Progress, RunConfig, ValidationConfig};

/// `println!` that reports a failed write (a closed pipe: `mgecl info | head -c 10`) as an
/// error instead of panicking; `main` exits quietly on a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).map_err(|e| Error::io("<stdout>", e))?
    };
}

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
    /// Classify images against a support folder holding one sub-folder of example images per
    /// class (the folder name is the label). One line per image: path, label, probability.
    Classify {
        #[command(flatten)]
        model: ModelArgs,
        /// Folder of class folders.
        #[arg(long)]
        support: PathBuf,
        /// prototype or logistic (default: the model's recommendation, else the SDK's,
        /// prototype).
        #[arg(long)]
        classifier: Option<String>,
        /// Answer "unknown" when the image's known-probability (the probability that it is
        /// of one of the support classes at all) is below this, e.g. 0.5.
        #[arg(long)]
        threshold: Option<f64>,
        /// The classifier's raw probabilities (logistic: scikit-learn's) instead of the
        /// model's calibrated ones.
        #[arg(long)]
        raw_probabilities: bool,
        #[command(flatten)]
        tta: TtaArgs,
        /// One JSON object per line: path, label, probability, known_probability,
        /// probabilities.
        #[arg(long)]
        json: bool,
        /// Images to classify.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Fit a model's confidence calibration on labelled images from its training classes and
    /// write the model with it (the weights unchanged; --meta overrides are written into its
    /// metadata, e.g. --meta feature_power=0.5).
    Calibrate {
        #[command(flatten)]
        model: ModelArgs,
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
    },
    /// Propose a label for every image under a folder (recursively) from a support folder of
    /// class folders; write them as CSV (path relative to --images, label, probability,
    /// needs_review, runner_up, runner_up_probability, known_probability, label_next), and
    /// optionally an HTML report: the images to review, the ones to label next, every image
    /// grouped by label.
    Label {
        #[command(flatten)]
        model: ModelArgs,
        /// Folder of class folders (the folder name is the label).
        #[arg(long)]
        support: PathBuf,
        /// Folder of images to label, searched recursively: PNG, JPEG, WebP, BMP, GIF (first
        /// frame) and TIFF files are labelled; HEIC/HEIF/AVIF files get a row saying to
        /// convert them; other files are counted as skipped (--list-skipped names them).
        #[arg(long)]
        images: PathBuf,
        /// The CSV to write.
        #[arg(long)]
        out: PathBuf,
        /// Also write this self-contained HTML page.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Mark an image for review when its label's probability, or its probability of
        /// belonging to one of the support classes at all, is below this.
        #[arg(long, default_value_t = 0.8)]
        review_below: f64,
        /// How many images to suggest labelling next.
        #[arg(long, default_value_t = 20)]
        label_next: usize,
        /// Stop at the first file that cannot be read or decoded (or is over the image limits)
        /// with an error and no CSV. By default such a file gets a CSV row with an empty label
        /// and the reason in the `error` column, and the job goes on.
        #[arg(long)]
        strict: bool,
        /// Print the files under --images that are not images (they are counted either way).
        #[arg(long)]
        list_skipped: bool,
        /// Continue an interrupted run (Ctrl-C, kill, power loss) from the progress file
        /// beside --out (`OUT.progress`, appended and synced every 16 images, removed when the
        /// CSV is written): the CSV and report are the same as an uninterrupted run's. Without
        /// --resume a run starts over.
        #[arg(long)]
        resume: bool,
        /// prototype or logistic (default: the SDK's, prototype, which suits labelling:
        /// labelling gives classes unequal numbers of examples, and logistic regression's
        /// intercepts then favour the larger classes; bench/label_heldout.py: adding 10
        /// labelled images per case cost logistic 1.7 points, prototype nothing). A model may
        /// recommend another.
        #[arg(long)]
        classifier: Option<String>,
        /// The classifier's raw probabilities instead of the model's calibrated ones.
        #[arg(long)]
        raw_probabilities: bool,
        #[command(flatten)]
        tta: TtaArgs,
    },
    /// Draw the HTML report of a labels CSV written by `mgecl label` (or
    /// `python -m mgecl.ray label`): no model needed, the images and examples are read from
    /// their folders.
    Report {
        /// The labels CSV.
        #[arg(long)]
        csv: PathBuf,
        /// The support folder the CSV was labelled from.
        #[arg(long)]
        support: PathBuf,
        /// The images folder the CSV's paths are relative to.
        #[arg(long)]
        images: PathBuf,
        /// The HTML page to write.
        #[arg(long)]
        out: PathBuf,
        /// The --review-below the CSV was written with (for the page's explanation).
        #[arg(long, default_value_t = 0.8)]
        review_below: f64,
    },
    /// Convert a PyTorch checkpoint (torch.save zip: a state dict, or a dict holding one as RFS
    /// and MGECL save) to a model file: the encoder's tensors under RFS key names, float32,
    /// with the metadata given; heads, counters and prefixes such as `module.` dropped.
    Convert {
        /// The PyTorch checkpoint (.pth, .pt).
        input: PathBuf,
        /// The model file to write (safetensors).
        output: PathBuf,
        /// Metadata entry KEY=VALUE (repeatable); image_size, mean and std are required, e.g.
        /// --meta image_size=84 --meta mean=[0.485,0.456,0.406] --meta std=[0.229,0.224,0.225].
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// Dotted key of the state dict inside the checkpoint (e.g. model, state_dict), when
        /// it holds more than one encoder.
        #[arg(long)]
        key: Option<String>,
    },
    /// Stage 1: cross-entropy pretraining of an encoder on an image-folder dataset.
    Pretrain(Box<PretrainArgs>),
    /// Stage 2: MGECL meta-training from a pretrained encoder.
    Metatrain(Box<MetatrainArgs>),
    /// Few-shot evaluation: sampled episodes (--data) or pinned ones (--episodes-file).
    Evaluate(Box<EvaluateArgs>),
}

#[derive(Args)]
struct DataArgs {
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

#[derive(Args)]
struct ValArgs {
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
    #[arg(long, default_value = "logistic")]
    val_classifier: String,
    /// Validation episodes draw their classes from one alphabet (parent folder).
    #[arg(long)]
    val_within_alphabet: bool,
}

impl ValArgs {
    fn config(&self) -> Result<ValidationConfig, Error> {
        Ok(ValidationConfig {
            episodes: self.val_episodes,
            ways: self.val_ways,
            shots: self.val_shots,
            queries: self.val_queries,
            classifier: self.val_classifier.parse()?,
            classes: episode_classes(self.val_within_alphabet),
        })
    }
}

/// Run settings both training stages share.
#[derive(Args)]
struct RunArgs {
    /// Augmentation preset: none, omniglot, imagenet.
    #[arg(long, default_value = "omniglot")]
    augment: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (best.safetensors, last.safetensors, log.jsonl).
    #[arg(long)]
    out: PathBuf,
    /// Continue from OUT/last.safetensors if it exists.
    #[arg(long)]
    resume: bool,
    /// Stop after N epochs (pretrain) or episodes (metatrain) in this invocation; continue
    /// later with --resume.
    #[arg(long)]
    stop_after: Option<usize>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Training implementation: auto (mgecl's CPU kernels on the CPU, candle elsewhere) or
    /// candle (candle's autograd everywhere, the reference).
    #[arg(long, default_value = "auto")]
    engine: String,
}

/// SGD settings both training stages share.
#[derive(Args)]
struct SgdArgs {
    /// Learning-rate decay factor at each milestone.
    #[arg(long, default_value_t = 0.1)]
    lr_decay: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
}

impl SgdArgs {
    fn config(&self, lr: f64, lr_milestones: Vec<usize>) -> OptimConfig {
        OptimConfig {
            lr,
            lr_milestones,
            lr_decay: self.lr_decay,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
        }
    }
}

#[derive(Args)]
struct PretrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    val: ValArgs,
    /// conv4 or resnet12.
    #[arg(long, default_value = "conv4")]
    arch: String,
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
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    /// Normalisation std per channel (with --mean).
    #[arg(long, value_delimiter = ',')]
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
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct MetatrainArgs {
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

/// Test-time augmentation (the task's augmented copies); unset flags take the model's
/// recommendation (its `task_defaults` metadata; none: no augmentation).
#[derive(Args)]
struct TtaArgs {
    /// Augmented copies embedded with each support image (0-8; 0 = off). Default: the
    /// model's recommendation, else 0.
    #[arg(long)]
    augmented_copies: Option<usize>,
    /// Which copies: rotate (small rotations; for drawings and text) or flip-shift (mirror
    /// and shifts; for photographs). Default: the model's recommendation, else rotate.
    #[arg(long)]
    augmentation: Option<String>,
    /// Also embed each image to classify with the copies and classify their mean direction
    /// (1 + copies times the embedding cost). Default: the model's recommendation, else off.
    #[arg(long, conflicts_with = "no_augment_queries")]
    augment_queries: bool,
    /// Embed each image to classify alone, whatever the model recommends.
    #[arg(long)]
    no_augment_queries: bool,
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

/// The task settings of a command: the model's recommended ones
/// ([`Model::task_defaults`]) with the command's flags over them.
fn task_config(
    model: &Model,
    classifier: Option<&str>,
    raw_probabilities: bool,
    tta: &TtaArgs,
) -> Result<TaskConfig, Error> {
    let base = model.task_defaults().clone();
    let copies = tta.augmented_copies.unwrap_or(base.augmented_copies);
    // A model's recommended query augmentation lapses with `--augmented-copies 0`.
    let augment_queries = tta
        .augment_queries()
        .unwrap_or(base.augment_queries && copies > 0);
    if augment_queries && copies == 0 {
        return Err(Error::InvalidArgument(
            "--augment-queries needs --augmented-copies 1 or more".into(),
        ));
    }
    Ok(TaskConfig {
        classifier: classifier.map_or(Ok(base.classifier), str::parse)?,
        calibrated: !raw_probabilities,
        augmented_copies: copies,
        augmentation: tta
            .augmentation
            .as_deref()
            .map_or(Ok(base.augmentation), str::parse)?,
        augment_queries,
        ..base
    })
}

#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image-folder root to sample episodes from.
    #[arg(long, conflicts_with = "episodes_file")]
    data: Option<PathBuf>,
    /// File listing the top-level folders to use.
    #[arg(long)]
    include: Option<PathBuf>,
    /// Pinned episodes (JSON, paths relative to the file).
    #[arg(long)]
    episodes_file: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    ways: usize,
    #[arg(long, default_value_t = 1)]
    shots: usize,
    #[arg(long, default_value_t = 15)]
    queries: usize,
    #[arg(long, default_value_t = 600)]
    episodes: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// logistic or prototype (default: the model's recommendation, else the SDK's,
    /// prototype).
    #[arg(long)]
    classifier: Option<String>,
    /// Draw each episode's classes from one parent folder (one alphabet: Lake et al.'s
    /// within-alphabet one-shot protocol, on which people score 95.5% at 20-way 1-shot).
    #[arg(long, conflicts_with = "episodes_file")]
    within_alphabet: bool,
    /// Also query, in each episode, `queries` images of each of N classes outside it, and
    /// report open_set_auroc (known-probability) and open_set_auroc_top_probability.
    #[arg(long, default_value_t = 0, conflicts_with = "episodes_file")]
    unknown_ways: usize,
    /// The classifier's raw probabilities instead of the model's calibrated ones.
    #[arg(long)]
    raw_probabilities: bool,
    #[command(flatten)]
    tta: TtaArgs,
    /// Draw the reliability diagram (accuracy against confidence, 15 bins) as a PNG here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// With --json: also each episode's accuracy (`episode_accuracies`), for paired
    /// comparisons of two models or settings on the same episodes (`models/paired.py`).
    #[arg(long, requires = "json")]
    per_episode: bool,
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

/// `--meta KEY=VALUE` entries as a map.
fn parse_meta(entries: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut map = BTreeMap::new();
    for entry in entries {
        let (k, v) = entry
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                Error::InvalidArgument(format!("--meta {entry:?}: expected KEY=VALUE"))
            })?;
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

impl ModelArgs {
    fn load(&self) -> Result<Model, Error> {
        let options = LoadOptions {
            device: self.device.parse::<DeviceChoice>()?,
            engine: self.engine.parse::<Engine>()?,
            metadata_overrides: parse_meta(&self.meta)?,
            ..LoadOptions::default()
        };
        Model::load(&self.model, &options)
    }
}

/// A progress bar on stderr, shown only for more than a handful of items.
/// Training progress on the terminal: a bar per phase, log records as lines above it.
#[derive(Default)]
struct TerminalProgress {
    bar: Option<ProgressBar>,
}

impl Progress for TerminalProgress {
    fn start(&mut self, label: &str, done: u64, total: u64) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar.set_position(done);
        self.bar = Some(bar);
    }

    fn step(&mut self, status: &str) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(status.to_string());
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn record(&mut self, record: &serde_json::Value) {
        match &self.bar {
            Some(bar) => bar.println(record.to_string()),
            None => eprintln!("{record}"),
        }
    }
}

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
        outln!("{text}");
    } else {
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
        outln!(
            "tasks:        {} classifier, {} {} cop{}{queries}",
            tasks.classifier,
            tasks.augmented_copies,
            tasks.augmentation,
            if tasks.augmented_copies == 1 {
                "y"
            } else {
                "ies"
            }
        );
        outln!("device:       {}", info.device);
        outln!("engine:       {}", info.engine);
        outln!("fingerprint:  {}", info.fingerprint);
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
    mgecl::__private::write_file(out, &file)?;
    eprintln!(
        "wrote {} x {dim} features to {}",
        images.len(),
        out.display()
    );
    Ok(())
}

fn convert(input: &Path, output: &Path, meta: &[String], key: Option<String>) -> Result<(), Error> {
    let options = ConvertOptions {
        metadata: parse_meta(meta)?,
        state_dict_key: key,
    };
    let conversion = convert_checkpoint_file(input, output, &options)?;
    let info = &conversion.info;
    let from = match conversion.state_dict_key.as_str() {
        "" => "the top-level state dict".to_string(),
        key => format!("the state dict under {key:?}"),
    };
    outln!(
        "{}: {} {:?}, {} channel(s) in, {} features; {} tensors from {from}{}",
        output.display(),
        info.arch,
        info.widths,
        info.input.in_channels,
        info.feature_dim,
        conversion.kept.len(),
        match conversion.prefix.as_str() {
            "" => String::new(),
            prefix => format!(" (prefix {prefix:?} stripped)"),
        }
    );
    if !conversion.dropped.is_empty() {
        outln!(
            "left out {} tensors: {}",
            conversion.dropped.len(),
            summarise_keys(&conversion.dropped, &conversion.prefix)
        );
    }
    Ok(())
}

/// Keys grouped by their first component after `prefix`, with counts: `classifier.* (2),
/// num_batches_tracked (16)`.
fn summarise_keys(keys: &[String], prefix: &str) -> String {
    let mut counters = 0;
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for key in keys {
        let key = key.strip_prefix(prefix).unwrap_or(key);
        if key.ends_with("num_batches_tracked") {
            counters += 1;
        } else {
            *groups
                .entry(key.split('.').next().unwrap_or(key))
                .or_default() += 1;
        }
    }
    let mut parts: Vec<String> = groups
        .into_iter()
        .map(|(group, n)| format!("{group}.* ({n})"))
        .collect();
    if counters > 0 {
        parts.push(format!("num_batches_tracked ({counters})"));
    }
    parts.join(", ")
}

/// Each class of a support folder: its label (the folder name) and its images.
type SupportClasses = Vec<(String, Vec<PathBuf>)>;

/// Support images per class folder of `support` (sorted by folder name).
fn support_classes(support: &Path) -> Result<SupportClasses, Error> {
    let mut class_dirs: Vec<PathBuf> = std::fs::read_dir(support)
        .map_err(|e| Error::io(support, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    class_dirs.sort();
    class_dirs
        .into_iter()
        .map(|dir| {
            let label = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((label, images_in(&dir)?))
        })
        .collect()
}

fn count_support(support: &Path) -> Result<usize, Error> {
    Ok(support_classes(support)?.iter().map(|(_, f)| f.len()).sum())
}

/// A task fitted on the class folders of `support`; also returns the classes' images.
fn support_task(
    model: Model,
    config: TaskConfig,
    support: &Path,
    bar: &ProgressBar,
) -> Result<(Task, SupportClasses), Error> {
    let mut task = Task::new(Arc::new(model), config)?;
    let classes = support_classes(support)?;
    for (label, images) in &classes {
        task.add_class(label)?;
        for image in images {
            task.add_example_path(label, image)?;
            bar.inc(1);
        }
    }
    let report = task.fit()?;
    if !report.converged {
        eprintln!(
            "warning: the classifier did not converge (gradient {:.2e})",
            report.gradient_max_abs
        );
    }
    Ok((task, classes))
}

fn report_cmd(
    csv: &Path,
    support: &Path,
    images: &Path,
    out: &Path,
    review_below: f64,
) -> Result<(), Error> {
    let text = std::fs::read_to_string(csv).map_err(|e| Error::io(csv, e))?;
    let rows = mgecl::task::LabelCsv::parse(&text)?;
    let examples = support_classes(support)?;
    let classes: Vec<String> = examples.iter().map(|(label, _)| label.clone()).collect();
    let files: Vec<PathBuf> = rows
        .paths
        .iter()
        .map(|p| images.join(p.split('/').collect::<PathBuf>()))
        .collect();
    let html = report::html(
        &report::ReportInput {
            support,
            images,
            files: &files,
            paths: &rows.paths,
            rows: &rows.rows,
            label_next: &rows.label_next,
            classes: &classes,
            review_below,
            examples: &examples,
        },
        &progress,
    )?;
    mgecl::__private::write_file(out, html.as_bytes())?;
    eprintln!("wrote {} ({} images)", out.display(), rows.paths.len());
    Ok(())
}

struct LabelCmd {
    support: PathBuf,
    images: PathBuf,
    out: PathBuf,
    report: Option<PathBuf>,
    review_below: f64,
    label_next: usize,
    strict: bool,
    list_skipped: bool,
    resume: bool,
    classifier: Option<String>,
    raw_probabilities: bool,
    tta: TtaArgs,
}

fn label_cmd(model: Model, a: LabelCmd) -> Result<(), Error> {
    let config = task_config(&model, a.classifier.as_deref(), a.raw_probabilities, &a.tta)?;
    let bar = progress(count_support(&a.support)?, "examples");
    let (task, examples) = support_task(model, config, &a.support, &bar)?;
    bar.finish_and_clear();
    let args = label::LabelArgs {
        support: a.support,
        images: a.images,
        out: a.out,
        report: a.report,
        options: mgecl::LabelOptions {
            review_below: a.review_below,
            label_next: a.label_next,
        },
        strict: a.strict,
        resume: a.resume,
        examples,
    };
    let label::LabelRun {
        paths,
        labelling,
        skipped,
    } = label::run(&task, &args, &progress)?;
    let review = labelling.review_order();
    let failed = labelling.failed();
    if a.list_skipped {
        for (path, why) in &skipped {
            eprintln!("skipped {}: {why}", path.display());
        }
    }
    for &i in failed.iter().take(5) {
        eprintln!(
            "not labelled: {}",
            labelling.rows[i].error().unwrap_or_default()
        );
    }
    eprintln!(
        "labelled {} of {} images into {} classes: {} to review, {} failed (error column); \
         {} other files skipped; wrote {}{}",
        paths.len() - failed.len(),
        paths.len(),
        task.classes().len(),
        review.len(),
        failed.len(),
        skipped.len(),
        args.out.display(),
        args.report
            .as_ref()
            .map(|r| format!(" and {}", r.display()))
            .unwrap_or_default()
    );
    if !labelling.label_next.is_empty() {
        eprintln!("label next:");
        for s in labelling.label_next.iter().take(5) {
            eprintln!("  {}", paths[s.index]);
        }
    }
    Ok(())
}

/// Image files directly inside `dir`, sorted by name.
fn images_in(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::Io {
        path: dir.into(),
        source: e,
    })? {
        let path = entry
            .map_err(|e| Error::Io {
                path: dir.into(),
                source: e,
            })?
            .path();
        if path.is_file() && mgecl::preprocess::is_image_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

struct ClassifyArgs {
    support: PathBuf,
    classifier: Option<String>,
    threshold: Option<f64>,
    raw_probabilities: bool,
    tta: TtaArgs,
    json: bool,
    images: Vec<PathBuf>,
}

fn classify(model: Model, args: ClassifyArgs) -> Result<(), Error> {
    let config = TaskConfig {
        threshold: args.threshold,
        ..task_config(
            &model,
            args.classifier.as_deref(),
            args.raw_probabilities,
            &args.tta,
        )?
    };
    let bar = progress(
        count_support(&args.support)? + args.images.len(),
        "embedding",
    );
    let (task, _) = support_task(model, config, &args.support, &bar)?;
    let labels: Vec<String> = task.classes().into_iter().map(|c| c.label).collect();
    let mut answers = Vec::with_capacity(args.images.len());
    for chunk in args.images.chunks(16) {
        answers.extend(task.classify_paths(chunk)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    for (path, answer) in args.images.iter().zip(answers) {
        let label = answer.label.unwrap_or_else(|| "unknown".to_string());
        if args.json {
            let probabilities: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .cloned()
                .zip(answer.probabilities.iter().map(|&p| serde_json::json!(p)))
                .collect();
            let line = serde_json::json!({
                "path": path, "label": label, "probability": answer.probability,
                "known_probability": answer.known_probability, "probabilities": probabilities,
            });
            outln!("{line}");
        } else {
            outln!("{}\t{label}\t{:.4}", path.display(), answer.probability);
        }
    }
    Ok(())
}

fn mean_std(mean: &Option<Vec<f32>>, std: &Option<Vec<f32>>) -> Result<Option<MeanStd>, Error> {
    match (mean, std) {
        (Some(m), Some(s)) => Ok(Some((m.clone(), s.clone()))),
        (None, None) => Ok(None),
        _ => Err(Error::InvalidArgument(
            "--mean and --std go together".into(),
        )),
    }
}

/// The settings both training subcommands share; `val_every` defaults per stage.
fn run_config(
    data: DataArgs,
    val: &ValArgs,
    run: &RunArgs,
    val_every: usize,
) -> Result<RunConfig, Error> {
    Ok(RunConfig {
        data: data.data,
        train_list: data.include,
        val_list: data.val_include,
        rotate_classes: data.rotate_classes,
        augment: AugmentConfig::preset(&run.augment)?,
        val_every: val.val_every.unwrap_or(val_every),
        validation: val.config()?,
        seed: run.seed,
        out_dir: run.out.clone(),
        stop_after: run.stop_after,
        engine: run.engine.parse::<Engine>()?,
    })
}

fn pretrain_cmd(a: PretrainArgs) -> Result<(), Error> {
    let widths = match (a.arch.as_str(), a.widths.len()) {
        (_, 4) => a.widths.clone(),
        (_, 1) => vec![a.widths[0]; 4],
        _ => {
            return Err(Error::InvalidArgument(
                "--widths takes 1 or 4 values".into(),
            ))
        }
    };
    let config = PretrainConfig {
        run: run_config(a.data, &a.val, &a.run, 5)?,
        net: NetSpec {
            arch: a.arch.parse()?,
            widths,
            in_channels: a.channels,
        },
        image_size: a.image_size,
        invert: a.invert,
        mean_std: mean_std(&a.mean, &a.std)?,
        epochs: a.epochs,
        batch_size: a.batch_size,
        optim: a.sgd.config(a.lr, a.lr_milestones),
        label_smoothing: a.label_smoothing,
    };
    let summary = pretrain(
        &config,
        a.run.device.parse()?,
        a.run.resume,
        &mut TerminalProgress::default(),
    )?;
    outln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(())
}

fn episode_classes(within_alphabet: bool) -> EpisodeClasses {
    if within_alphabet {
        EpisodeClasses::WithinGroup
    } else {
        EpisodeClasses::Any
    }
}

fn metatrain_cmd(a: MetatrainArgs) -> Result<(), Error> {
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
        optim: a.sgd.config(a.lr, a.lr_milestones),
    };
    let summary = metatrain(
        &config,
        a.run.device.parse()?,
        a.run.resume,
        &mut TerminalProgress::default(),
    )?;
    outln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(())
}

fn evaluate_cmd(a: EvaluateArgs) -> Result<(), Error> {
    let model = Arc::new(a.model.load()?);
    let config = task_config(&model, a.classifier.as_deref(), a.raw_probabilities, &a.tta)?;
    let result = match (&a.data, &a.episodes_file) {
        (_, Some(file)) => {
            let episodes = EpisodesFile::load(file)?;
            let base = file.parent().unwrap_or(Path::new("."));
            episodes.evaluate(base, &model, &config)?
        }
        (Some(root), None) => {
            if a.episodes == 0 {
                return Err(Error::InvalidArgument("--episodes must be >= 1".into()));
            }
            let include = a.include.as_deref().map(read_list).transpose()?;
            let dataset = Dataset::load(
                &scan_classes(root, include.as_deref())?,
                model.preprocessor(),
            )?;
            let classes = episode_classes(a.within_alphabet);
            let shape = (a.ways, a.shots, a.queries);
            check_episodes(&dataset, classes, shape)?;
            let features = embed_dataset(&model, &dataset, &config)?;
            let mut rng = Rng::new(a.seed, 0xe7a1);
            let mut episodes = sample_episodes(&dataset, classes, shape, a.episodes, &mut rng);
            if a.unknown_ways > 0 {
                let mut rng = Rng::new(a.seed, 0x0de7);
                add_unknown_queries(&dataset, &mut episodes, a.unknown_ways, a.queries, &mut rng)?;
            }
            evaluate_episodes(&model, &features, &dataset.labels, &episodes, &config)?
        }
        (None, None) => {
            return Err(Error::InvalidArgument(
                "give --data DIR or --episodes-file F".into(),
            ))
        }
    };
    if let Some(path) = &a.plot {
        let title = format!(
            "{} {}-way {}-shot{}: accuracy {:.2}%, ECE {:.3}",
            result.classifier,
            result.ways,
            result.shots,
            if a.raw_probabilities { " (raw)" } else { "" },
            100.0 * result.accuracy,
            result.ece
        );
        plot::reliability_diagram(&result.answers, &title, path)?;
    }
    if a.json {
        let mut v = serde_json::to_value(&result).unwrap_or_default();
        v["seed"] = a.seed.into();
        v["within_alphabet"] = a.within_alphabet.into();
        v["augmented_copies"] = config.augmented_copies.into();
        v["augmentation"] = config.augmentation.to_string().into();
        v["augment_queries"] = config.augment_queries.into();
        if a.per_episode {
            // Six decimals: exact enough to pair, a third of the full digits.
            let rounded: Vec<f64> = result
                .episode_accuracies
                .iter()
                .map(|a| (a * 1e6).round() / 1e6)
                .collect();
            v["episode_accuracies"] = rounded.into();
        }
        outln!("{v}");
    } else {
        outln!(
            "{}-way {}-shot{}, {} episodes, {}: accuracy {:.2}% +- {:.2}% (95% CI), ECE {:.3}",
            result.ways,
            result.shots,
            if a.within_alphabet {
                " within-alphabet"
            } else {
                ""
            },
            result.episodes,
            result.classifier,
            100.0 * result.accuracy,
            100.0 * result.ci95,
            result.ece
        );
        if let (Some(known), Some(top)) =
            (result.open_set_auroc, result.open_set_auroc_top_probability)
        {
            outln!("open-set AUROC: {known:.4} (known-probability), {top:.4} (top probability)");
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Info { model, json } => info(&model.load()?, json),
        Command::Embed { model, out, images } => embed(&model.load()?, &out, &images),
        Command::Classify {
            model,
            support,
            classifier,
            threshold,
            raw_probabilities,
            tta,
            json,
            images,
        } => classify(
            model.load()?,
            ClassifyArgs {
                support,
                classifier,
                threshold,
                raw_probabilities,
                tta,
                json,
                images,
            },
        ),
        Command::Calibrate {
            model,
            data,
            include,
            out,
            episodes_per_shape,
            seed,
        } => {
            let include = include.as_deref().map(read_list).transpose()?;
            let config = CalibrateConfig {
                episodes_per_shape,
                seed,
                ..CalibrateConfig::default()
            };
            let calibration = calibrate_file(
                &model.model,
                &parse_meta(&model.meta)?,
                &data,
                include.as_deref(),
                &out,
                &config,
            )?;
            outln!("{}: {}", out.display(), calibration.to_metadata());
            Ok(())
        }
        Command::Label {
            model,
            support,
            images,
            out,
            report,
            review_below,
            label_next,
            strict,
            list_skipped,
            resume,
            classifier,
            raw_probabilities,
            tta,
        } => label_cmd(
            model.load()?,
            LabelCmd {
                support,
                images,
                out,
                report,
                review_below,
                label_next,
                strict,
                list_skipped,
                resume,
                classifier,
                raw_probabilities,
                tta,
            },
        ),
        Command::Report {
            csv,
            support,
            images,
            out,
            review_below,
        } => report_cmd(&csv, &support, &images, &out, review_below),
        Command::Convert {
            input,
            output,
            meta,
            key,
        } => convert(&input, &output, &meta, key),
        Command::Pretrain(a) => pretrain_cmd(*a),
        Command::Metatrain(a) => metatrain_cmd(*a),
        Command::Evaluate(a) => evaluate_cmd(*a),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`mgecl info --json | head -c 10`): nothing left to say.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
