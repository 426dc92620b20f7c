//! Multinomial logistic-regression head for few-shot tasks.
//!
//! Reproduces scikit-learn's `LogisticRegression(C, solver="lbfgs")` (multinomial) solution,
//! i.e. the minimiser of
//!
//! ```text
//! sum_i -log softmax(W x_i + b)[y_i] + (alpha / 2) * ||W||_F^2,   alpha = 1 / C, b unregularised
//! ```
//!
//! The fit is done by `linfa-logistic` (`MultiLogisticRegression`, L-BFGS from `argmin`).
//! `linfa-logistic` 0.8 minimises exactly this objective (sum, not mean, of the log-losses,
//! `alpha / 2 * ||W||^2`, intercept row excluded from the penalty), so `alpha` is passed through
//! unchanged. scikit-learn divides the objective by `n`, which does not move the optimum.
//!
//! Speed trick (exact): with `n` support vectors in `d` dimensions (`n << d`) the optimum `W`
//! lies in the row span of `X` (the gradient `G^T X + alpha W` vanishes only there, and the loss
//! does not see components orthogonal to it). With an orthonormal basis `Q` (`r x d`,
//! `r <= n`) of that span, we fit on `Z = X Q^T` (`n x r`) with the same `alpha`
//! (`||B||_F = ||B Q||_F` for orthonormal rows) and map back with `W = B Q`.

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::error::Error;

/// Relative tolerance for the rank-revealing Gram–Schmidt: a support vector whose residual
/// (after projecting out the basis so far) is below this fraction of its norm adds no new
/// direction. Catches duplicate and colinear support vectors; the dropped component is at the
/// round-off level, so the span trick stays exact to well below the parity bounds.
const RANK_TOLERANCE: f64 = 1e-10;

/// Solver settings for [`LogisticModel::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticConfig {
    /// L2 penalty on the weights, `alpha = 1 / C` in scikit-learn terms. Must be finite and > 0.
    pub alpha: f64,
    /// Upper bound on L-BFGS iterations per linfa run. Must be >= 1.
    pub max_iterations: u64,
    /// Convergence tolerance. Passed to linfa as its gradient (L2-norm) stopping tolerance
    /// (raised to [`solver_tolerance_floor`] when below it), and used after the fit to decide
    /// [`LogisticModel::converged`] from the max-abs gradient of the full `d`-dimensional
    /// objective. Must be finite and > 0.
    pub gradient_tolerance: f64,
}

impl Default for LogisticConfig {
    /// `alpha = 1` (scikit-learn `C = 1`), `max_iterations = 1000`, `gradient_tolerance = 1e-6`.
    ///
    /// linfa's own defaults (100 iterations, gradient tolerance 1e-4) stop far too early for
    /// parity with scikit-learn at `tol = 1e-8` (`proba` within 1e-5 needs a gradient of about
    /// 1e-6). 1e-6 keeps the fixtures' parity errors below 1e-6; much tighter is not reliably
    /// reachable: argmin's More-Thuente line search works on cost values of size ~n, whose
    /// round-off (~n * 1e-16) is reached at gradients of ~1e-7, where runs end early (seen on
    /// a 50-sample problem stalling at 1.4e-7). The reduced problem converges in ~5-15
    /// iterations, so 1000 is only a safety cap.
    fn default() -> Self {
        Self {
            alpha: 1.0,
            max_iterations: 1000,
            gradient_tolerance: 1e-6,
        }
    }
}

/// A fitted multinomial logistic-regression model.
#[derive(Debug, Clone)]
pub struct LogisticModel {
    /// Weights, `k x d`; row `j` belongs to class `j`.
    coef: Array2<f64>,
    /// Intercepts, `k`, centred to sum to zero (softmax is invariant to a common shift).
    intercept: Array1<f64>,
    converged: bool,
    grad_max_abs: f64,
    iterations: Option<u64>,
}

impl LogisticModel {
    /// Fits the model on `features` (`n x d`, one row per support example) with class indices
    /// `labels` (`n`, each `< n_classes`).
    ///
    /// The fit itself is done by `linfa-logistic` on the span-reduced problem; afterwards the
    /// gradient of the full objective is recomputed to set [`converged`](Self::converged).
    /// Non-convergence is reported, not an error.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `n_classes < 2`, `features` is empty, `labels.len()` differs
    /// from the number of rows, a label is `>= n_classes`, some class has no example, a feature
    /// is NaN or infinite, `alpha` or `gradient_tolerance` is not finite and > 0,
    /// `max_iterations` is 0, or linfa reports a failure.
    pub fn fit(
        features: ArrayView2<f64>,
        labels: &[usize],
        n_classes: usize,
        config: &LogisticConfig,
    ) -> Result<Self, Error> {
        validate_training_data(features, labels, n_classes)?;
        validate_config(config)?;

        // Fast path: Cholesky of the Gram matrix (GEMM-speed). It is only taken when every
        // support vector is well independent of the previous ones; otherwise (duplicates,
        // near-colinear rows) the rank-revealing Gram-Schmidt basis is used.
        let mut best: Option<Self> = None;
        if let Some(reduction) = Reduction::cholesky(features) {
            let model = fit_reduction(features, labels, n_classes, config, &reduction)?;
            if model.converged {
                return Ok(model);
            }
            best = Some(model);
        }
        let reduction = Reduction::gram_schmidt(features);
        let model = fit_reduction(features, labels, n_classes, config, &reduction)?;
        Ok(match best {
            Some(b) if b.grad_max_abs < model.grad_max_abs => b,
            _ => model,
        })
    }

    /// Builds the model from full-space `coef` (`k x d`) and `intercept`, centring the
    /// intercept and evaluating the full-objective gradient.
    fn from_full(
        features: ArrayView2<f64>,
        labels: &[usize],
        coef: Array2<f64>,
        intercept: Array1<f64>,
        config: &LogisticConfig,
    ) -> Self {
        let mean = intercept.mean().unwrap_or(0.0);
        let intercept = intercept.mapv(|v| v - mean);
        let grad_max_abs = full_gradient_max_abs(
            features,
            labels,
            coef.view(),
            intercept.view(),
            config.alpha,
        );
        Self {
            coef,
            intercept,
            converged: grad_max_abs <= config.gradient_tolerance,
            grad_max_abs,
            // linfa-logistic 0.8 drops argmin's iteration count: not available.
            iterations: None,
        }
    }

    /// Weights, `k x d`; row `j` belongs to class `j`.
    pub fn coef(&self) -> ArrayView2<'_, f64> {
        self.coef.view()
    }

    /// Intercepts, `k`, centred to sum to zero (they are only defined up to a common shift).
    pub fn intercept(&self) -> ArrayView1<'_, f64> {
        self.intercept.view()
    }

    /// Whether the max-abs gradient of the full objective at the solution is within the
    /// configured `gradient_tolerance`.
    pub fn converged(&self) -> bool {
        self.converged
    }

    /// Max-abs gradient of the full objective (w.r.t. `W` and `b`) at the solution.
    pub fn grad_max_abs(&self) -> f64 {
        self.grad_max_abs
    }

    /// L-BFGS iteration count, if the solver exposes it. `linfa-logistic` 0.8 does not, so this
    /// is currently always `None`.
    pub fn iterations(&self) -> Option<u64> {
        self.iterations
    }

    /// Number of classes `k`.
    pub fn n_classes(&self) -> usize {
        self.coef.nrows()
    }

    /// Feature dimension `d`.
    pub fn dim(&self) -> usize {
        self.coef.ncols()
    }

    /// Decision values `x W^T + b` (`m x k`) for queries `x` (`m x d`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `x` does not have `d` columns or holds NaN / infinity.
    pub fn decision(&self, x: ArrayView2<f64>) -> Result<Array2<f64>, Error> {
        validate_queries(x, self.dim())?;
        Ok(self.decision_unchecked(x))
    }

    /// Class probabilities (`m x k`, rows sum to 1) for queries `x` (`m x d`): a numerically
    /// stable softmax of [`decision`](Self::decision).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `x` does not have `d` columns or holds NaN / infinity.
    pub fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Array2<f64>, Error> {
        let mut scores = self.decision(x)?;
        softmax_rows_inplace(&mut scores);
        Ok(scores)
    }

    fn decision_unchecked(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let mut scores = x.dot(&self.coef.t());
        scores += &self.intercept;
        scores
    }
}

/// Upper bound on warm-started linfa runs per reduction.
const MAX_RUNS: usize = 3;

/// Smallest accepted Cholesky pivot, relative to the row's squared norm: the squared residual
/// of a support vector after projecting out the previous ones. Below it (residual < 1e-4 of
/// the norm) the Gram-based basis could lose orthonormality (error ~ EPSILON / pivot), so the
/// Gram-Schmidt path is used instead.
const CHOLESKY_MIN_PIVOT: f64 = 1e-8;

/// Fits on one reduction, warm-starting linfa again if a run stops short of the tolerance.
fn fit_reduction(
    features: ArrayView2<f64>,
    labels: &[usize],
    n_classes: usize,
    config: &LogisticConfig,
    reduction: &Reduction,
) -> Result<LogisticModel, Error> {
    // Repeated linfa runs, each warm-started from the previous solution: a fresh L-BFGS
    // memory gets past an early exit (More-Thuente line-search failure, or argmin's absolute
    // cost-change test |f_prev - f| < EPSILON) that can stop a run before the gradient
    // tolerance is met. Normally the first run already converges.
    let solver_tolerance = config.gradient_tolerance.max(solver_tolerance_floor(
        reduction.z.view(),
        n_classes,
        config.alpha,
    ));
    let mut warm: Option<Array2<f64>> = None;
    let mut best: Option<LogisticModel> = None;
    for _ in 0..MAX_RUNS {
        let (b, c) = fit_reduced(
            reduction.z.view(),
            labels,
            n_classes,
            config,
            solver_tolerance,
            warm.take(),
        )?;
        // Undo the centring: logits = (Z - 1 m) B + c' = Z B + (c' - B^T m).
        let intercept = &c - &reduction.mean.dot(&b);
        let coef = reduction.lift(features, b.view());
        let model = LogisticModel::from_full(features, labels, coef, intercept, config);
        warm = Some(stack_params(b.view(), c.view()));
        let done = model.converged;
        if best
            .as_ref()
            .is_none_or(|m| model.grad_max_abs < m.grad_max_abs)
        {
            best = Some(model);
        }
        if done {
            break;
        }
    }
    best.ok_or_else(|| Error::InvalidArgument("logistic regression produced no model".into()))
}

/// How to map reduced weights `B` (`r x k`) back to `W` (`k x d`).
enum Lift {
    /// Explicit orthonormal rows `Q` (`r x d`): `W = B^T Q`.
    Basis(Array2<f64>),
    /// Cholesky factor `L` (`n x n`) of `X X^T`; `Q = L^-1 X` is implicit: `W = (L^-T B)^T X`.
    Cholesky(Array2<f64>),
}

/// The span-reduced problem: `Z = X Q^T` with its column means removed.
struct Reduction {
    /// Centred reduced features, `n x r`.
    z: Array2<f64>,
    /// Column means of `X Q^T` that were removed (`r`).
    mean: Array1<f64>,
    lift: Lift,
}

impl Reduction {
    /// Centring the reduced features is an exact reparametrisation (the unpenalised intercept
    /// absorbs the shift) that decouples the intercept from the weights: L-BFGS then needs
    /// about a third fewer iterations.
    fn new(z: Array2<f64>, lift: Lift) -> Self {
        let mean = z
            .mean_axis(Axis(0))
            .unwrap_or_else(|| Array1::zeros(z.ncols()));
        let z = &z - &mean;
        Self { z, mean, lift }
    }

    /// Gram-matrix route: `X X^T = L L^T` gives `Z = X Q^T = L` for `Q = L^-1 X`, whose rows are
    /// orthonormal. `None` if a pivot is too small (rank deficiency or ill conditioning).
    fn cholesky(x: ArrayView2<f64>) -> Option<Self> {
        let gram = x.dot(&x.t());
        let n = gram.nrows();
        let mut l = Array2::<f64>::zeros((n, n));
        for j in 0..n {
            let head_j = l.row(j).slice(ndarray::s![..j]).to_owned();
            let pivot = gram[[j, j]] - head_j.dot(&head_j);
            // Inputs are finite (validated), so `pivot` is too; a zero row gives 0 <= 0.
            if pivot <= CHOLESKY_MIN_PIVOT * gram[[j, j]] {
                return None;
            }
            let diag = pivot.sqrt();
            l[[j, j]] = diag;
            for i in j + 1..n {
                let dot = l.row(i).slice(ndarray::s![..j]).dot(&head_j);
                l[[i, j]] = (gram[[i, j]] - dot) / diag;
            }
        }
        Some(Self::new(l.clone(), Lift::Cholesky(l)))
    }

    /// Rank-revealing modified Gram-Schmidt route (handles duplicates / colinear rows).
    fn gram_schmidt(x: ArrayView2<f64>) -> Self {
        let q = row_span_basis(x);
        let z = x.dot(&q.t());
        Self::new(z, Lift::Basis(q))
    }

    /// `W` (`k x d`) from reduced weights `b` (`r x k`).
    fn lift(&self, x: ArrayView2<f64>, b: ArrayView2<f64>) -> Array2<f64> {
        match &self.lift {
            Lift::Basis(q) => b.t().dot(q),
            Lift::Cholesky(l) => {
                // Back substitution for L^T A = B (L^T is upper triangular, diagonal > 0).
                let n = l.nrows();
                let mut a = b.to_owned();
                for i in (0..n).rev() {
                    for j in i + 1..n {
                        let (upper, lower) = a.view_mut().split_at(Axis(0), j);
                        let mut ai = upper.index_axis_move(Axis(0), i);
                        ai.scaled_add(-l[[j, i]], &lower.row(0));
                    }
                    let mut ai = a.row_mut(i);
                    ai /= l[[i, i]];
                }
                a.t().dot(&x)
            }
        }
    }
}

/// The smallest gradient (L2 norm) the solver is asked to reach on the centred reduced
/// features `z` with `n_classes` classes: `sqrt(eps * f0 * h)`, with `f0 = n ln k` the cost at
/// zero weights (an upper bound of the cost along the run) and `h = alpha + trace(z^T z) / 2`
/// an upper bound of the Hessian's norm. Below it one L-BFGS step can only lower the cost by
/// about `g^2 / h < eps * f0`, its round-off: argmin's More-Thuente line search then never
/// terminates (its inner run has no iteration cap, argmin issue #497; a fuzzed task file with
/// `gradient_tolerance = 1e-9` hung `fit` this way). Requests below the floor are raised to
/// it; [`LogisticModel::converged`] still reports against the caller's tolerance.
pub fn solver_tolerance_floor(z: ArrayView2<f64>, n_classes: usize, alpha: f64) -> f64 {
    let f0 = z.nrows() as f64 * (n_classes as f64).ln();
    let h = alpha + 0.5 * z.iter().map(|v| v * v).sum::<f64>();
    (f64::EPSILON * f0 * h).sqrt()
}

/// Runs linfa on the reduced problem, stopping at gradient norm `solver_tolerance`, and
/// returns `(B: r x k, c: k)` with column `j` = class `j`.
fn fit_reduced(
    z: ArrayView2<f64>,
    labels: &[usize],
    n_classes: usize,
    config: &LogisticConfig,
    solver_tolerance: f64,
    initial: Option<Array2<f64>>,
) -> Result<(Array2<f64>, Array1<f64>), Error> {
    let mut params = MultiLogisticRegression::<f64>::default()
        .alpha(config.alpha)
        .max_iterations(config.max_iterations)
        .gradient_tolerance(solver_tolerance);
    if let Some(init) = initial {
        params = params.initial_params(init);
    }
    let dataset = DatasetBase::new(z, ArrayView1::from(labels));
    let fitted = params
        .fit(&dataset)
        .map_err(|e| Error::InvalidArgument(format!("linfa-logistic fit failed: {e}")))?;

    // linfa sorts the distinct labels and uses that order for its columns. Every class is
    // present (validated), so this is the identity, but map explicitly rather than rely on it.
    let classes = fitted.classes();
    if classes.len() != n_classes {
        return Err(Error::InvalidArgument(format!(
            "linfa-logistic returned {} classes, expected {n_classes}",
            classes.len()
        )));
    }
    let (src_b, src_c) = (fitted.params(), fitted.intercept());
    let mut b = Array2::zeros((z.ncols(), n_classes));
    let mut c = Array1::zeros(n_classes);
    for (col, &class) in classes.iter().enumerate() {
        if class >= n_classes {
            return Err(Error::InvalidArgument(format!(
                "linfa-logistic returned unknown class {class}"
            )));
        }
        b.column_mut(class).assign(&src_b.column(col));
        c[class] = src_c[col];
    }
    Ok((b, c))
}

/// linfa's parameter layout: `(r + 1) x k`, intercept as the last row.
fn stack_params(b: ArrayView2<f64>, c: ArrayView1<f64>) -> Array2<f64> {
    let mut p = Array2::zeros((b.nrows() + 1, b.ncols()));
    p.slice_mut(ndarray::s![..b.nrows(), ..]).assign(&b);
    p.row_mut(b.nrows()).assign(&c);
    p
}

/// Orthonormal basis (`r x d`, rows) of the row span of `x`, by modified Gram–Schmidt with
/// re-orthogonalisation ("twice is enough") and a relative rank tolerance. Returns a single
/// zero row when `x` is all zeros, so the reduced problem keeps one (inert) column.
fn row_span_basis(x: ArrayView2<f64>) -> Array2<f64> {
    let mut basis: Vec<Array1<f64>> = Vec::with_capacity(x.nrows());
    for row in x.rows() {
        let norm0 = row.dot(&row).sqrt();
        if norm0 == 0.0 {
            continue;
        }
        let mut v = row.to_owned();
        for _ in 0..2 {
            for q in &basis {
                let proj = q.dot(&v);
                v.scaled_add(-proj, q);
            }
        }
        let norm = v.dot(&v).sqrt();
        if norm > RANK_TOLERANCE * norm0 {
            v /= norm;
            basis.push(v);
        }
    }
    let d = x.ncols();
    if basis.is_empty() {
        return Array2::zeros((1, d));
    }
    let mut q = Array2::zeros((basis.len(), d));
    for (mut dst, src) in q.rows_mut().into_iter().zip(&basis) {
        dst.assign(src);
    }
    q
}

/// Max-abs gradient of `sum_i -log softmax(W x_i + b)[y_i] + alpha/2 ||W||^2` w.r.t. `W`
/// (`(P - Y)^T X + alpha W`) and `b` (`sum_i (P - Y)_i`).
fn full_gradient_max_abs(
    x: ArrayView2<f64>,
    labels: &[usize],
    coef: ArrayView2<f64>,
    intercept: ArrayView1<f64>,
    alpha: f64,
) -> f64 {
    let mut g = x.dot(&coef.t());
    g += &intercept;
    softmax_rows_inplace(&mut g);
    for (mut row, &y) in g.rows_mut().into_iter().zip(labels) {
        row[y] -= 1.0;
    }
    let mut grad_w = g.t().dot(&x);
    grad_w.scaled_add(alpha, &coef);
    let grad_b = g.sum_axis(Axis(0));
    grad_w
        .iter()
        .chain(grad_b.iter())
        .fold(0.0_f64, |m, v| m.max(v.abs()))
}

/// Replaces each row with its softmax, subtracting the row max first for stability.
pub(crate) fn softmax_rows_inplace(scores: &mut Array2<f64>) {
    for mut row in scores.rows_mut() {
        let max = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row /= sum;
    }
}

/// Shared training-input validation for the classifiers.
///
/// # Errors
/// [`Error::InvalidArgument`] if `n_classes < 2`, `features` has no rows or columns, the label
/// count differs from the row count, a label is out of range, a class has no example, or a
/// feature is not finite.
pub(crate) fn validate_training_data(
    features: ArrayView2<f64>,
    labels: &[usize],
    n_classes: usize,
) -> Result<(), Error> {
    if n_classes < 2 {
        return Err(Error::InvalidArgument(format!(
            "need at least 2 classes, got {n_classes}"
        )));
    }
    let (n, d) = features.dim();
    if n == 0 || d == 0 {
        return Err(Error::InvalidArgument(format!(
            "features must be non-empty, got shape ({n}, {d})"
        )));
    }
    if labels.len() != n {
        return Err(Error::InvalidArgument(format!(
            "{} labels for {n} feature rows",
            labels.len()
        )));
    }
    let mut counts = vec![0usize; n_classes];
    for (i, &y) in labels.iter().enumerate() {
        match counts.get_mut(y) {
            Some(c) => *c += 1,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "label {y} at index {i} is out of range for {n_classes} classes"
                )))
            }
        }
    }
    if let Some(empty) = counts.iter().position(|&c| c == 0) {
        return Err(Error::InvalidArgument(format!(
            "class {empty} has no training example"
        )));
    }
    if !all_finite(features) {
        return Err(Error::InvalidArgument(
            "features contain NaN or infinite values".into(),
        ));
    }
    Ok(())
}

/// Shared query validation: `d` columns, all finite.
///
/// # Errors
/// [`Error::InvalidArgument`] on a column-count mismatch or a non-finite value.
pub(crate) fn validate_queries(x: ArrayView2<f64>, dim: usize) -> Result<(), Error> {
    if x.ncols() != dim {
        return Err(Error::InvalidArgument(format!(
            "queries have {} columns, model expects {dim}",
            x.ncols()
        )));
    }
    if !all_finite(x) {
        return Err(Error::InvalidArgument(
            "queries contain NaN or infinite values".into(),
        ));
    }
    Ok(())
}

/// Whether every element is finite. Branch-free over contiguous memory so it vectorises:
/// `Iterator::any` on 48k query values cost as much as the whole softmax head.
fn all_finite(x: ArrayView2<f64>) -> bool {
    match x.as_slice_memory_order() {
        Some(s) => s
            .chunks(64)
            .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite())),
        None => x.iter().all(|v| v.is_finite()),
    }
}

fn validate_config(config: &LogisticConfig) -> Result<(), Error> {
    if !(config.alpha.is_finite() && config.alpha > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "alpha must be finite and > 0, got {}",
            config.alpha
        )));
    }
    if !(config.gradient_tolerance.is_finite() && config.gradient_tolerance > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "gradient_tolerance must be finite and > 0, got {}",
            config.gradient_tolerance
        )));
    }
    if config.max_iterations == 0 {
        return Err(Error::InvalidArgument("max_iterations must be >= 1".into()));
    }
    Ok(())
}
