//! What the training stages share: progress reporting, a run's settings, few-shot
//! validation, its files (best and last checkpoints, log) and saving progress.

use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::model_metadata;
use crate::data::{check_episodes, sample_episodes, Dataset, EpisodeClasses};
use crate::error::{Error, Result};
use crate::evaluate::{embed_dataset, evaluate_episodes, EvalResult};
use crate::rng::Rng;
use crate::trainer::Trainer;
use crate::{augment, calibrate, memory};
use mgecl::model::{Engine, LoadOptions, Model};
use mgecl::task::{ClassifierKind, TaskConfig};
use mgecl::InputSpec;

/// What a training run reports while it works. Training never prints: the command-line tool
/// draws its progress bar and log lines from these calls; [`Silent`] ignores them.
pub trait Progress {
    /// A phase of `total` steps begins (an epoch of batches, or the run's episodes), `done`
    /// of them already done (a resumed run); `label` names it (`epoch 3/30`, `episodes`).
    fn start(&mut self, _label: &str, _done: u64, _total: u64) {}
    /// One step is done; `status` holds the running figures (loss, accuracy, images/s).
    fn step(&mut self, _status: &str) {}
    /// The phase is over.
    fn finish(&mut self) {}
    /// A record also written to `log.jsonl` (an epoch, a validation, the calibration).
    fn record(&mut self, _record: &serde_json::Value) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}

/// What both training stages share: the data and its split, augmentation, validation, the seed
/// and the output folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    /// Image-folder root.
    pub data: std::path::PathBuf,
    /// File listing the top-level folders to train on (None: all).
    pub train_list: Option<std::path::PathBuf>,
    /// File listing the held-out top-level folders to validate on (None: no validation).
    pub val_list: Option<std::path::PathBuf>,
    /// Add every training class rotated by 90, 180 and 270 degrees as three more classes
    /// ([`crate::data::Dataset::with_rotated_classes`]).
    #[serde(default)]
    pub rotate_classes: bool,
    /// Augmentation of training images.
    pub augment: augment::AugmentConfig,
    /// Validate and checkpoint every this many epochs (pretrain) or episodes (metatrain).
    pub val_every: usize,
    /// Validation episodes.
    pub validation: ValidationConfig,
    /// Seed of everything random.
    pub seed: u64,
    /// Output folder: `best.safetensors`, `last.safetensors`, `log.jsonl`.
    pub out_dir: std::path::PathBuf,
    /// Stop after this many epochs or episodes in this invocation (the run resumes later with
    /// `--resume`); None = run to the end.
    #[serde(skip)]
    pub stop_after: Option<usize>,
    /// Which implementation trains ([`Engine::Auto`]: mgecl's CPU kernels on the CPU, candle
    /// on CUDA and Metal). Not part of what a checkpoint must match: both compute the same
    /// steps to within float rounding.
    #[serde(skip)]
    pub engine: Engine,
    /// Most bytes a training step's batch may hold ([`memory::step_values`]); a batch size,
    /// input size or width over it is refused before training starts. Default
    /// [`memory::DEFAULT_MAX_STEP_BYTES`]. Not part of what a checkpoint must match.
    #[serde(skip, default = "default_max_step_bytes")]
    pub max_step_bytes: u64,
}

fn default_max_step_bytes() -> u64 {
    memory::DEFAULT_MAX_STEP_BYTES
}

/// Few-shot validation settings shared by both stages.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValidationConfig {
    /// Episodes per validation.
    pub episodes: usize,
    /// Classes per episode.
    pub ways: usize,
    /// Support images per class.
    pub shots: usize,
    /// Query images per class.
    pub queries: usize,
    /// Classifier fitted per episode.
    pub classifier: ClassifierKind,
    /// Where each episode's classes come from (any, or one alphabet).
    #[serde(default)]
    pub classes: EpisodeClasses,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            episodes: 300,
            ways: 5,
            shots: 1,
            queries: 15,
            classifier: ClassifierKind::Logistic,
            classes: EpisodeClasses::Any,
        }
    }
}

/// Validates the network as the SDK will run it: the checkpoint bytes are loaded as a
/// [`Model`], the validation images embedded, and fixed-seed episodes fitted through the task
/// API.
///
/// # Errors
/// Any model, embedding or task error.
pub fn validate(
    model_bytes: &[u8],
    val: &Dataset,
    config: &ValidationConfig,
    seed: u64,
) -> Result<EvalResult> {
    let model = Arc::new(Model::from_bytes(model_bytes, &LoadOptions::default())?);
    let task = TaskConfig {
        classifier: config.classifier,
        ..TaskConfig::default()
    };
    let features = embed_dataset(&model, val, &task)?;
    let mut rng = Rng::new(seed, 0x7a1);
    let shape = (config.ways, config.shots, config.queries);
    let episodes = sample_episodes(val, config.classes, shape, config.episodes, &mut rng);
    evaluate_episodes(&model, &features, &val.labels, &episodes, &task)
}

/// Checks validation settings against a dataset before any work starts.
///
/// # Errors
/// As [`check_episodes`]; zero episodes.
pub fn check_validation(val: &Dataset, config: &ValidationConfig) -> Result<()> {
    if config.episodes == 0 {
        return Err(Error::InvalidArgument(
            "validation needs at least one episode".into(),
        ));
    }
    check_episodes(
        val,
        config.classes,
        (config.ways, config.shots, config.queries),
    )
}

/// The output files of a training run.
pub struct RunFiles {
    /// `best.safetensors`: the model with the best validation accuracy so far.
    pub best: std::path::PathBuf,
    /// `last.safetensors`: the resume point (with optimiser state).
    pub last: std::path::PathBuf,
    /// `log.jsonl`: one JSON object per record.
    pub log: std::path::PathBuf,
}

impl RunFiles {
    /// Creates the output folder.
    ///
    /// # Errors
    /// [`mgecl::Error::Io`] when it cannot be created.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(RunFiles {
            best: dir.join("best.safetensors"),
            last: dir.join("last.safetensors"),
            log: dir.join("log.jsonl"),
        })
    }

    /// The best validation accuracy a resumed run goes on from: the one its resume point
    /// records while `best.safetensors` is there, none when it is not (a resume point carried
    /// to another machine alone), so that the next validation writes a best model again.
    pub fn resumed_best(&self, recorded: Option<f64>) -> Option<f64> {
        recorded.filter(|_| self.best.exists())
    }
}

/// What [`save_progress`] writes for a network.
pub struct Snapshot<'a> {
    /// The network and its optimiser (saved in the resume point).
    pub trainer: &'a Trainer,
    /// Its inputs.
    pub input: &'a InputSpec,
}

/// One progress point of a run: optionally validate (recording `val_accuracy`/`val_ci95` in
/// `record` and keeping `best.safetensors` when it improves; without validation data the
/// current model is the best), then write the resume point and append `record` to the log.
/// `training(best)` gives the `training` metadata for a best accuracy so far.
///
/// # Errors
/// Any validation or I/O error.
pub fn save_progress(
    files: &RunFiles,
    snap: &Snapshot<'_>,
    training: impl Fn(Option<f64>) -> serde_json::Value,
    validation: Option<(&Dataset, &ValidationConfig, u64)>,
    validate_now: bool,
    best: &mut Option<f64>,
    record: &mut serde_json::Value,
) -> Result<()> {
    let model_bytes = |best: Option<f64>| {
        snap.trainer.checkpoint_bytes(
            false,
            &model_metadata(snap.trainer.spec(), snap.input, &training(best)),
        )
    };
    if validate_now {
        match validation {
            Some((val, config, seed)) => {
                let r = validate(&model_bytes(*best)?, val, config, seed)?;
                record["val_accuracy"] = r.accuracy.into();
                record["val_ci95"] = r.ci95.into();
                if best.is_none_or(|b| r.accuracy > b) {
                    *best = Some(r.accuracy);
                    mgecl::internals::write_file(&files.best, &model_bytes(*best)?)?;
                }
            }
            None => mgecl::internals::write_file(&files.best, &model_bytes(*best)?)?,
        }
    }
    let meta = model_metadata(snap.trainer.spec(), snap.input, &training(*best));
    mgecl::internals::write_file(&files.last, &snap.trainer.checkpoint_bytes(true, &meta)?)?;
    append_log(&files.log, record)
}

/// At the end of a run: fits the confidence calibration of `best.safetensors` on the training
/// data and stores it there ([`calibrate::calibrate_in_place`]), logging what it did. Data too
/// small to calibrate on is logged and skipped (the model then gives raw probabilities).
///
/// # Errors
/// Any error other than data too small for calibration.
pub fn calibrate_best(files: &RunFiles, train: &Dataset) -> Result<serde_json::Value> {
    let record = match calibrate::calibrate_in_place(&files.best, train) {
        Ok(c) => serde_json::json!({"stage": "calibrate", "calibration": c}),
        Err(Error::InvalidArgument(reason)) => {
            serde_json::json!({"stage": "calibrate", "skipped": reason})
        }
        Err(e) => return Err(e),
    };
    append_log(&files.log, &record)?;
    Ok(record)
}

/// Appends one JSON line to `path`.
///
/// # Errors
/// [`mgecl::Error::Io`].
pub fn append_log(path: &Path, value: &serde_json::Value) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{value}").map_err(|e| Error::io(path, e))
}
