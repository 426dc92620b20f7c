//! A few-shot task: labelled support examples (kept as features, embedded once when added),
//! a per-task classifier fitted on their L2-normalised features, classification of new
//! images, and persistence to one crash-safe file.
//!
//! ```no_run
//! use std::sync::Arc;
//! use mgecl::{LoadOptions, Model, Task, TaskConfig};
//! let model = Arc::new(Model::load("model.safetensors", &LoadOptions::default())?);
//! let mut task = Task::new(model, TaskConfig::default())?;
//! task.add_class("cat")?;
//! task.add_example_path("cat", "cat1.jpg")?;
//! task.add_class("dog")?;
//! task.add_example_path("dog", "dog1.jpg")?;
//! let report = task.fit()?;
//! assert!(report.converged);
//! let answers = task.classify_paths(&["unknown.jpg"])?;
//! println!("{:?} {:.3}", answers[0].label, answers[0].probability);
//! # Ok::<(), mgecl::Error>(())
//! ```

use std::path::Path;
use std::sync::Arc;

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::classifier::logistic::LogisticModel;
use crate::classifier::prototype::{unit_class_means, PrototypeModel};
use crate::classifier::transductive;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::preprocess::ImageSource;

mod answers;
mod file;
mod folder;
mod label;

pub use crate::augment::{augmented_copy, Augmentation, MAX_AUGMENTED_COPIES};
use crate::augment::{extend_with_copies, merge_copies};
pub use crate::config::{
    ClassifierKind, TaskConfig, DEFAULT_MAX_CLASSES, DEFAULT_MAX_ROWS, TASK_DEFAULTS_KEY,
};
pub use answers::{ClassSummary, FitReport, Prediction, Scores};
pub use file::MAX_TASK_FILE_BYTES;
pub use folder::{support_classes, SupportClass};
pub use label::{
    failed_rows, rank_to_label, review_order, LabelCsv, LabelOptions, LabelRow, Labelling,
    Proposal, Suggestion, CSV_HEADER, LABEL_CHUNK, MAX_CANDIDATES,
};

/// Longest accepted class label, in bytes.
pub const MAX_LABEL_BYTES: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Example {
    id: u64,
    /// The example's feature first, then those of its augmented copies (`rows x dim`).
    #[serde(skip)]
    features: Vec<f32>,
    rows: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Class {
    label: String,
    examples: Vec<Example>,
}

enum Classifier {
    Logistic(LogisticModel),
    Prototype(PrototypeModel),
    /// One class: the answer is always it, with the known-probability as its probability.
    Single,
}

struct Fitted {
    classifier: Classifier,
    /// Unit-norm class means of the normalised support features (`classes x dim`).
    prototypes: Array2<f64>,
    /// Classes, and support examples per class on average: the shape calibration depends on.
    ways: f64,
    shots: f64,
    /// The normalised support rows and their class indices: what a transductive answer
    /// refines the prototypes from.
    support: Array2<f64>,
    labels: Vec<usize>,
}

/// A few-shot task bound to a model. Use from one thread at a time (`&mut` for changes);
/// many tasks may share one [`Model`].
pub struct Task {
    model: Arc<Model>,
    config: TaskConfig,
    classes: Vec<Class>,
    next_id: u64,
    fitted: Option<Fitted>,
}

fn check_label(label: &str) -> Result<()> {
    if label.is_empty() || label.len() > MAX_LABEL_BYTES || label.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "labels must be 1..={MAX_LABEL_BYTES} bytes without control characters, got {label:?}"
        )));
    }
    Ok(())
}

/// L2-normalises each row into f64 (a zero row stays zero; a non-finite row stays
/// non-finite, for the classifier's check to reject). One pass per row: this runs on every
/// classification.
/// `softmax(scale * scores)`, row by row.
fn softmax_scaled(mut scores: Array2<f64>, scale: f64) -> Array2<f64> {
    scores *= scale;
    crate::classifier::logistic::softmax_rows_inplace(&mut scores);
    scores
}

/// Each row's best cosine similarity to a class mean.
fn best_cosines(cosines: &Array2<f64>) -> Vec<f64> {
    cosines
        .rows()
        .into_iter()
        .map(|row| row.fold(f64::NEG_INFINITY, |m, &v| m.max(v)))
        .collect()
}

/// The fitted classifier's uncalibrated scores of normalised rows `x` whose cosines to the
/// class means are `cosines`: logistic regression's decision function, or the cosines.
fn classifier_scores(
    fitted: &Fitted,
    x: ArrayView2<f64>,
    cosines: Array2<f64>,
) -> Result<Array2<f64>> {
    match &fitted.classifier {
        Classifier::Logistic(m) => m.decision(x),
        Classifier::Prototype(_) | Classifier::Single => Ok(cosines),
    }
}

fn normalized_rows(features: ArrayView2<f32>) -> Array2<f64> {
    let (n, d) = features.dim();
    let mut out = Vec::with_capacity(n * d);
    let mut row_buffer = Vec::new();
    for row in features.rows() {
        let values: &[f32] = match row.as_slice() {
            Some(slice) => slice,
            None => {
                row_buffer.clear();
                row_buffer.extend(row.iter().copied());
                &row_buffer
            }
        };
        // Eight independent partial sums: no serial add chain, and the compiler vectorises it.
        let mut partial = [0f64; 8];
        let mut chunks = values.chunks_exact(8);
        for chunk in &mut chunks {
            for (p, &v) in partial.iter_mut().zip(chunk) {
                *p += f64::from(v) * f64::from(v);
            }
        }
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum();
        let squares = partial.iter().sum::<f64>() + tail;
        let scale = if squares > 0.0 {
            1.0 / squares.sqrt()
        } else {
            1.0
        };
        out.extend(values.iter().map(|&v| f64::from(v) * scale));
    }
    Array2::from_shape_vec((n, d), out).unwrap_or_else(|_| Array2::zeros((n, d)))
}

impl Task {
    /// An empty task for `model`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid `config`.
    pub fn new(model: Arc<Model>, config: TaskConfig) -> Result<Self> {
        config.validate()?;
        Ok(Task {
            model,
            config,
            classes: Vec::new(),
            next_id: 1,
            fitted: None,
        })
    }

    /// The model the task embeds with.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The task's settings.
    pub fn config(&self) -> &TaskConfig {
        &self.config
    }

    /// Replaces the settings; the task must be fitted again.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid `config`; [`Error::LimitExceeded`] when the
    /// task already holds more classes or rows than its limits allow. The old config then stays.
    pub fn set_config(&mut self, config: TaskConfig) -> Result<()> {
        config.validate()?;
        check_limits(&config, self.classes.len(), self.total_rows())?;
        self.config = config;
        self.fitted = None;
        Ok(())
    }

    /// Classes in the order they were added, with their example ids.
    pub fn classes(&self) -> Vec<ClassSummary> {
        self.classes
            .iter()
            .map(|c| ClassSummary {
                label: c.label.clone(),
                example_ids: c.examples.iter().map(|e| e.id).collect(),
            })
            .collect()
    }

    /// The fitted logistic-regression model (coefficients, intercepts), when the task was
    /// last fitted with [`ClassifierKind::Logistic`].
    pub fn logistic_model(&self) -> Option<&LogisticModel> {
        match self.fitted.as_ref().map(|f| &f.classifier) {
            Some(Classifier::Logistic(m)) => Some(m),
            _ => None,
        }
    }

    /// Feature rows held (examples and their augmented copies).
    fn total_rows(&self) -> usize {
        self.classes
            .iter()
            .flat_map(|c| &c.examples)
            .map(|e| e.rows)
            .sum()
    }

    /// Whether [`Task::fit`] has run since the last change.
    pub fn is_fitted(&self) -> bool {
        self.fitted.is_some()
    }

    fn class_mut(&mut self, label: &str) -> Result<&mut Class> {
        self.classes
            .iter_mut()
            .find(|c| c.label == label)
            .ok_or_else(|| Error::UnknownLabel(label.to_string()))
    }

    /// Adds an empty class.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty, over-long or control-character label;
    /// [`Error::DuplicateLabel`] when the label exists; [`Error::LimitExceeded`] when the task
    /// holds [`TaskConfig::max_classes`] classes.
    pub fn add_class(&mut self, label: &str) -> Result<()> {
        check_label(label)?;
        if self.classes.iter().any(|c| c.label == label) {
            return Err(Error::DuplicateLabel(label.to_string()));
        }
        check_limits(&self.config, self.classes.len() + 1, self.total_rows())?;
        self.classes.push(Class {
            label: label.to_string(),
            examples: Vec::new(),
        });
        self.fitted = None;
        Ok(())
    }

    /// Removes a class and its examples.
    ///
    /// # Errors
    /// [`Error::UnknownLabel`].
    pub fn remove_class(&mut self, label: &str) -> Result<()> {
        let index = self
            .classes
            .iter()
            .position(|c| c.label == label)
            .ok_or_else(|| Error::UnknownLabel(label.to_string()))?;
        self.classes.remove(index);
        self.fitted = None;
        Ok(())
    }

    /// Removes one example by id.
    ///
    /// # Errors
    /// [`Error::UnknownExample`].
    pub fn remove_example(&mut self, id: u64) -> Result<()> {
        for class in &mut self.classes {
            if let Some(i) = class.examples.iter().position(|e| e.id == id) {
                class.examples.remove(i);
                self.fitted = None;
                return Ok(());
            }
        }
        Err(Error::UnknownExample(id))
    }

    fn push_example(&mut self, label: &str, features: Vec<f32>, rows: usize) -> Result<u64> {
        check_limits(&self.config, self.classes.len(), self.total_rows() + rows)?;
        let id = self.next_id;
        self.class_mut(label)?
            .examples
            .push(Example { id, features, rows });
        self.next_id += 1;
        self.fitted = None;
        Ok(id)
    }

    /// Embeds an image (with its augmented copies when configured) and adds it to class
    /// `label`. Returns the example's id.
    ///
    /// # Errors
    /// [`Error::UnknownLabel`]; [`Error::LimitExceeded`] past [`TaskConfig::max_rows`]; any
    /// error of [`Model::embed`] (the task is unchanged).
    pub fn add_example(&mut self, label: &str, image: &ImageSource<'_>) -> Result<u64> {
        self.class_mut(label)?;
        let input = self.model.preprocessor().preprocess(image)?;
        let mut inputs = Vec::new();
        self.with_copies(&input, &mut inputs);
        let features = self.model.embed_preprocessed(&inputs)?;
        let rows = features.nrows();
        self.push_example(label, features.into_iter().collect(), rows)
    }

    /// A preprocessed image followed by its `augmented_copies` copies, appended to `out`.
    fn with_copies(&self, input: &[f32], out: &mut Vec<f32>) {
        let shape = self.model.preprocessor().input_shape();
        let (kind, copies) = (self.config.augmentation, self.config.augmented_copies);
        extend_with_copies(out, input, shape, kind, copies);
    }

    /// The features the task classifies images by, one row per image: the encoder's output,
    /// or with [`TaskConfig::augment_queries`] the mean direction of the image's and its
    /// copies' outputs.
    ///
    /// # Errors
    /// Any error of [`Model::embed`] (naming the image's index).
    pub fn embed_queries(&self, images: &[ImageSource<'_>]) -> Result<Array2<f32>> {
        let copies = self.query_copies();
        if copies == 0 {
            return self.model.embed(images);
        }
        let per_image = (1 + copies) * self.model.preprocessor().input_len();
        let mut inputs = Vec::with_capacity(images.len() * per_image);
        self.model
            .preprocess_each(images, |input| self.with_copies(&input, &mut inputs))?;
        merge_copies(self.model.embed_preprocessed(&inputs)?.view(), copies)
    }

    /// Augmented copies embedded with each query image (0 without
    /// [`TaskConfig::augment_queries`]).
    fn query_copies(&self) -> usize {
        if self.config.augment_queries {
            self.config.augmented_copies
        } else {
            0
        }
    }

    /// [`Task::embed_queries`] that goes on past images that cannot be used: one entry per
    /// image, in order, holding its feature row (`feature_dim` values, what
    /// [`Task::embed_queries`] would give it: images are embedded together as there) or the
    /// error that made it unusable: [`Error::Io`] (unreadable file), [`Error::InvalidImage`]
    /// (empty, corrupt or unsupported data) or [`Error::LimitExceeded`] (over the image
    /// limits), whose messages name the file's path (or, in memory, the image's index).
    ///
    /// # Errors
    /// The errors that are not one image's: [`Error::InvalidArgument`] for an empty batch,
    /// [`Error::Backend`] when the forward pass fails.
    pub fn embed_queries_each(&self, images: &[ImageSource<'_>]) -> Result<Vec<Result<Vec<f32>>>> {
        if images.is_empty() {
            return Err(Error::InvalidArgument("no images to embed".into()));
        }
        let copies = self.query_copies();
        let per_image = (1 + copies) * self.model.preprocessor().input_len();
        let mut inputs = Vec::new();
        let mut outcomes = Vec::with_capacity(images.len());
        for (index, image) in images.iter().enumerate() {
            match self.model.preprocess_one(index, image) {
                Ok(input) => {
                    let shape = self.model.preprocessor().input_shape();
                    extend_with_copies(
                        &mut inputs,
                        &input,
                        shape,
                        self.config.augmentation,
                        copies,
                    );
                    outcomes.push(Ok(()));
                }
                Err(e @ (Error::Io { .. } | Error::InvalidImage(_) | Error::LimitExceeded(_))) => {
                    outcomes.push(Err(e))
                }
                Err(other) => return Err(other),
            }
        }
        debug_assert_eq!(inputs.len() % per_image, 0);
        let features = if inputs.is_empty() {
            Array2::zeros((0, self.model.feature_dim()))
        } else {
            let rows = self.model.embed_preprocessed(&inputs)?;
            if copies > 0 {
                merge_copies(rows.view(), copies)?
            } else {
                rows
            }
        };
        let mut rows = features.rows().into_iter();
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.map(|()| rows.next().map(|r| r.to_vec()).unwrap_or_default()))
            .collect())
    }

    /// [`Task::embed_queries`] for image files.
    ///
    /// # Errors
    /// As [`Task::embed_queries`].
    pub fn embed_query_paths<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Array2<f32>> {
        self.embed_queries(&ImageSource::paths(paths))
    }

    /// [`Task::add_example`] for an image file.
    ///
    /// # Errors
    /// As [`Task::add_example`].
    pub fn add_example_path(&mut self, label: &str, path: impl AsRef<Path>) -> Result<u64> {
        self.add_example(label, &ImageSource::Path(path.as_ref()))
    }

    /// Adds an already computed feature (the encoder's output for this model, normalised or
    /// not) to class `label`; more rows (`k * feature_dim` values) are the features of the
    /// image and then of its augmented copies ([`augmented_copy`]), fitted on when
    /// [`TaskConfig::augmented_copies`] is not 0, as [`Task::add_example`] adds them. Returns
    /// the example's id.
    ///
    /// # Errors
    /// [`Error::UnknownLabel`]; [`Error::InvalidArgument`] for a feature of the wrong length
    /// or with a NaN/infinite value; [`Error::LimitExceeded`] past [`TaskConfig::max_rows`].
    pub fn add_example_feature(&mut self, label: &str, feature: &[f32]) -> Result<u64> {
        self.class_mut(label)?;
        self.check_features(feature)?;
        let rows = feature.len() / self.model.feature_dim();
        self.push_example(label, feature.to_vec(), rows)
    }

    fn check_features(&self, values: &[f32]) -> Result<()> {
        let dim = self.model.feature_dim();
        if values.is_empty() || !values.len().is_multiple_of(dim) {
            return Err(Error::InvalidArgument(format!(
                "features must have {dim} values per row, got {} values",
                values.len()
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(
                "features contain NaN or infinite values".into(),
            ));
        }
        Ok(())
    }

    /// Fits the configured classifier on the L2-normalised support features. A task of one
    /// class ("is it this, or not?") fits with the prototype classifier: its answers carry the
    /// known-probability ([`Prediction::known_probability`]) as their probability.
    ///
    /// # Errors
    /// [`Error::InvalidTask`] with no class, one class and the logistic classifier, or a
    /// class without examples; [`Error::InvalidArgument`] if the solver rejects the data. On
    /// error the task is left unfitted.
    pub fn fit(&mut self) -> Result<FitReport> {
        self.fitted = None;
        let single = self.classes.len() == 1 && self.config.classifier == ClassifierKind::Prototype;
        if self.classes.len() < 2 && !single {
            return Err(Error::InvalidTask(format!(
                "a task needs at least 2 classes to fit with logistic regression (one class \
                 fits with the prototype classifier), it has {}",
                self.classes.len()
            )));
        }
        if let Some(empty) = self.classes.iter().find(|c| c.examples.is_empty()) {
            return Err(Error::InvalidTask(format!(
                "class {:?} has no examples",
                empty.label
            )));
        }
        let use_copies = self.config.augmented_copies > 0;
        let dim = self.model.feature_dim();
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for (k, class) in self.classes.iter().enumerate() {
            for e in &class.examples {
                let n = if use_copies { e.rows } else { 1 };
                rows.extend_from_slice(&e.features[..n * dim]);
                labels.extend(std::iter::repeat_n(k, n));
            }
        }
        let raw = Array2::from_shape_vec((labels.len(), dim), rows)
            .map_err(|e| Error::backend_caused_by("support matrix", e))?;
        let x = normalized_rows(raw.view());
        let n_classes = self.classes.len();
        let (classifier, converged, gradient_max_abs) = match self.config.classifier {
            ClassifierKind::Logistic => {
                let m = LogisticModel::fit(x.view(), &labels, n_classes, &self.config.logistic())?;
                let (c, g) = (m.converged(), m.grad_max_abs());
                (Classifier::Logistic(m), c, g)
            }
            ClassifierKind::Prototype if single => (Classifier::Single, true, 0.0),
            ClassifierKind::Prototype => {
                let m = PrototypeModel::fit(x.view(), &labels, n_classes, self.config.temperature)?;
                (Classifier::Prototype(m), true, 0.0)
            }
        };
        let examples: usize = self.classes.iter().map(|c| c.examples.len()).sum();
        let rows = labels.len();
        self.fitted = Some(Fitted {
            classifier,
            prototypes: unit_class_means(x.view(), &labels, n_classes),
            ways: n_classes as f64,
            shots: examples as f64 / n_classes as f64,
            support: x,
            labels,
        });
        Ok(FitReport {
            classifier: self.config.classifier,
            converged,
            gradient_max_abs,
            rows,
            classes: n_classes,
        })
    }

    /// Class probabilities for feature rows (`N x feature_dim`, encoder outputs; normalised
    /// here): `N x classes` (calibrated as [`TaskConfig::calibrated`] says).
    ///
    /// # Errors
    /// [`Error::NotFitted`]; [`Error::InvalidArgument`] for a wrong width or non-finite value.
    pub fn predict_proba(&self, features: ArrayView2<f32>) -> Result<Array2<f64>> {
        Ok(self.answer(features)?.0)
    }

    /// The fitted classifier's uncalibrated scores for feature rows (`N x feature_dim`):
    /// logistic regression's decision function or the prototype classifier's cosine
    /// similarities (`N x classes`; a one-class task: the cosine to its class mean), and each
    /// row's best cosine similarity to a class mean. What calibration is fitted on. Always the
    /// inductive scores (each row on its own), also with [`TaskConfig::transductive`].
    ///
    /// # Errors
    /// As [`Task::predict_proba`].
    pub fn scores(&self, features: ArrayView2<f32>) -> Result<Scores> {
        let (fitted, x, cosines) = self.cosines(features)?;
        let best_cosine = best_cosines(&cosines);
        Ok(Scores {
            classifier: classifier_scores(fitted, x.view(), cosines)?,
            best_cosine,
        })
    }

    /// The fitted state, the L2-normalised rows of `features`, and their cosine similarities
    /// to the class means.
    fn cosines(&self, features: ArrayView2<f32>) -> Result<(&Fitted, Array2<f64>, Array2<f64>)> {
        let fitted = self.fitted.as_ref().ok_or(Error::NotFitted)?;
        let dim = self.model.feature_dim();
        if features.ncols() != dim || features.nrows() == 0 {
            return Err(Error::InvalidArgument(format!(
                "expected N x {dim} features, got {:?}",
                features.shape()
            )));
        }
        let x = normalized_rows(features);
        // Non-finite values survive normalisation: rejected here.
        crate::classifier::logistic::validate_queries(x.view(), dim)?;
        let cosines = x.dot(&fitted.prototypes.t());
        Ok((fitted, x, cosines))
    }

    /// Probabilities and known-probabilities of feature rows.
    fn answer(&self, features: ArrayView2<f32>) -> Result<(Array2<f64>, Vec<f64>)> {
        let (fitted, x, cosines) = self.cosines(features)?;
        let (ways, shots) = (fitted.ways, fitted.shots);
        let calibration = self
            .model
            .calibration()
            .map(|c| c.for_copies(self.config.augmented_copies));
        let known: Vec<f64> = best_cosines(&cosines)
            .iter()
            .map(|&best| match calibration {
                Some(c) => c.open_set.known_probability(best, ways, shots),
                None => best.clamp(0.0, 1.0),
            })
            .collect();
        let scale = calibration.filter(|_| self.config.calibrated);
        let transductive = self.config.transductive
            && !matches!(fitted.classifier, Classifier::Single)
            && transductive::applies(x.nrows(), fitted.prototypes.nrows());
        if transductive {
            // The prototype classifier's answer, from the prototypes the batch refined.
            let refined = transductive::refine_prototypes(
                fitted.support.view(),
                &fitted.labels,
                fitted.prototypes.nrows(),
                x.view(),
                &known,
            )?;
            let cosines = x.dot(&refined.prototypes.t());
            let factor = match scale {
                Some(c) => c.prototype.scale(ways, shots),
                None => 1.0 / self.config.temperature,
            };
            return Ok((softmax_scaled(cosines, factor), known));
        }
        // Only an inductive answer needs the classifier's own scores.
        let z = classifier_scores(fitted, x.view(), cosines)?;
        let proba = match (&fitted.classifier, scale) {
            (Classifier::Single, _) => Array2::from_shape_vec((known.len(), 1), known.clone())
                .map_err(|e| Error::backend_caused_by("probability matrix", e))?,
            (Classifier::Logistic(_), Some(c)) => softmax_scaled(z, c.logistic.scale(ways, shots)),
            (Classifier::Prototype(_), Some(c)) => {
                softmax_scaled(z, c.prototype.scale(ways, shots))
            }
            // Raw: scikit-learn's softmax of the decision function; softmax(cosine / T).
            (Classifier::Logistic(_), None) => softmax_scaled(z, 1.0),
            (Classifier::Prototype(m), None) => softmax_scaled(z, 1.0 / m.temperature()),
        };
        Ok((proba, known))
    }

    /// Classifies feature rows (see [`Task::predict_proba`]). With
    /// [`TaskConfig::transductive`] the rows are answered together, each answer depending on
    /// the whole batch (the [`crate::classifier::transductive`] refinement).
    ///
    /// # Errors
    /// As [`Task::predict_proba`].
    pub fn classify_features(&self, features: ArrayView2<f32>) -> Result<Vec<Prediction>> {
        let (proba, known) = self.answer(features)?;
        Ok(proba
            .axis_iter(Axis(0))
            .zip(known)
            .map(|(row, known_probability)| {
                let (best, p) =
                    row.iter()
                        .copied()
                        .enumerate()
                        .fold(
                            (0, f64::NEG_INFINITY),
                            |acc, (i, v)| if v > acc.1 { (i, v) } else { acc },
                        );
                let rejected = self.config.threshold.is_some_and(|t| known_probability < t);
                Prediction {
                    label: (!rejected).then(|| self.classes[best].label.clone()),
                    class_index: best,
                    probability: p,
                    probabilities: row.to_vec(),
                    known_probability,
                }
            })
            .collect())
    }

    /// Embeds and classifies images (as one batch: see [`Task::classify_features`]).
    ///
    /// # Errors
    /// [`Error::NotFitted`] (checked before any embedding); any error of [`Model::embed`].
    pub fn classify(&self, images: &[ImageSource<'_>]) -> Result<Vec<Prediction>> {
        if self.fitted.is_none() {
            return Err(Error::NotFitted);
        }
        let features = self.embed_queries(images)?;
        self.classify_features(features.view())
    }

    /// [`Task::classify`] for image files.
    ///
    /// # Errors
    /// As [`Task::classify`].
    pub fn classify_paths<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Vec<Prediction>> {
        self.classify(&ImageSource::paths(paths))
    }
}

/// [`Error::LimitExceeded`] when `classes` or `rows` pass the limits of `config`.
fn check_limits(config: &TaskConfig, classes: usize, rows: usize) -> Result<()> {
    if classes > config.max_classes {
        return Err(Error::LimitExceeded(format!(
            "{classes} classes exceed the task's max_classes = {}",
            config.max_classes
        )));
    }
    if rows > config.max_rows {
        return Err(Error::LimitExceeded(format!(
            "{rows} feature rows exceed the task's max_rows = {}",
            config.max_rows
        )));
    }
    Ok(())
}
