//! A task's settings: the classifier, its parameters, test-time augmentation, thresholds and
//! resource limits. Below `model` (a model file recommends settings, `task_defaults`) and
//! `task` (which runs them); re-exported from [`task`](crate::task).

use serde::{Deserialize, Serialize};

use crate::augment::{Augmentation, MAX_AUGMENTED_COPIES};
use crate::classifier::logistic::LogisticConfig;
use crate::error::{Error, Result};

/// Which classifier a task fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierKind {
    /// Multinomial logistic regression (scikit-learn's `LogisticRegression(C=1/alpha)`), fitted
    /// with linfa-logistic. The MGECL/RFS meta-test classifier.
    Logistic,
    /// Cosine similarity to class means, softmax with a temperature. Fits in microseconds. The
    /// default: more accurate than logistic regression at one shot with the shipped model
    /// (`models/README.md`), equal at five, and unbiased by classes of unequal example counts.
    #[default]
    Prototype,
}

impl ClassifierKind {
    /// Every classifier, in the order `--help` lists them.
    pub const ALL: [ClassifierKind; 2] = [ClassifierKind::Prototype, ClassifierKind::Logistic];

    /// The name [`FromStr`](std::str::FromStr) reads: `logistic` or `prototype`.
    pub fn name(self) -> &'static str {
        match self {
            ClassifierKind::Logistic => "logistic",
            ClassifierKind::Prototype => "prototype",
        }
    }
}

impl std::fmt::Display for ClassifierKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ClassifierKind {
    type Err = Error;

    /// # Errors
    /// [`Error::InvalidArgument`] for a name other than `logistic` or `prototype`.
    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "logistic" => Ok(ClassifierKind::Logistic),
            "prototype" => Ok(ClassifierKind::Prototype),
            other => Err(Error::InvalidArgument(format!(
                "unknown classifier {other:?} (expected logistic or prototype)"
            ))),
        }
    }
}

/// Settings of a task; saved with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskConfig {
    /// The classifier to fit (default [`ClassifierKind::Prototype`]).
    pub classifier: ClassifierKind,
    /// Logistic regression: L2 penalty `alpha = 1/C` (default 1, scikit-learn's C = 1).
    pub alpha: f64,
    /// Logistic regression: iteration cap (default 1000).
    pub max_iterations: u64,
    /// Logistic regression: the fit counts as converged when the largest absolute gradient
    /// entry of the objective is at most this (default 1e-6). The solver itself is never asked
    /// for less than f64 can resolve on the task
    /// ([`solver_tolerance_floor`](crate::classifier::logistic::solver_tolerance_floor)): below
    /// it the fit returns not converged instead of searching forever.
    pub gradient_tolerance: f64,
    /// Prototype classifier: softmax temperature on cosine similarities (default 0.1).
    pub temperature: f64,
    /// Augmented copies embedded with each support image (0 = off, the default; up to
    /// [`MAX_AUGMENTED_COPIES`]), of the kind [`TaskConfig::augmentation`] says: the
    /// classifier fits on the image's and its copies' features. Applies to examples added
    /// after it is set.
    pub augmented_copies: usize,
    /// Which copies `augmented_copies` makes (default [`Augmentation::Rotate`]). Task files
    /// written before this setting existed made [`Augmentation::FlipShift`] copies.
    #[serde(default = "legacy_augmentation")]
    pub augmentation: Augmentation,
    /// Test-time augmentation of the queries too (default false): [`Task::classify`] and
    /// [`Task::label_paths`] embed each image with `augmented_copies` copies and classify the
    /// mean direction of their features (the merge of test-time copies), at
    /// 1 + `augmented_copies` times the embedding cost. Feature rows given directly are
    /// classified as they are.
    ///
    /// [`Task::classify`]: crate::Task::classify
    /// [`Task::label_paths`]: crate::Task::label_paths
    #[serde(default)]
    pub augment_queries: bool,
    /// Transductive answers (default false): a batch of queries classified together
    /// ([`Task::classify`], [`Task::classify_features`], [`Task::label_paths`], ...) refines
    /// the class prototypes with the batch itself before answering
    /// ([`transductive`](crate::classifier::transductive)): the unlabelled images of a folder
    /// say where its classes lie (+7 points at one shot on the photo model's val classes). The
    /// answers then come from the refined prototypes, as the prototype classifier's do (and
    /// are calibrated as its are), whatever [`TaskConfig::classifier`] says;
    /// [`Prediction::known_probability`](crate::Prediction::known_probability) stays the
    /// inductive one. An image's answer depends on the other images of its batch. Batches of
    /// fewer than [`MIN_QUERIES_PER_CLASS`](crate::classifier::transductive::MIN_QUERIES_PER_CLASS)
    /// images per class, and one-class tasks, get the inductive answer.
    ///
    /// [`Task::classify`]: crate::Task::classify
    /// [`Task::classify_features`]: crate::Task::classify_features
    /// [`Task::label_paths`]: crate::Task::label_paths
    #[serde(default)]
    pub transductive: bool,
    /// Open-set rejection: an answer whose [`Prediction::known_probability`](crate::Prediction::known_probability) is below this
    /// becomes "unknown" (`label: None`). With a calibrated model that is the probability that
    /// the image belongs to one of the task's classes at all, so 0.5 rejects what is more
    /// likely unknown than known. `None` (default) always answers.
    pub threshold: Option<f64>,
    /// Calibrated probabilities (default true): the model's calibration
    /// ([`Model::calibration`](crate::Model::calibration)) rescales the classifier's scores for the task's number of
    /// classes and shots and for its augmentation
    /// ([`Calibration::for_copies`](crate::classifier::calibration::Calibration::for_copies)),
    /// so that a probability of 0.9 is right 9 times in 10; which class wins never changes.
    /// `false` gives the classifier's raw probabilities (logistic regression: scikit-learn's
    /// exactly), as does a model without a calibration.
    #[serde(default = "default_calibrated")]
    pub calibrated: bool,
    /// Most classes the task holds (default [`DEFAULT_MAX_CLASSES`]); adding one more, or
    /// loading a task file with more, is [`Error::LimitExceeded`].
    #[serde(default = "default_max_classes")]
    pub max_classes: usize,
    /// Most feature rows the task holds, counting each example's augmented copies (default
    /// [`DEFAULT_MAX_ROWS`]). The logistic fit keeps a rows x rows Gram matrix in f64, so this
    /// bounds its memory (800 MB at 10,000 rows) and time.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
}

/// Default of [`TaskConfig::max_classes`].
pub const DEFAULT_MAX_CLASSES: usize = 1000;
/// Default of [`TaskConfig::max_rows`].
pub const DEFAULT_MAX_ROWS: usize = 10_000;

fn default_max_classes() -> usize {
    DEFAULT_MAX_CLASSES
}

fn default_max_rows() -> usize {
    DEFAULT_MAX_ROWS
}

fn legacy_augmentation() -> Augmentation {
    Augmentation::FlipShift
}

fn default_calibrated() -> bool {
    true
}

impl Default for TaskConfig {
    fn default() -> Self {
        let logistic = LogisticConfig::default();
        TaskConfig {
            classifier: ClassifierKind::default(),
            alpha: logistic.alpha,
            max_iterations: logistic.max_iterations,
            gradient_tolerance: logistic.gradient_tolerance,
            temperature: 0.1,
            augmented_copies: 0,
            augmentation: Augmentation::default(),
            augment_queries: false,
            transductive: false,
            threshold: None,
            calibrated: true,
            max_classes: DEFAULT_MAX_CLASSES,
            max_rows: DEFAULT_MAX_ROWS,
        }
    }
}

/// Model metadata key of the task settings a model recommends (a JSON object with any of
/// `classifier`, `augmented_copies`, `augmentation`, `augment_queries`, `transductive`), e.g.
/// `{"augmented_copies":2,"augment_queries":true}` for a model measured best with test-time
/// augmentation. [`Model::task_defaults`](crate::Model::task_defaults) reads it.
pub const TASK_DEFAULTS_KEY: &str = "task_defaults";

/// The part of a [`TaskConfig`] a model's `task_defaults` metadata may set: how to use this
/// encoder, not the resource limits or solver settings of an application.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelTaskDefaults {
    classifier: Option<ClassifierKind>,
    augmented_copies: Option<usize>,
    augmentation: Option<Augmentation>,
    augment_queries: Option<bool>,
    transductive: Option<bool>,
}

impl TaskConfig {
    /// [`TaskConfig::default`] with a model's `task_defaults` metadata value applied.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] ([`ModelProblem::BadMetadata`](crate::ModelProblem)) for text
    /// that is not such an object (unknown key, wrong type) or settings out of range
    /// (more than [`MAX_AUGMENTED_COPIES`] copies, augmented queries without copies).
    pub(crate) fn from_model_defaults(text: &str) -> Result<TaskConfig> {
        let bad = |m: String| {
            Error::model(
                crate::ModelProblem::BadMetadata,
                format!("{TASK_DEFAULTS_KEY}: {m}"),
            )
        };
        let d: ModelTaskDefaults = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let base = TaskConfig::default();
        let config = TaskConfig {
            classifier: d.classifier.unwrap_or(base.classifier),
            augmented_copies: d.augmented_copies.unwrap_or(base.augmented_copies),
            augmentation: d.augmentation.unwrap_or(base.augmentation),
            augment_queries: d.augment_queries.unwrap_or(base.augment_queries),
            transductive: d.transductive.unwrap_or(base.transductive),
            ..base
        };
        if config.augment_queries && config.augmented_copies == 0 {
            return Err(bad("augment_queries needs augmented_copies >= 1".into()));
        }
        config.validate().map_err(|e| bad(e.to_string()))?;
        Ok(config)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.alpha) {
            return Err(Error::InvalidArgument(format!(
                "alpha must be > 0, got {}",
                self.alpha
            )));
        }
        if self.max_iterations == 0 {
            return Err(Error::InvalidArgument("max_iterations must be >= 1".into()));
        }
        if !positive(self.gradient_tolerance) {
            return Err(Error::InvalidArgument(format!(
                "gradient_tolerance must be > 0, got {}",
                self.gradient_tolerance
            )));
        }
        if !positive(self.temperature) {
            return Err(Error::InvalidArgument(format!(
                "temperature must be > 0, got {}",
                self.temperature
            )));
        }
        if self.augmented_copies > MAX_AUGMENTED_COPIES {
            return Err(Error::InvalidArgument(format!(
                "augmented_copies must be <= {MAX_AUGMENTED_COPIES}"
            )));
        }
        if self.max_classes < 2 || self.max_rows < 2 {
            return Err(Error::InvalidArgument(
                "max_classes and max_rows must be >= 2".into(),
            ));
        }
        if let Some(t) = self.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(Error::InvalidArgument(format!(
                    "threshold must be in [0, 1], got {t}"
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn logistic(&self) -> LogisticConfig {
        LogisticConfig {
            alpha: self.alpha,
            max_iterations: self.max_iterations,
            gradient_tolerance: self.gradient_tolerance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClassifierKind;

    #[test]
    fn classifier_names_read_back() {
        for kind in [ClassifierKind::Logistic, ClassifierKind::Prototype] {
            assert_eq!(kind.to_string().parse::<ClassifierKind>().unwrap(), kind);
        }
        assert_eq!(ClassifierKind::Prototype.to_string(), "prototype");
        assert!(" Logistic ".parse::<ClassifierKind>().unwrap() == ClassifierKind::Logistic);
        assert!("svm".parse::<ClassifierKind>().is_err());
    }
}
