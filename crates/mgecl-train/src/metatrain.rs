//! Stage 2, MGECL meta-training: from a pretrained encoder, N-way K-shot Q-query episodes on
//! the base classes, no head. Loss = class-granularity hinge (queries vs prototypes) +
//! lambda * instance-granularity contrastive loss (each support image and its A augmented
//! views are positives of each other; every other image and view is a negative).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::augment::augment;
use crate::data::{
    check_episodes, read_list, sample_episodes, scan_classes, Dataset, EpisodeClasses,
};
use crate::error::{Error, Result};
use crate::loss::{class_hinge, instance_contrastive};
use crate::memory;
use crate::net::{EncoderSpec, TrainNet};
use crate::optim::OptimConfig;
use crate::pretrain::RunSummary;
use crate::rng::Rng;
use crate::trainer::Trainer;
use crate::{
    calibrate_best, check_validation, checkpoint_metadata, momentum_from_checkpoint, pipelined,
    save_progress, Batch, Progress, RunConfig, RunFiles, Snapshot,
};
use mgecl::device::DeviceChoice;
use mgecl::internals::normalize_hwc;
use mgecl::model::{LoadOptions, Model};

/// Everything a meta-training run depends on; saved in its checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetatrainConfig {
    /// Data, validation, augmentation, seed and outputs.
    pub run: RunConfig,
    /// The pretrained model to start from (a pretraining checkpoint or any model file).
    pub init: PathBuf,
    /// Training episodes.
    pub episodes: usize,
    /// Classes per episode.
    pub ways: usize,
    /// Support images per class.
    pub shots: usize,
    /// Query images per class.
    pub queries: usize,
    /// Where each episode's classes come from: any training classes, or one alphabet (harder
    /// negatives: the characters a within-alphabet reader must tell apart).
    #[serde(default)]
    pub classes: EpisodeClasses,
    /// Augmented views per support image for the instance loss (A).
    pub views: usize,
    /// Hinge margin of the class loss.
    pub margin: f64,
    /// Temperature of the instance loss.
    pub tau: f64,
    /// Weight of the instance loss.
    pub lambda: f64,
    /// Use the class-granularity loss.
    pub class_loss: bool,
    /// Use the instance-granularity loss.
    pub instance_loss: bool,
    /// Optimiser and learning-rate schedule (milestones in episodes).
    pub optim: OptimConfig,
}

impl MetatrainConfig {
    /// Checks every setting before any work starts.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.episodes == 0 || self.run.val_every == 0 {
            return bad("episodes and val_every must be >= 1");
        }
        if self.ways < 2 || self.shots == 0 || self.queries == 0 {
            return bad("episodes need >= 2 ways, >= 1 shot and >= 1 query");
        }
        if !self.class_loss && !self.instance_loss {
            return bad("at least one of the class and instance losses must be on");
        }
        if self.instance_loss && self.views == 0 && self.shots < 2 {
            return bad("the instance loss needs views >= 1 (or several shots) to have positives");
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.tau) || self.margin < 0.0 || self.lambda < 0.0 {
            return bad("tau must be > 0, margin and lambda >= 0");
        }
        self.optim.validate()?;
        self.run.augment.validate()
    }
}

impl MetatrainConfig {
    /// Augmented views embedded per support image: `views` with the instance loss, else none.
    fn views_per_support(&self) -> usize {
        if self.instance_loss {
            self.views
        } else {
            0
        }
    }

    /// Images of one episode's batch: the support images and their views, then the queries.
    pub fn images_per_episode(&self) -> usize {
        let support = self.ways * self.shots;
        support * (1 + self.views_per_support()) + self.ways * self.queries
    }
}

/// Runs (or resumes) meta-training.
///
/// # Errors
/// [`Error::InvalidArgument`] for bad settings or data (before training starts);
/// [`mgecl::Error::InvalidModel`] for an unusable `init`; [`mgecl::Error::Io`]; backend errors.
pub fn metatrain(
    config: &MetatrainConfig,
    device: DeviceChoice,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<RunSummary> {
    config.validate()?;
    let init_bytes = std::fs::read(&config.init).map_err(|e| Error::io(&config.init, e))?;
    let init_model = Model::from_bytes(&init_bytes, &LoadOptions::default())?;
    let info = init_model.info().clone();
    let arch = info.arch;
    let spec = EncoderSpec {
        arch,
        widths: info.widths.clone(),
        in_channels: info.input.in_channels,
    };
    let input_spec = info.input.clone();
    memory::check_step(
        &spec,
        input_spec.image_size,
        config.images_per_episode(),
        config.run.max_step_bytes,
        "an episode",
    )?;
    let load = |list: &Option<PathBuf>| -> Result<Dataset> {
        let include = list.as_deref().map(read_list).transpose()?;
        Dataset::load(
            &scan_classes(&config.run.data, include.as_deref())?,
            init_model.preprocessor(),
        )
    };
    let mut train = load(&config.run.train_list)?;
    if config.run.rotate_classes {
        train = train.with_rotated_classes()?;
    }
    let shape = (config.ways, config.shots, config.queries);
    check_episodes(&train, config.classes, shape)?;
    let val = config
        .run
        .val_list
        .as_ref()
        .map(|_| load(&config.run.val_list))
        .transpose()?;
    if let Some(v) = &val {
        check_validation(v, &config.run.validation)?;
    }
    let device = mgecl::candle_interop::open_device(device)?;
    let files = RunFiles::create(&config.run.out_dir)?;

    let mut sgd = config.optim.sgd();
    let (net, start, mut best) = if resume && files.last.exists() {
        let bytes = std::fs::read(&files.last).map_err(|e| Error::io(&files.last, e))?;
        let training: serde_json::Value = serde_json::from_str(
            checkpoint_metadata(&bytes)?
                .get("training")
                .map(String::as_str)
                .unwrap_or("{}"),
        )
        .map_err(|e| Error::InvalidArgument(format!("checkpoint training metadata: {e}")))?;
        let net = TrainNet::from_safetensors(&bytes, arch, false, &device)?;
        sgd.set_buffers(momentum_from_checkpoint(&bytes, &net)?);
        (
            net,
            training["episode"].as_u64().unwrap_or(0) as usize,
            files.resumed_best(training["best_val_accuracy"].as_f64()),
        )
    } else {
        (
            TrainNet::from_safetensors(&init_bytes, arch, false, &device)?,
            0,
            None,
        )
    };
    let mut trainer = Trainer::new(net, sgd, config.run.engine)?;

    let (h, w, c) = (
        input_spec.image_size.0,
        input_spec.image_size.1,
        spec.in_channels,
    );
    let end = config
        .run
        .stop_after
        .map_or(config.episodes, |n| (start + n).min(config.episodes));
    progress.start("episodes", start as u64, config.episodes as u64);
    let started = Instant::now();
    let mut images = 0usize;
    let (mut class_sum, mut inst_sum, mut count) = (0.0, 0.0, 0usize);
    let n_support = config.ways * config.shots;
    let n_query = config.ways * config.queries;
    // Layout of one episode batch: support, then A views of each support image, then queries.
    let produce = |i: usize| -> Result<Batch> {
        let episode_index = start + i;
        let mut rng = Rng::new(config.run.seed, 0x3e7a_0000_0000 | episode_index as u64);
        let ep = sample_episodes(&train, config.classes, shape, 1, &mut rng)
            .pop()
            .expect("one episode");
        let mut input = Vec::new();
        let mut push = |idx: usize, rng: &mut Rng| {
            let mut img = train.pixels[idx].clone();
            augment(&mut img, (h, w, c), &config.run.augment, rng);
            normalize_hwc(
                &img,
                (h, w, c),
                &input_spec.mean,
                &input_spec.std,
                &mut input,
            );
        };
        for &s in &ep.support {
            push(s, &mut rng);
        }
        let views = config.views_per_support();
        for &s in &ep.support {
            for _ in 0..views {
                push(s, &mut rng);
            }
        }
        for &q in &ep.query {
            push(q, &mut rng);
        }
        let n = n_support * (1 + views) + n_query;
        Ok(Batch {
            input,
            n,
            labels: vec![views],
            rotations: Vec::new(),
            teacher_logits: Vec::new(),
        })
    };
    pipelined(end - start, produce, |i, batch| {
        let episode = start + i;
        trainer.set_lr(config.optim.lr_at(episode));
        let views = batch.labels[0];
        let query_labels: Vec<usize> = (0..n_query).map(|q| q / config.queries).collect();
        let (mut class_loss, mut inst_loss) = (0.0, 0.0);
        trainer.step_on_features(&batch, (c, h, w), |features| {
            let support = features.narrow(0, 0, n_support)?;
            let query = features.narrow(0, n_support * (1 + views), n_query)?;
            let mut loss = Tensor::zeros((), features.dtype(), features.device())?;
            if config.class_loss {
                let l = class_hinge(&support, config.ways, &query, &query_labels, config.margin)?;
                class_loss = f64::from(l.to_scalar::<f32>()?);
                loss = (loss + l)?;
            }
            if config.instance_loss {
                // Group ids: support image s and its views share id s; queries get unique ids.
                let mut groups: Vec<usize> = (0..n_support).collect();
                for s in 0..n_support {
                    groups.extend(std::iter::repeat_n(s, views));
                }
                groups.extend((0..n_query).map(|q| n_support + q));
                let l = instance_contrastive(features, &groups, config.tau)?;
                inst_loss = f64::from(l.to_scalar::<f32>()?);
                loss = (loss + (l * config.lambda)?)?;
            }
            Ok(loss)
        })?;
        class_sum += class_loss;
        inst_sum += inst_loss;
        images += batch.n;
        count += 1;
        progress.step(&format!(
            "class {:.4} inst {:.4} {:.0} img/s",
            class_sum / count as f64,
            inst_sum / count as f64,
            images as f64 / started.elapsed().as_secs_f64()
        ));
        let done = episode + 1;
        if done % config.run.val_every == 0 || done == end {
            let training = |best: Option<f64>| {
                serde_json::json!({"stage": "metatrain", "config": config, "episode": done,
                    "best_val_accuracy": best, "init_training": info.metadata.get("training")})
            };
            let mut record = serde_json::json!({"stage": "metatrain", "episode": done, "lr": trainer.lr(), "engine": trainer.engine_name(),
                "class_loss": class_sum / count as f64, "instance_loss": inst_sum / count as f64,
                "images_per_second": images as f64 / started.elapsed().as_secs_f64()});
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
                true,
                &mut best,
                &mut record,
            )?;
            (class_sum, inst_sum, count) = (0.0, 0.0, 0);
            progress.record(&record);
        }
        Ok(())
    })?;
    progress.finish();
    if end == config.episodes && end > start {
        progress.record(&calibrate_best(&files, &train)?);
    }
    Ok(RunSummary {
        completed: end,
        best_val_accuracy: best,
        images_per_second: images as f64 / started.elapsed().as_secs_f64().max(1e-9),
    })
}
