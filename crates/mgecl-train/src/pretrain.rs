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
use crate::net::{EncoderSpec, TrainNet, HEAD_BIAS, HEAD_WEIGHT, ROTATIONS};
use crate::optim::OptimConfig;
use crate::rng::Rng;
use crate::trainer::{Distillation, HeadLoss, Trainer};
use crate::{
    calibrate_best, check_validation, checkpoint_metadata, momentum_from_checkpoint, pipelined,
    save_progress, Batch, InputSpec, Progress, RunConfig, RunFiles, Snapshot,
};
use mgecl::device::DeviceChoice;
use mgecl::internals::normalize_hwc;
use mgecl::model::Model;
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
    /// Distillation from a teacher (born-again networks, RFS-distill): None trains on the
    /// labels alone.
    #[serde(default)]
    pub teacher: Option<Teacher>,
}

/// A trained network whose softened class logits the student is also fitted to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Teacher {
    /// A checkpoint of a pretraining run on the same classes (its class head included), e.g.
    /// the previous generation's `best.safetensors`.
    pub checkpoint: PathBuf,
    /// Temperature and share of the distillation loss.
    pub distillation: Distillation,
}

/// A loaded teacher: its encoder as the SDK runs it (evaluation mode) and its class head.
struct TeacherNet {
    model: Model,
    /// `(K, D)` row-major and `(K,)`.
    head: (Vec<f32>, Vec<f32>),
}

impl TeacherNet {
    /// Loads `teacher` and checks it fits the run: its head names `classes` classes, and it
    /// normalises its input as the student does (it is given the student's batches).
    fn load(teacher: &Teacher, classes: usize, input: &InputSpec) -> Result<Self> {
        let path = &teacher.checkpoint;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let model = Model::from_bytes(&bytes, &mgecl::LoadOptions::default())?;
        let bad = |m: String| {
            Err(Error::InvalidArgument(format!(
                "teacher {}: {m}",
                path.display()
            )))
        };
        let info = model.info();
        if model.feature_mean().is_some() || info.metadata.contains_key("feature_power") {
            return bad("its head was trained on plain features: give a training checkpoint, not a model with feature_power or feature_mean".into());
        }
        if info.input.mean != input.mean
            || info.input.std != input.std
            || info.input.image_size != input.image_size
            || info.input.in_channels != input.in_channels
        {
            return bad("its input normalisation or size differs from this run's".into());
        }
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::InvalidArgument(format!("teacher {}: {e}", path.display())))?;
        let d = model.feature_dim();
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = st.tensor(name).map_err(|_| {
                Error::InvalidArgument(format!(
                    "teacher {}: no {name} (class head)",
                    path.display()
                ))
            })?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
                return Err(Error::InvalidArgument(format!(
                    "teacher {}: {name} has shape {:?}, this run needs {shape:?}",
                    path.display(),
                    t.shape()
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let head = (
            read(HEAD_WEIGHT, &[classes, d])?,
            read(HEAD_BIAS, &[classes])?,
        );
        Ok(TeacherNet { model, head })
    }

    /// The class logits `(n, K)` row-major of a batch of normalised NCHW images.
    fn logits(&self, input: &[f32]) -> Result<Vec<f32>> {
        let features = self.model.embed_preprocessed(input)?;
        let (w, b) = &self.head;
        let (k, d) = (b.len(), self.model.feature_dim());
        let mut logits = Vec::with_capacity(features.nrows() * k);
        for row in features.rows() {
            for (j, bias) in b.iter().enumerate() {
                let dot: f32 = row
                    .iter()
                    .zip(&w[j * d..(j + 1) * d])
                    .map(|(x, y)| x * y)
                    .sum();
                logits.push(dot + bias);
            }
        }
        Ok(logits)
    }
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
        if let Some(teacher) = &self.teacher {
            let d = teacher.distillation;
            if !(d.temperature > 0.0 && d.temperature.is_finite()) {
                return bad("the distillation temperature must be finite and > 0");
            }
            if !(0.0..=1.0).contains(&d.weight) {
                return bad("the distillation weight must be in [0, 1]");
            }
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
    let teacher = config
        .teacher
        .as_ref()
        .map(|t| TeacherNet::load(t, train.num_classes(), &input_spec))
        .transpose()?;
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
            || saved.teacher.map(|t| t.distillation)
                != config.teacher.as_ref().map(|t| t.distillation)
        {
            return Err(Error::InvalidArgument(
                "--resume: the checkpoint was made with other settings".into(),
            ));
        }
        let net = TrainNet::from_safetensors(&bytes, config.net.arch, true, &device)?;
        let mut sgd = config.optim.sgd();
        sgd.set_buffers(momentum_from_checkpoint(&bytes, &net)?);
        let epoch = training["epoch"].as_u64().unwrap_or(0) as usize;
        let best = files.resumed_best(training["best_val_accuracy"].as_f64());
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
    let head_loss = HeadLoss {
        label_smoothing: config.label_smoothing,
        rotation_weight: config.rotation_weight,
        distillation: config.teacher.as_ref().map(|t| t.distillation),
    };
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
                n: idx.len(),
                labels: idx.iter().map(|&i| train.labels[i]).collect(),
                rotations: match rotate {
                    true => (0..idx.len()).map(turn).collect(),
                    false => Vec::new(),
                },
                // On the loader's thread: the teacher's forward pass overlaps the step.
                teacher_logits: match &teacher {
                    Some(t) => t.logits(&input)?,
                    None => Vec::new(),
                },
                input,
            })
        };
        pipelined(steps, produce, |_, batch| {
            let stats = trainer.step_cross_entropy(&batch, (c, h, w), &head_loss)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{checkpoint_bytes, model_metadata};
    use candle_core::{Device, Tensor};

    /// The teacher's logits come from the SDK's inference engine (BatchNorm folded, running
    /// statistics) and the checkpoint's head: they must be the training network's own
    /// evaluation-mode logits (candle's graph), for a network whose running statistics moved.
    #[test]
    fn teacher_logits_are_the_training_networks_eval_logits() {
        let spec = EncoderSpec {
            arch: mgecl::Architecture::ResNet12,
            widths: vec![8, 12, 16, 20],
            in_channels: 3,
        };
        let net = TrainNet::new(spec.clone(), 5, 3, &Device::Cpu).unwrap();
        let mut rng = Rng::new(9, 0);
        let values: Vec<f32> = (0..6 * 3 * 20 * 20).map(|_| rng.normal() as f32).collect();
        let x = Tensor::from_slice(&values, (6, 3, 20, 20), &Device::Cpu).unwrap();
        for _ in 0..3 {
            net.features(&x, true).unwrap(); // moves the running statistics
        }
        let input = InputSpec {
            image_size: (20, 20),
            in_channels: 3,
            mean: vec![0.5, 0.4, 0.3],
            std: vec![0.25, 0.2, 0.3],
            invert: false,
        };
        let metadata = model_metadata(&spec, &input, &serde_json::json!({}));
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("teacher.safetensors");
        std::fs::write(
            &checkpoint,
            checkpoint_bytes(&net, None, &metadata).unwrap(),
        )
        .unwrap();
        let teacher = Teacher {
            checkpoint,
            distillation: Distillation {
                temperature: 4.0,
                weight: 0.5,
            },
        };
        let got = TeacherNet::load(&teacher, 5, &input)
            .unwrap()
            .logits(&values)
            .unwrap();
        let want: Vec<f32> = net
            .logits(&net.features(&x, false).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert_eq!(got.len(), 6 * 5);
        assert!(err <= 1e-5 * scale.max(1.0), "teacher logits off by {err}");
        // A teacher of other classes, or fed differently normalised images, is refused.
        assert!(TeacherNet::load(&teacher, 4, &input).is_err());
        let other = InputSpec {
            mean: vec![0.0; 3],
            ..input
        };
        assert!(TeacherNet::load(&teacher, 5, &other).is_err());
    }
}
