//! Fitting a model's confidence calibration ([`Calibration`]) on episodes of classes it was
//! trained on, and writing it into a model file. Training calls this at the end of a run;
//! `mgecl calibrate` does it for a model trained elsewhere.
//!
//! Episodes span the task shapes an app meets: ways from 2 to 40 and shots from 1 to 20 (as
//! far as the data allows), each with queries of its own classes and of `unknown_ways` classes
//! outside it. Each episode is fitted through the SDK's own [`Task`] with both classifiers;
//! their raw scores ([`Task::scores`]) are what the temperatures are fitted to, and the best
//! cosine similarities of known and unknown queries what the open-set score is fitted to.
//! The tasks use the model's recommended settings ([`Model::task_defaults`]): with test-time
//! augmentation the calibration describes augmented tasks, as apps make them by default, and
//! the same episodes fitted without augmentation give [`Calibration::unaugmented`], for apps
//! that turn it off.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use ndarray::Array2;
use rayon::prelude::*;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::evaluate::{embed_dataset, example_rows, query_rows};
use crate::rng::Rng;
use mgecl::classifier::calibration::{
    fit_open_set, fit_scale, Calibration, EpisodeScores, OpenSetSample, METADATA_KEY,
};
use mgecl::model::Model;
use mgecl::task::{ClassifierKind, Scores, Task, TaskConfig};
use mgecl::ModelProblem;

/// How calibration episodes are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrateConfig {
    /// Episodes per (ways, shots) shape.
    pub episodes_per_shape: usize,
    /// Queries per class.
    pub queries: usize,
    /// Classes outside each episode whose images are also queried (the unknowns).
    pub unknown_ways: usize,
    /// Seed of the episodes.
    pub seed: u64,
}

impl Default for CalibrateConfig {
    fn default() -> Self {
        CalibrateConfig {
            episodes_per_shape: 40,
            queries: 5,
            unknown_ways: 5,
            seed: 0,
        }
    }
}

const WAYS: [usize; 5] = [2, 5, 10, 20, 40];
const SHOTS: [usize; 5] = [1, 2, 5, 10, 20];

/// Fits a calibration for `model` on `data` (classes the model was trained on, or any
/// labelled data from its domain).
///
/// # Errors
/// [`Error::InvalidArgument`] when the data has fewer than `2 + unknown_ways` classes with
/// `1 + queries` images each; any embedding or fitting error.
pub fn fit_calibration(
    model: &Arc<Model>,
    data: &Dataset,
    config: &CalibrateConfig,
) -> Result<Calibration> {
    let min_images = data.by_class.iter().map(Vec::len).min().unwrap_or(0);
    let classes = data.num_classes();
    if classes < 2 + config.unknown_ways || min_images < 1 + config.queries {
        return Err(Error::InvalidArgument(format!(
            "calibration needs {} classes with {} images each; the data has {classes} classes, \
             the smallest with {min_images} images",
            2 + config.unknown_ways,
            1 + config.queries
        )));
    }
    // Fitted for the way the model is meant to be used: its recommended test-time
    // augmentation (support copies, merged queries) changes the scores and similarities.
    let settings = model.task_defaults().clone();
    let mut calibration = fit_with_settings(model, data, config, &settings)?;
    if settings.augmented_copies > 0 {
        let plain = TaskConfig {
            augmented_copies: 0,
            augment_queries: false,
            ..settings
        };
        calibration.unaugmented = Some(Box::new(fit_with_settings(model, data, config, &plain)?));
    }
    Ok(calibration)
}

/// The calibration of tasks made with `settings`, on the episodes `config` draws (the same
/// episodes whatever the settings).
fn fit_with_settings(
    model: &Arc<Model>,
    data: &Dataset,
    config: &CalibrateConfig,
    settings: &TaskConfig,
) -> Result<Calibration> {
    let (classes, min_images) = (
        data.num_classes(),
        data.by_class.iter().map(Vec::len).min().unwrap_or(0),
    );
    let features = embed_dataset(model, data, settings)?;
    // The episodes are drawn in order from one generator, then fitted in parallel and
    // collected in order: the same calibration whatever the thread count.
    let mut rng = Rng::new(config.seed, 0xca1);
    let mut shapes = Vec::new();
    let mut episodes = Vec::new();
    for &ways in WAYS.iter().filter(|&&w| w + config.unknown_ways <= classes) {
        for &shots in SHOTS.iter().filter(|&&s| s + config.queries <= min_images) {
            shapes.push((ways, shots));
            for _ in 0..config.episodes_per_shape {
                episodes.push(draw_episode(data, (ways, shots), config, &mut rng));
            }
        }
    }
    let fitted: Vec<FittedEpisode> = episodes
        .par_iter()
        .map(|episode| fit_episode(model, &features, episode, settings))
        .collect::<Result<_>>()?;
    let (mut logistic, mut prototype, mut open_set) = (Vec::new(), Vec::new(), Vec::new());
    for episode in fitted {
        logistic.push(episode.logistic);
        prototype.push(episode.prototype);
        open_set.extend(episode.open_set);
    }
    Ok(Calibration {
        version: 1,
        logistic: fit_scale(&logistic)?,
        prototype: fit_scale(&prototype)?,
        open_set: fit_open_set(&open_set)?,
        fitted_on: serde_json::json!({
            "classes": classes,
            "images": data.len(),
            "episodes": logistic.len(),
            "shapes": shapes,
            "queries_per_class": config.queries,
            "unknown_ways": config.unknown_ways,
            "seed": config.seed,
            "augmented_copies": settings.augmented_copies,
            "augmentation": settings.augmentation.to_string(),
            "augment_queries": settings.augment_queries,
        }),
        unaugmented: None,
    })
}

/// One calibration episode: dataset rows of its support (with the class index within the
/// episode), of its known queries, and of the unknown queries from classes outside it.
struct Episode {
    ways: usize,
    shots: usize,
    support: Vec<(usize, usize)>,
    known: Vec<(usize, usize)>,
    unknown: Vec<usize>,
}

/// What one episode contributes to the fits.
struct FittedEpisode {
    logistic: EpisodeScores,
    prototype: EpisodeScores,
    open_set: Vec<OpenSetSample>,
}

/// Draws an episode of `ways` classes and `shots` examples each, plus `config.unknown_ways`
/// classes outside it, from `rng`.
fn draw_episode(
    data: &Dataset,
    (ways, shots): (usize, usize),
    config: &CalibrateConfig,
    rng: &mut Rng,
) -> Episode {
    let picked = rng.choose(data.num_classes(), ways + config.unknown_ways);
    let (mut support, mut known, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for (k, &c) in picked.iter().enumerate() {
        let imgs = &data.by_class[c];
        let chosen = rng.choose(imgs.len(), shots + config.queries);
        if k < ways {
            support.extend(chosen[..shots].iter().map(|&i| (k, imgs[i])));
            known.extend(chosen[shots..].iter().map(|&i| (k, imgs[i])));
        } else {
            unknown.extend(chosen[..config.queries].iter().map(|&i| imgs[i]));
        }
    }
    Episode {
        ways,
        shots,
        support,
        known,
        unknown,
    }
}

/// Fits `episode` with both classifiers under `settings`: their raw scores on the known
/// queries, and the prototype task's best cosine similarities of known and unknown queries.
fn fit_episode(
    model: &Arc<Model>,
    features: &Array2<f32>,
    episode: &Episode,
    settings: &TaskConfig,
) -> Result<FittedEpisode> {
    let Episode { ways, shots, .. } = *episode;
    let queries: Vec<usize> = episode.known.iter().map(|&(_, r)| r).collect();
    let labels: Vec<usize> = episode.known.iter().map(|&(k, _)| k).collect();
    let query_features = query_rows(features, &queries, settings)?;
    let scores_of = |kind| -> Result<(Task, Scores)> {
        let config = TaskConfig {
            classifier: kind,
            ..settings.clone()
        };
        let task = episode_task(model, features, ways, &episode.support, config)?;
        let scores = task.scores(query_features.view())?;
        Ok((task, scores))
    };
    let episode_scores = |scores: &Scores| EpisodeScores {
        ways,
        shots,
        scores: scores.classifier.iter().copied().collect(),
        labels: labels.clone(),
    };
    let (_, logistic) = scores_of(ClassifierKind::Logistic)?;
    let (task, prototype) = scores_of(ClassifierKind::Prototype)?;
    let outside = task.scores(query_rows(features, &episode.unknown, settings)?.view())?;
    let open_set = prototype
        .best_cosine
        .iter()
        .map(|&c| (c, true))
        .chain(outside.best_cosine.iter().map(|&c| (c, false)))
        .map(|(max_cos, known)| OpenSetSample {
            max_cos,
            ways,
            shots,
            known,
        })
        .collect();
    Ok(FittedEpisode {
        logistic: episode_scores(&logistic),
        prototype: episode_scores(&prototype),
        open_set,
    })
}

/// A task of `ways` classes with `config` fitted on `support` (class, image), each image's
/// rows as [`embed_dataset`] gives them.
fn episode_task(
    model: &Arc<Model>,
    features: &Array2<f32>,
    ways: usize,
    support: &[(usize, usize)],
    config: TaskConfig,
) -> Result<Task> {
    let copies = config.augmented_copies;
    let mut task = Task::new(model.clone(), config)?;
    let names: Vec<String> = (0..ways).map(|k| k.to_string()).collect();
    for name in &names {
        task.add_class(name)?;
    }
    for &(k, row) in support {
        task.add_example_feature(&names[k], &example_rows(features, row, copies))?;
    }
    task.fit()?;
    Ok(task)
}

/// The bytes of model file `bytes` with `calibration` stored in its metadata (replacing any
/// earlier one); tensors are copied unchanged.
///
/// # Errors
/// [`mgecl::Error::InvalidModel`] for bytes that are not a safetensors file.
pub fn with_calibration(bytes: &[u8], calibration: &Calibration) -> Result<Vec<u8>> {
    let metadata: BTreeMap<String, String> =
        super::checkpoint_metadata(bytes)?.into_iter().collect();
    with_metadata(bytes, metadata, calibration)
}

/// The bytes of model file `bytes` with `metadata` and `calibration` as its metadata; tensors
/// are copied unchanged.
fn with_metadata(
    bytes: &[u8],
    mut metadata: BTreeMap<String, String>,
    calibration: &Calibration,
) -> Result<Vec<u8>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::model(ModelProblem::NotSafetensors, format!("model file: {e}")))?;
    metadata.insert(METADATA_KEY.to_string(), calibration.to_metadata());
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        st.tensors().into_iter().collect();
    safetensors::serialize(tensors, Some(metadata))
        .map_err(|e| Error::Internal(format!("model file: {e}")))
}

/// Fits a calibration for the model file `model_path`, loaded with `metadata_overrides`, on
/// the classes under `data` (optionally only the top-level folders `include`) and writes the
/// model with it to `out` (atomically; `out` may be `model_path`), the overrides written into
/// its metadata: the calibration holds for the model as loaded. With `centre` the model's
/// [`feature_centre`] on that data is written too (as [`FEATURE_MEAN_KEY`]) and the
/// calibration fitted on the centred features. Returns the calibration.
///
/// # Errors
/// As [`Model::load`], [`fit_calibration`] and the data loading; [`mgecl::Error::Io`] when `out`
/// cannot be written.
pub fn calibrate_file(
    model_path: &Path,
    metadata_overrides: &BTreeMap<String, String>,
    data: &Path,
    include: Option<&[String]>,
    out: &Path,
    config: &CalibrateConfig,
    centre: bool,
) -> Result<Calibration> {
    let (mut bytes, mut model) = load_model(model_path, metadata_overrides)?;
    let classes = super::data::scan_classes(data, include)?;
    let dataset = Dataset::load(&classes, model.preprocessor())?;
    if centre {
        let mut overrides = metadata_overrides.clone();
        let centre = serde_json::to_string(&feature_centre(&model, &dataset)?)
            .map_err(|e| Error::Internal(format!("feature centre: {e}")))?;
        overrides.insert(FEATURE_MEAN_KEY.to_string(), centre);
        (bytes, model) = load_model(model_path, &overrides)?;
    }
    write_calibrated(&bytes, &model, &dataset, out, config)
}

/// Metadata key of the centre a model subtracts from its features
/// ([`mgecl::model::Metadata::feature_mean`]).
pub const FEATURE_MEAN_KEY: &str = "feature_mean";

/// The centre [`FEATURE_MEAN_KEY`] should hold for `model` on `data` (its training
/// classes): the mean over classes of each class's mean feature, so that every class weighs
/// the same however many images it has. A centre the model already subtracts is added back:
/// the result is the centre of the features before any.
///
/// # Errors
/// [`Error::InvalidArgument`] for data without images; any embedding error.
pub fn feature_centre(model: &Model, data: &Dataset) -> Result<Vec<f32>> {
    let classes: Vec<&Vec<usize>> = data.by_class.iter().filter(|c| !c.is_empty()).collect();
    if classes.is_empty() {
        return Err(Error::InvalidArgument(
            "a feature centre needs images".into(),
        ));
    }
    let plain = TaskConfig {
        augmented_copies: 0,
        ..TaskConfig::default()
    };
    let features = embed_dataset(model, data, &plain)?;
    let d = model.feature_dim();
    let mut centre = vec![0f64; d];
    for members in &classes {
        for &i in members.iter() {
            for (c, &v) in centre.iter_mut().zip(features.row(i)) {
                *c += f64::from(v) / (members.len() * classes.len()) as f64;
            }
        }
    }
    if let Some(applied) = model.feature_mean() {
        for (c, &m) in centre.iter_mut().zip(applied) {
            *c += f64::from(m);
        }
    }
    Ok(centre.into_iter().map(|v| v as f32).collect())
}

/// Calibrates a training run's `best.safetensors` in place on the training data (what both
/// training stages do when they finish).
///
/// # Errors
/// As [`fit_calibration`]; [`mgecl::Error::Io`] for the file.
pub fn calibrate_in_place(path: &Path, data: &Dataset) -> Result<Calibration> {
    let (bytes, model) = load_model(path, &BTreeMap::new())?;
    write_calibrated(&bytes, &model, data, path, &CalibrateConfig::default())
}

/// A model file's bytes and the model they load as.
pub(crate) fn load_model(
    path: &Path,
    metadata_overrides: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Arc<Model>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut options = mgecl::LoadOptions::default();
    options.metadata_overrides = metadata_overrides.clone();
    let model = Arc::new(Model::from_bytes(&bytes, &options)?);
    Ok((bytes, model))
}

/// Fits the calibration of `model` (loaded from `bytes`) on `data` and writes the model file
/// with it to `out`.
fn write_calibrated(
    bytes: &[u8],
    model: &Arc<Model>,
    data: &Dataset,
    out: &Path,
    config: &CalibrateConfig,
) -> Result<Calibration> {
    let calibration = fit_calibration(model, data, config)?;
    // The metadata the model was loaded with: the file's, with any overrides applied.
    let metadata = model.info().metadata.clone();
    mgecl::internals::write_file(out, &with_metadata(bytes, metadata, &calibration)?)?;
    Ok(calibration)
}
