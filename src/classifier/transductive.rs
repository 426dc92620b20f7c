//! Transductive prototypes: a task's class means refined with a batch of unlabelled queries.
//!
//! The unlabelled images of a batch say where each class really lies: a photo far from every
//! support example but close to many queries that resemble one class pulls that class's
//! prototype towards them. The refinement is EM on a mixture of the task's classes, chosen on
//! the miniImageNet val classes (`models/README.md`, "Transductive labelling"):
//!
//! 1. Each query gets a weight, the square of its known-probability (the open-set score of
//!    the inductive answer), so that photos of none of the task's classes barely move a
//!    prototype.
//! 2. The support rows and queries are centred on their weighted mean and re-normalised:
//!    the directions all images of a folder share (the encoder's bias) stop dominating the
//!    cosines.
//! 3. EM in the centred space from the support class means: a query's responsibilities are
//!    `softmax(BETA * cosine + ln proportion)`; a class's mean becomes the normalised sum of
//!    its support rows and of the queries by responsibility x weight; its proportion the
//!    share of the weighted responsibilities (with [`PRIOR_COUNT`] pseudo-queries each). The
//!    proportions are estimated, not assumed equal: a folder with 3 photos of one class and
//!    300 of another keeps them apart (the balanced assumption of PT+MAP's Sinkhorn step
//!    loses 5.6 points at 5 shots on unequal folders).
//! 4. The refined prototype of a class is the normalised sum, in the original (uncentred)
//!    feature space, of its support rows and of the queries by the last responsibilities x
//!    weights. Queries are then classified by their cosine to these, exactly as the
//!    prototype classifier does: the model's prototype calibration applies unchanged
//!    (the EM's own responsibilities are far too sure of themselves: 0.98 mean confidence
//!    for 66% right).
//!
//! Deterministic: sequential f64 arithmetic in a fixed order, whatever the thread count.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::logistic::softmax_rows_inplace;
use super::prototype::class_sums;
use crate::error::{Error, Result};

/// Scale on the centred cosines in the E-step (the inverse of a softmax temperature).
pub const BETA: f64 = 30.0;
/// EM iterations (the assignments settle in 10-20 on the val classes).
pub const ITERATIONS: usize = 30;
/// Pseudo-queries per class in the proportion estimate (a symmetric Dirichlet prior): no
/// class's proportion reaches 0, so no class is emptied for good by one bad step.
pub const PRIOR_COUNT: f64 = 1.0;
/// Power of the known-probability in a query's weight.
pub const KNOWN_WEIGHT_POWER: i32 = 2;
/// Queries per class a batch needs for the refinement; smaller batches get the inductive
/// answer (a handful of queries cannot tell a class's spread from noise).
pub const MIN_QUERIES_PER_CLASS: usize = 2;

/// Whether a batch of `queries` images of a task of `classes` classes is refined
/// transductively (at least [`MIN_QUERIES_PER_CLASS`] per class, and 2 classes).
pub fn applies(queries: usize, classes: usize) -> bool {
    classes >= 2 && queries >= MIN_QUERIES_PER_CLASS * classes
}

/// Refined prototypes and what the refinement estimated.
#[derive(Debug, Clone, PartialEq)]
pub struct Refined {
    /// `classes x d`, unit rows, in the space of the inputs (L2-normalised encoder features).
    pub prototypes: Array2<f64>,
    /// Estimated share of each class among the (weighted) queries; sums to 1.
    pub proportions: Vec<f64>,
}

fn normalize_rows(mut x: Array2<f64>) -> Array2<f64> {
    for mut row in x.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row /= norm;
        }
    }
    x
}

/// Refines the class means of `support` (unit rows, `labels[i] < classes`, every class
/// present) with `queries` (unit rows), each weighted by `known[i]^KNOWN_WEIGHT_POWER`
/// (`known` in [0, 1]: the probability that the query is of one of the classes at all). See
/// the module documentation.
///
/// # Errors
/// [`Error::InvalidArgument`] when the shapes disagree, a label is out of range, a class has
/// no support row, or a value is not finite.
pub fn refine_prototypes(
    support: ArrayView2<f64>,
    labels: &[usize],
    classes: usize,
    queries: ArrayView2<f64>,
    known: &[f64],
) -> Result<Refined> {
    let d = support.ncols();
    if classes < 2
        || labels.len() != support.nrows()
        || queries.ncols() != d
        || known.len() != queries.nrows()
        || labels.iter().any(|&y| y >= classes)
    {
        return Err(Error::InvalidArgument(format!(
            "transductive refinement: {} support rows with {} labels of {classes} classes, \
             {} queries x {} with {} weights, {d} columns expected",
            support.nrows(),
            labels.len(),
            queries.nrows(),
            queries.ncols(),
            known.len()
        )));
    }
    let mut counts = vec![0usize; classes];
    for &y in labels {
        counts[y] += 1;
    }
    if counts.contains(&0) {
        return Err(Error::InvalidArgument(
            "transductive refinement: a class has no support row".into(),
        ));
    }
    let finite = |x: ArrayView2<f64>| x.iter().all(|v| v.is_finite());
    if !finite(support) || !finite(queries) || known.iter().any(|k| !k.is_finite()) {
        return Err(Error::InvalidArgument(
            "transductive refinement: NaN or infinite input".into(),
        ));
    }
    let weights: Array1<f64> = known
        .iter()
        .map(|k| k.clamp(0.0, 1.0).powi(KNOWN_WEIGHT_POWER))
        .collect();

    // The weighted mean of support rows (weight 1) and queries.
    let total_weight = support.nrows() as f64 + weights.sum();
    let centre = (support.sum_axis(Axis(0)) + weights.dot(&queries)) / total_weight;
    let support_centred = normalize_rows(&support - &centre);
    let queries_centred = normalize_rows(&queries - &centre);

    let support_sums = class_sums(support_centred.view(), labels, classes);
    let mut means = normalize_rows(support_sums.clone());
    let mut log_proportions = Array1::<f64>::zeros(classes);
    let mut proportions = vec![1.0 / classes as f64; classes];
    let responsibilities = |means: &Array2<f64>, log_proportions: &Array1<f64>| {
        let mut z = queries_centred.dot(&means.t()) * BETA;
        z += log_proportions;
        softmax_rows_inplace(&mut z);
        // Weighted by how likely each query is of a task class at all.
        z * weights.view().insert_axis(Axis(1))
    };
    for _ in 0..ITERATIONS {
        let weighted = responsibilities(&means, &log_proportions);
        means = normalize_rows(&support_sums + &weighted.t().dot(&queries_centred));
        let mass = weighted.sum_axis(Axis(0));
        let denominator = mass.sum() + classes as f64 * PRIOR_COUNT;
        for (k, m) in mass.iter().enumerate() {
            proportions[k] = (m + PRIOR_COUNT) / denominator;
            log_proportions[k] = proportions[k].ln();
        }
    }
    let weighted = responsibilities(&means, &log_proportions);
    let prototypes =
        normalize_rows(class_sums(support, labels, classes) + weighted.t().dot(&queries));
    Ok(Refined {
        prototypes,
        proportions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn unit(x: Array2<f64>) -> Array2<f64> {
        normalize_rows(x)
    }

    #[test]
    fn applies_needs_two_queries_per_class() {
        assert!(!applies(9, 5));
        assert!(applies(10, 5));
        assert!(!applies(100, 1));
    }

    #[test]
    fn bad_shapes_and_values_are_errors() {
        let s = unit(array![[1.0, 0.0], [0.0, 1.0]]);
        let q = unit(array![[1.0, 0.1]]);
        assert!(refine_prototypes(s.view(), &[0, 1], 2, q.view(), &[1.0]).is_ok());
        assert!(refine_prototypes(s.view(), &[0, 0], 2, q.view(), &[1.0]).is_err());
        assert!(refine_prototypes(s.view(), &[0, 2], 2, q.view(), &[1.0]).is_err());
        assert!(refine_prototypes(s.view(), &[0, 1], 2, q.view(), &[]).is_err());
        let nan = array![[f64::NAN, 0.0]];
        assert!(refine_prototypes(s.view(), &[0, 1], 2, nan.view(), &[1.0]).is_err());
    }

    /// Queries with zero known-probability change nothing: the prototypes are the support
    /// class means.
    #[test]
    fn unknown_queries_do_not_move_the_prototypes() {
        let s = unit(array![[1.0, 0.2, 0.0], [0.1, 1.0, 0.3], [0.9, 0.0, 0.4]]);
        let q = unit(array![[0.0, 0.0, 1.0], [0.5, 0.5, 0.5], [1.0, 1.0, 0.0]]);
        let r = refine_prototypes(s.view(), &[0, 1, 0], 2, q.view(), &[0.0; 3]).unwrap();
        let expected = crate::classifier::prototype::unit_class_means(s.view(), &[0, 1, 0], 2);
        for (a, b) in r.prototypes.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-12);
        }
        assert_eq!(r.proportions, vec![0.5, 0.5]);
    }
}
