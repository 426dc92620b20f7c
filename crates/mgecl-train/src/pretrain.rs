//! Stage 1: cross-entropy pretraining of an encoder plus linear head on the base classes,
//! SGD with momentum and weight decay, step-decayed learning rate, optional label smoothing,
//! few-shot validation on held-out classes every few epochs, best checkpoint kept, resumable.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::augment::{augment, rotate_clockwise};
use crate::data::{read_list, scan_classes, Dataset};
use crate::error::{Error, Result};
use crate::memory;
use crate::net::{EncoderSpec, TrainNet, ROTATIONS};
use crate::optim::OptimConfig;
use crate::rng::Rng;
use crate::trainer::Trainer;
use crate::{
    calibrate_best, check_validation, checkpoint_metadata, momentum_from_checkpoint, pipelined,
    save_progress, Batch, InputSpec, Progress, RunConfig, RunFiles, Snapshot,
};
use mgecl::device::DeviceChoice;
use mgecl::preprocess::normalize_hwc;
use mgecl::preprocess::Preprocessor;

/// Per-channel normalisation mean and standard deviation.
pub type MeanStd = (Vec<f32>, Vec<f32>);

/// Everything a pretraining run depends on; saved in its checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Data, validation, augmentation, seed and outputs.
    pub run: RunConfig,
    /// Network shape (`in_channels` also decides grey or RGB input).
    pub net: EncoderSpec,
    /// Input side in pixels.
    pub image_size: usize,
    /// Invert pixels (bright strokes on dark).
    pub invert: bool,
    /// Normalisation; computed from the training images when None.
    pub mean_std: Option<MeanStd>,
    /// Epochs.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Optimiser and learning-rate schedule (milestones in epochs).
    pub optim: OptimConfig,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// Weight of the rotation self-supervision loss (0: none). When above 0, every fourth
    /// image of a batch from the second on is turned by 90 degrees, then 180, then 270 (after
    /// augmentation); the class head still names its class and a second linear head
    /// ([`crate::net::ROTATION_HEAD_WEIGHT`]) names the turn, its cross-entropy added to the
    /// loss times this weight (EASY's recipe: no extra images, so no extra cost).
    #[serde(default)]
    pub rotation_weight: f64,
}

impl PretrainConfig {
    /// Checks every setting before any work starts.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.epochs == 0 || self.batch_size == 0 {
            return bad("epochs and batch_size must be >= 1");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing must be in [0, 1)");
        }
        if !(self.rotation_weight >= 0.0 && self.rotation_weight.is_finite()) {
            return bad("rotation_weight must be finite and >= 0");
        }
        if self.image_size < 8 || self.image_size > 1024 {
            return bad("image_size must be in 8..=1024");
        }
        if self.net.in_channels != 1 && self.net.in_channels != 3 {
            return bad("in_channels must be 1 or 3");
        }
        if self.run.val_every == 0 {
            return bad("val_every must be >= 1");
        }
        self.optim.validate()?;
        self.run.augment.validate()
    }
}

/// Loads the split's classes with a provisional preprocessing (size, channels, invert).
fn load_split(config: &PretrainConfig, list: &Option<PathBuf>) -> Result<Dataset> {
    let include = list.as_deref().map(read_list).transpose()?;
    let classes = scan_classes(&config.run.data, include.as_deref())?;
    let c = config.net.in_channels;
    // Normalisation comes later (from these very images): identity for now.
    let input = InputSpec {
        image_size: (config.image_size, config.image_size),
        in_channels: c,
        mean: vec![0.0; c],
        std: vec![1.0; c],
        invert: config.invert,
    };
    Dataset::load(&classes, &Preprocessor::new(&input)?)
}

/// Summary of a finished (or stopped) run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Epochs (or episodes) completed in total.
    pub completed: usize,
    /// Best validation accuracy (None without validation).
    pub best_val_accuracy: Option<f64>,
    /// Training images per second over this invocation.
    pub images_per_second: f64,
}

/// Runs (or resumes, when `resume` and `out_dir/last.safetensors` exists) pretraining.
///
/// # Errors
/// [`Error::InvalidArgument`] for bad settings or data (checked before training starts);
/// [`mgecl::Error::Io`] for unreadable data or unwritable outputs; backend errors.
pub fn pretrain(
    config: &PretrainConfig,
    device: DeviceChoice,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<RunSummary> {
    config.validate()?;
    let image_size = (config.image_size, config.image_size);
    let batch = config.batch_size;
    memory::check_step(
        &config.net,
        image_size,
        batch,
        config.run.max_step_bytes,
        "a step",
    )?;
    let mut train = load_split(config, &config.run.train_list)?;
    if config.run.rotate_classes {
        train = train.with_rotated_classes()?;
    }
    if train.num_classes() < 2 {
        return Err(Error::InvalidArgument(
            "pretraining needs at least 2 classes".into(),
        ));
    }
    let val = match &config.run.val_list {
        Some(_) => Some(load_split(config, &config.run.val_list)?),
        None => None,
    };
    if let Some(v) = &val {
        check_validation(v, &config.run.validation)?;
    }
    let (mean, std) = config
        .mean_std
        .clone()
        .unwrap_or_else(|| train.channel_stats());
    let input_spec = InputSpec {
        image_size: (config.image_size, config.image_size),
        in_channels: config.net.in_channels,
        mean,
        std,
        invert: config.invert,
    };
    let device = mgecl::candle_interop::open_device(device)?;
    let files = RunFiles::create(&config.run.out_dir)?;

    let (net, sgd, start_epoch, mut best) = if resume && files.last.exists() {
        let bytes = std::fs::read(&files.last).map_err(|e| Error::io(&files.last, e))?;
        let meta = checkpoint_metadata(&bytes)?;
        let training: serde_json::Value =
            serde_json::from_str(meta.get("training").map(String::as_str).unwrap_or("{}"))
                .map_err(|e| {
                    Error::InvalidArgument(format!("checkpoint training metadata: {e}"))
                })?;
        let saved: PretrainConfig = serde_json::from_value(training["config"].clone())
            .map_err(|e| Error::InvalidArgument(format!("checkpoint config: {e}")))?;
        if saved.run.seed != config.run.seed
            || saved.net != config.net
            || saved.epochs != config.epochs
            || saved.rotation_weight != config.rotation_weight
        {
            return Err(Error::InvalidArgument(
                "--resume: the checkpoint was made with other settings".into(),
            ));
        }
        let net = TrainNet::from_safetensors(&bytes, config.net.arch, true, &device)?;
        let mut sgd = config.optim.sgd();
        sgd.set_buffers(momentum_from_checkpoint(&bytes, &net)?);
        let epoch = training["epoch"].as_u64().unwrap_or(0) as usize;
        let best = training["best_val_accuracy"].as_f64();
        (net, sgd, epoch, best)
    } else {
        let mut net = TrainNet::new(
            config.net.clone(),
            train.num_classes(),
            config.run.seed,
            &device,
        )?;
        if config.rotation_weight > 0.0 {
            net.add_rotation_head(config.run.seed)?;
        }
        (net, config.optim.sgd(), 0, None)
    };
    let mut trainer = Trainer::new(net, sgd, config.run.engine)?;

    let (h, w, c) = (config.image_size, config.image_size, config.net.in_channels);
    let steps = train.len().div_ceil(config.batch_size);
    let end_epoch = config
        .run
        .stop_after
        .map_or(config.epochs, |n| (start_epoch + n).min(config.epochs));
    let started = Instant::now();
    let mut images_seen = 0usize;
    for epoch in start_epoch..end_epoch {
        trainer.set_lr(config.optim.lr_at(epoch));
        let mut order: Vec<usize> = (0..train.len()).collect();
        Rng::new(config.run.seed, 1000 + epoch as u64).shuffle(&mut order);
        progress.start(
            &format!("epoch {}/{}", epoch + 1, config.epochs),
            0,
            steps as u64,
        );
        let mut steps_done = 0usize;
        let epoch_start = Instant::now();
        let (mut loss_sum, mut acc_sum) = (0.0, 0.0);
        let produce = |step: usize| -> Result<Batch> {
            let idx =
                &order[step * config.batch_size..((step + 1) * config.batch_size).min(order.len())];
            let mut rng = Rng::new(config.run.seed, ((epoch as u64) << 32) | step as u64);
            let mut input = Vec::with_capacity(idx.len() * c * h * w);
            let rotate = config.rotation_weight > 0.0;
            // Quarters of the batch, as EASY: the first unturned, then 90, 180, 270 degrees.
            let turn = |j: usize| (j * ROTATIONS / idx.len()).min(ROTATIONS - 1);
            for (j, &i) in idx.iter().enumerate() {
                let mut img = train.pixels[i].clone();
                augment(&mut img, (h, w, c), &config.run.augment, &mut rng);
                if rotate {
                    img = rotate_clockwise(&img, (h, w, c), turn(j));
                }
                normalize_hwc(
                    &img,
                    (h, w, c),
                    &input_spec.mean,
                    &input_spec.std,
                    &mut input,
                );
            }
            Ok(Batch {
                input,
                n: idx.len(),
                labels: idx.iter().map(|&i| train.labels[i]).collect(),
                rotations: match rotate {
                    true => (0..idx.len()).map(turn).collect(),
                    false => Vec::new(),
                },
            })
        };
        pipelined(steps, produce, |_, batch| {
            let stats = trainer.step_cross_entropy(
                &batch,
                (c, h, w),
                config.label_smoothing,
                config.rotation_weight,
            )?;
            if !stats.loss.is_finite() {
                return Err(Error::Failed(format!(
                    "training diverged (loss {}) at epoch {}",
                    stats.loss,
                    epoch + 1
                )));
            }
            loss_sum += stats.loss * batch.n as f64;
            acc_sum += stats.correct as f64;
            images_seen += batch.n;
            steps_done += 1;
            let seen = (steps_done * config.batch_size) as f64;
            progress.step(&format!(
                "loss {:.3} acc {:.3} {:.0} img/s",
                loss_sum / seen,
                acc_sum / seen,
                seen / epoch_start.elapsed().as_secs_f64()
            ));
            Ok(())
        })?;
        progress.finish();
        let n = train.len() as f64;
        let mut record = serde_json::json!({
            "stage": "pretrain", "epoch": epoch + 1, "lr": trainer.lr(), "engine": trainer.engine_name(), "loss": loss_sum / n,
            "train_accuracy": acc_sum / n, "images_per_second": n / epoch_start.elapsed().as_secs_f64(),
            "seconds": epoch_start.elapsed().as_secs_f64(),
        });
        let validate_now = (epoch + 1) % config.run.val_every == 0 || epoch + 1 == end_epoch;
        let training = |best: Option<f64>| {
            serde_json::json!({"stage": "pretrain", "config": config, "epoch": epoch + 1,
                "best_val_accuracy": best, "train_classes": train.num_classes(), "train_images": train.len()})
        };
        let snap = Snapshot {
            trainer: &trainer,
            input: &input_spec,
        };
        let validation = val
            .as_ref()
            .map(|v| (v, &config.run.validation, config.run.seed));
        save_progress(
            &files,
            &snap,
            training,
            validation,
            validate_now,
            &mut best,
            &mut record,
        )?;
        progress.record(&record);
    }
    if end_epoch == config.epochs && end_epoch > start_epoch {
        progress.record(&calibrate_best(&files, &train)?);
    }
    Ok(RunSummary {
        completed: end_epoch,
        best_val_accuracy: best,
        images_per_second: images_seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
    })
}
