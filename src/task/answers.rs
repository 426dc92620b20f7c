//! What a task answers: a fit's report, a prediction per image, raw scores, the classes.

use ndarray::Array2;
use serde::Serialize;

use crate::config::ClassifierKind;

/// What a fit did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FitReport {
    /// The classifier fitted.
    pub classifier: ClassifierKind,
    /// Whether the solver reached `gradient_tolerance` (always true for the prototype one).
    pub converged: bool,
    /// Largest absolute gradient entry of the logistic objective at the solution (0 for the
    /// prototype classifier).
    pub gradient_max_abs: f64,
    /// Feature rows the classifier was fitted on (support examples and augmented copies).
    pub rows: usize,
    /// Number of classes.
    pub classes: usize,
}

/// The answer for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Prediction {
    /// The best class, or `None` ("unknown") when its probability is below the threshold.
    pub label: Option<String>,
    /// Index of the best class in [`Task::classes`](super::Task::classes) (also set when the label is rejected).
    pub class_index: usize,
    /// Probability of the best class, given that the image is of one of the task's classes
    /// (calibrated unless [`TaskConfig::calibrated`](crate::TaskConfig::calibrated) is off or the model has no calibration).
    pub probability: f64,
    /// Probability of every class, in [`Task::classes`](super::Task::classes) order.
    pub probabilities: Vec<f64>,
    /// Probability that the image is of one of the task's classes at all (the open-set score
    /// [`TaskConfig::threshold`](crate::TaskConfig::threshold) compares): the model's calibrated function of the image's
    /// best cosine similarity to a class mean; without a calibration, that similarity itself,
    /// clipped to [0, 1]. A single-class task answers with it as its class's probability.
    pub known_probability: f64,
}

impl Prediction {
    /// The `k` most probable classes as (class index, probability), best first.
    pub fn top_k(&self, k: usize) -> Vec<(usize, f64)> {
        let mut ranked: Vec<(usize, f64)> =
            self.probabilities.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
    }
}

/// Uncalibrated scores of feature rows ([`Task::scores`](super::Task::scores)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Scores {
    /// `N x classes`: logistic regression's decision function, or cosine similarities to the
    /// class means (prototype classifier, one-class task).
    pub classifier: Array2<f64>,
    /// Each row's best cosine similarity to a class mean.
    pub best_cosine: Vec<f64>,
}

/// One class of a task, as listed by [`Task::classes`](super::Task::classes).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ClassSummary {
    /// The label.
    pub label: String,
    /// Ids of its examples, in the order they were added.
    pub example_ids: Vec<u64>,
}
