//! Prototype (nearest-class-mean) classifier with cosine similarity and a softmax temperature.

use ndarray::{Array2, ArrayView2};

use super::logistic::{softmax_rows_inplace, validate_queries, validate_training_data};
use crate::error::Error;

/// Default softmax temperature: cosine scores lie in `[-1, 1]`, so `1 / 0.1 = 10` spreads them
/// enough to give confident but not saturated probabilities.
pub const DEFAULT_TEMPERATURE: f64 = 0.1;

/// Each class's mean row re-normalised to unit length (`n_classes x d`; a class whose mean
/// is exactly zero, or that has no row, keeps a zero row). Labels must be `< n_classes`.
pub fn unit_class_means(
    features: ArrayView2<f64>,
    labels: &[usize],
    n_classes: usize,
) -> Array2<f64> {
    // Scaling by 1/count is unnecessary: re-normalising removes it.
    let mut means = class_sums(features, labels, n_classes);
    for mut m in means.rows_mut() {
        let norm = m.dot(&m).sqrt();
        if norm > 0.0 {
            m /= norm;
        }
    }
    means
}

/// The sum of each class's rows (`n_classes x d`; labels must be `< n_classes`).
pub(crate) fn class_sums(
    features: ArrayView2<f64>,
    labels: &[usize],
    n_classes: usize,
) -> Array2<f64> {
    let mut sums = Array2::zeros((n_classes, features.ncols()));
    for (row, &y) in features.rows().into_iter().zip(labels) {
        let mut s = sums.row_mut(y);
        s += &row;
    }
    sums
}

/// A fitted prototype classifier: one unit-norm prototype per class.
#[derive(Debug, Clone)]
pub struct PrototypeModel {
    /// `k x d`; row `j` is the re-normalised mean of class `j` (all zeros if that mean is zero).
    prototypes: Array2<f64>,
    temperature: f64,
}

impl PrototypeModel {
    /// Computes each class's mean feature and re-normalises it to unit length.
    ///
    /// A class whose mean is exactly the zero vector (e.g. two opposite examples) keeps a zero
    /// prototype, which scores 0 against every query.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `n_classes < 2`, `features` is empty, `labels.len()` differs
    /// from the number of rows, a label is `>= n_classes`, some class has no example, a feature
    /// is NaN or infinite, or `temperature` is not finite and > 0.
    pub fn fit(
        features: ArrayView2<f64>,
        labels: &[usize],
        n_classes: usize,
        temperature: f64,
    ) -> Result<Self, Error> {
        validate_training_data(features, labels, n_classes)?;
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "temperature must be finite and > 0, got {temperature}"
            )));
        }
        Ok(Self {
            prototypes: unit_class_means(features, labels, n_classes),
            temperature,
        })
    }

    /// Unit-norm class prototypes, `k x d`; row `j` belongs to class `j`.
    pub fn prototypes(&self) -> ArrayView2<'_, f64> {
        self.prototypes.view()
    }

    /// Softmax temperature.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Scores `cosine(query, prototype_j) / temperature` (`m x k`) for queries `x` (`m x d`).
    /// Queries are normalised here, so they need not be unit length; a zero query scores 0.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `x` does not have `d` columns or holds NaN / infinity.
    pub fn decision(&self, x: ArrayView2<f64>) -> Result<Array2<f64>, Error> {
        validate_queries(x, self.prototypes.ncols())?;
        let mut scores = x.dot(&self.prototypes.t());
        for (mut s, q) in scores.rows_mut().into_iter().zip(x.rows()) {
            let norm = q.dot(&q).sqrt();
            let scale = if norm > 0.0 {
                1.0 / (norm * self.temperature)
            } else {
                0.0
            };
            s *= scale;
        }
        Ok(scores)
    }

    /// Class probabilities (`m x k`, rows sum to 1): stable softmax of [`decision`](Self::decision).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `x` does not have `d` columns or holds NaN / infinity.
    pub fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Array2<f64>, Error> {
        let mut scores = self.decision(x)?;
        softmax_rows_inplace(&mut scores);
        Ok(scores)
    }
}
