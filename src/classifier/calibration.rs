//! Confidence that means what it says: per-model calibration of the classifiers' probabilities
//! and of an open-set ("is this one of the task's classes at all?") score, both fitted on
//! episodes of the model's training classes and stored in its metadata (key `calibration`).
//!
//! - Class probabilities: `softmax(s * z)` where `z` are the classifier's raw scores (logistic
//!   regression: its decision function; prototype: cosine similarities) and
//!   `s = exp(a + b ln(ways) + c ln(shots))`, a temperature that depends on the task's shape.
//!   Scaling never changes which class wins.
//! - Known probability: `sigmoid(w0 + w1 m + w2 ln(ways) + w3 ln(shots))` with `m` the query's
//!   largest cosine similarity to a class prototype (the class means of the support set).
//!
//! Both are fitted for the test-time augmentation a model recommends (its `task_defaults`):
//! augmented copies change the scores (logistic regression fits on five rows per example
//! instead of one), so a model that recommends augmentation also carries the functions fitted
//! without it ([`Calibration::unaugmented`]) and a task picks by its own setting
//! ([`Calibration::for_copies`]).
//!
//! Also the two measures they are judged by: the expected calibration error and the open-set
//! AUROC (`docs/cli.md`, "Confidence"; `models/README.md`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, ModelProblem, Result};

/// `s(ways, shots) = exp(a + b ln ways + c ln shots)`: the factor on a classifier's raw scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScaleFn {
    /// Intercept.
    pub a: f64,
    /// Coefficient of ln(ways).
    pub b: f64,
    /// Coefficient of ln(shots).
    pub c: f64,
}

impl ScaleFn {
    /// The factor for a task of `ways` classes with `shots` examples per class on average.
    pub fn scale(&self, ways: f64, shots: f64) -> f64 {
        (self.a + self.b * ways.max(1.0).ln() + self.c * shots.max(1.0).ln()).exp()
    }
}

/// `P(known) = sigmoid(w[0] + w[1] m + w[2] ln ways + w[3] ln shots)`, `m` the largest cosine
/// similarity of the query to a class prototype.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OpenSetFn {
    /// Weights of (1, m, ln ways, ln shots).
    pub w: [f64; 4],
}

impl OpenSetFn {
    /// Probability that a query whose best prototype similarity is `max_cos` belongs to one of
    /// the task's classes.
    pub fn known_probability(&self, max_cos: f64, ways: f64, shots: f64) -> f64 {
        sigmoid(self.dot(&features(max_cos, ways, shots)))
    }

    fn dot(&self, x: &[f64; 4]) -> f64 {
        self.w.iter().zip(x).map(|(w, x)| w * x).sum()
    }
}

fn features(max_cos: f64, ways: f64, shots: f64) -> [f64; 4] {
    [1.0, max_cos, ways.max(1.0).ln(), shots.max(1.0).ln()]
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// A model's calibration (metadata key `calibration`, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Format version (1).
    pub version: u32,
    /// Scale on logistic regression's decision function.
    pub logistic: ScaleFn,
    /// Scale on the prototype classifier's cosine similarities.
    pub prototype: ScaleFn,
    /// The open-set score.
    pub open_set: OpenSetFn,
    /// How it was fitted: episodes, the ways and shots drawn, the classes used, the task's
    /// augmentation settings (no paths).
    pub fitted_on: serde_json::Value,
    /// The same functions fitted on tasks without test-time augmentation, when the ones above
    /// are fitted with it (a model that recommends augmented copies); `None` otherwise, and in
    /// files written before it existed. Never nested further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unaugmented: Option<Box<Calibration>>,
}

/// The metadata key holding a [`Calibration`].
pub const METADATA_KEY: &str = "calibration";

impl Calibration {
    /// Parses the metadata value.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] ([`ModelProblem::BadMetadata`]) for malformed JSON, an unknown
    /// version or a non-finite coefficient (in either set of functions), or an `unaugmented`
    /// set that has one of its own.
    pub fn from_metadata(text: &str) -> Result<Self> {
        let c: Calibration = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        c.validate()?;
        if let Some(plain) = &c.unaugmented {
            plain.validate()?;
            if plain.unaugmented.is_some() {
                return Err(bad("nested unaugmented calibration".into()));
            }
        }
        Ok(c)
    }

    /// The functions for a task with `augmented_copies` copies of each support image
    /// ([`TaskConfig::augmented_copies`](crate::TaskConfig::augmented_copies)): the
    /// unaugmented ones for a task without copies when the model has them, these otherwise.
    pub fn for_copies(&self, augmented_copies: usize) -> &Calibration {
        match &self.unaugmented {
            Some(plain) if augmented_copies == 0 => plain,
            _ => self,
        }
    }

    fn validate(&self) -> Result<()> {
        let c = self;
        if c.version != 1 {
            return Err(bad(format!("unknown version {}", c.version)));
        }
        let coefficients = [
            c.logistic.a,
            c.logistic.b,
            c.logistic.c,
            c.prototype.a,
            c.prototype.b,
            c.prototype.c,
        ];
        if coefficients
            .iter()
            .chain(&c.open_set.w)
            .any(|v| !v.is_finite())
        {
            return Err(bad("non-finite coefficient".into()));
        }
        Ok(())
    }

    /// The metadata value.
    pub fn to_metadata(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn bad(message: String) -> Error {
    Error::model(ModelProblem::BadMetadata, format!("calibration: {message}"))
}

/// One calibration episode's answers from one classifier: raw scores of each query (row-major
/// `queries x ways`) and the true class of each.
#[derive(Debug, Clone)]
pub struct EpisodeScores {
    /// Classes in the episode.
    pub ways: usize,
    /// Support examples per class.
    pub shots: usize,
    /// `queries x ways` raw scores.
    pub scores: Vec<f64>,
    /// True class of each query.
    pub labels: Vec<usize>,
}

/// Fits `s(ways, shots)` by minimising the mean negative log-likelihood of
/// `softmax(s * scores)` over the episodes (gradient descent with backtracking on the three
/// coefficients, from `s = 1`).
///
/// # Errors
/// [`Error::InvalidArgument`] for no episodes or inconsistent shapes.
pub fn fit_scale(episodes: &[EpisodeScores]) -> Result<ScaleFn> {
    let rows: usize = episodes.iter().map(|e| e.labels.len()).sum();
    if rows == 0
        || episodes
            .iter()
            .any(|e| e.scores.len() != e.labels.len() * e.ways)
    {
        return Err(Error::InvalidArgument(
            "calibration needs episodes with queries".into(),
        ));
    }
    // Mean NLL and its gradient in (a, b, c).
    let eval = |p: [f64; 3]| -> (f64, [f64; 3]) {
        let f = ScaleFn {
            a: p[0],
            b: p[1],
            c: p[2],
        };
        let (mut nll, mut grad) = (0.0, [0.0; 3]);
        for e in episodes {
            let (lw, ls) = ((e.ways as f64).ln(), (e.shots.max(1) as f64).ln());
            let s = f.scale(e.ways as f64, e.shots as f64);
            for (row, &y) in e.scores.chunks_exact(e.ways).zip(&e.labels) {
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(s * v));
                let sum: f64 = row.iter().map(|&v| (s * v - max).exp()).sum();
                let mean_z: f64 = row.iter().map(|&v| (s * v - max).exp() / sum * v).sum();
                nll += max + sum.ln() - s * row[y];
                // d nll / d ln s = s (E_p[z] - z_y).
                let g = s * (mean_z - row[y]);
                grad[0] += g;
                grad[1] += g * lw;
                grad[2] += g * ls;
            }
        }
        let n = rows as f64;
        (nll / n, grad.map(|g| g / n))
    };
    let mut p = [0.0; 3];
    let (mut value, mut grad) = eval(p);
    let mut step = 1.0;
    for _ in 0..500 {
        let norm: f64 = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if norm < 1e-9 {
            break;
        }
        let mut accepted = false;
        while step > 1e-12 {
            let q = [0, 1, 2].map(|i| p[i] - step * grad[i]);
            let (v, g) = eval(q);
            if v <= value - 1e-4 * step * norm * norm {
                (p, value, grad) = (q, v, g);
                step *= 2.0;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    Ok(ScaleFn {
        a: p[0],
        b: p[1],
        c: p[2],
    })
}

/// One open-set calibration sample: a query's best prototype similarity in a task of `ways`
/// classes and `shots` shots, and whether its class was one of them.
#[derive(Debug, Clone, Copy)]
pub struct OpenSetSample {
    /// Largest cosine similarity to a prototype.
    pub max_cos: f64,
    /// Classes of the task.
    pub ways: usize,
    /// Shots per class.
    pub shots: usize,
    /// Whether the query's class is in the task.
    pub known: bool,
}

/// Fits [`OpenSetFn`] by logistic regression (Newton's method, a small ridge for stability).
///
/// # Errors
/// [`Error::InvalidArgument`] unless both known and unknown samples are given.
pub fn fit_open_set(samples: &[OpenSetSample]) -> Result<OpenSetFn> {
    if !samples.iter().any(|s| s.known) || samples.iter().all(|s| s.known) {
        return Err(Error::InvalidArgument(
            "open-set calibration needs known and unknown queries".into(),
        ));
    }
    let n = samples.len() as f64;
    let mut w = [0.0; 4];
    for _ in 0..50 {
        let mut grad = [0.0; 4];
        let mut hess = [[0.0; 4]; 4];
        for s in samples {
            let x = features(s.max_cos, s.ways as f64, s.shots as f64);
            let p = sigmoid(OpenSetFn { w }.dot(&x));
            let r = p - f64::from(u8::from(s.known));
            for i in 0..4 {
                grad[i] += r * x[i] / n;
                for j in 0..4 {
                    hess[i][j] += p * (1.0 - p) * x[i] * x[j] / n;
                }
            }
        }
        for (i, row) in hess.iter_mut().enumerate() {
            row[i] += 1e-6;
            grad[i] += 1e-6 * w[i];
        }
        let Some(delta) = solve4(hess, grad) else {
            break;
        };
        for (wi, d) in w.iter_mut().zip(delta) {
            *wi -= d;
        }
        if delta.iter().map(|d| d.abs()).fold(0.0, f64::max) < 1e-10 {
            break;
        }
    }
    Ok(OpenSetFn { w })
}

/// Solves `a x = b` (4x4, Gaussian elimination with partial pivoting).
fn solve4(mut a: [[f64; 4]; 4], mut b: [f64; 4]) -> Option<[f64; 4]> {
    for col in 0..4 {
        let pivot = (col..4).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..4 {
            let f = a[row][col] / pivot_row[col];
            for (v, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 4];
    for row in (0..4).rev() {
        let tail: f64 = (row + 1..4).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    Some(x)
}

/// Expected calibration error of answers with top probabilities `confidence` and correctness
/// `correct`: over `bins` equal-width bins of the confidence, the sum of
/// `(n_bin / n) |accuracy_bin - mean confidence_bin|` (the evaluation uses 15 bins). A
/// confidence of exactly 1 falls in the last bin. 0 for no answers.
pub fn expected_calibration_error(confidence: &[f64], correct: &[bool], bins: usize) -> f64 {
    let n = confidence.len().min(correct.len());
    if n == 0 || bins == 0 {
        return 0.0;
    }
    let mut count = vec![0usize; bins];
    let mut conf_sum = vec![0f64; bins];
    let mut hits = vec![0usize; bins];
    for (&p, &ok) in confidence.iter().zip(correct) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf_sum[b] += p;
        hits[b] += usize::from(ok);
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let c = count[b] as f64;
            (c / n as f64) * (hits[b] as f64 / c - conf_sum[b] / c).abs()
        })
        .sum()
}

/// Area under the ROC curve of telling `known` scores from `unknown` ones: the probability
/// that a known score is above an unknown one, ties counting half. 0.5 when either is empty.
pub fn auroc(known: &[f64], unknown: &[f64]) -> f64 {
    if known.is_empty() || unknown.is_empty() {
        return 0.5;
    }
    // Rank-sum (Mann-Whitney U) with average ranks for ties.
    let mut all: Vec<(f64, bool)> = known
        .iter()
        .map(|&v| (v, true))
        .chain(unknown.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_known = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_known += average_rank * all[i..=j].iter().filter(|e| e.1).count() as f64;
        i = j + 1;
    }
    let (nk, nu) = (known.len() as f64, unknown.len() as f64);
    (rank_sum_known - nk * (nk + 1.0) / 2.0) / (nk * nu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_matches_a_hand_computation() {
        // 15 bins of width 1/15. Answers: 0.95 (right), 0.95 (wrong) -> bin 14: acc 0.5, conf
        // 0.95, gap 0.45, weight 2/5; 0.5 (right) -> bin 7: gap 0.5, weight 1/5; 0.2 (wrong),
        // 0.21 (wrong) -> bin 3: acc 0, conf 0.205, weight 2/5.
        let conf = [0.95, 0.95, 0.5, 0.2, 0.21];
        let ok = [true, false, true, false, false];
        let expected = 0.4 * 0.45 + 0.2 * 0.5 + 0.4 * 0.205;
        assert!((expected_calibration_error(&conf, &ok, 15) - expected).abs() < 1e-12);
        assert_eq!(expected_calibration_error(&[1.0], &[true], 15), 0.0);
        assert_eq!(expected_calibration_error(&[], &[], 15), 0.0);
    }

    #[test]
    fn auroc_counts_pairs_and_half_ties() {
        assert_eq!(auroc(&[0.9, 0.8], &[0.1, 0.2]), 1.0);
        assert_eq!(auroc(&[0.1], &[0.9]), 0.0);
        // Pairs (known, unknown): (0.5, 0.5) tie = 0.5, (0.5, 0.1) = 1, (0.3, 0.5) = 0,
        // (0.3, 0.1) = 1 -> 2.5 / 4.
        assert_eq!(auroc(&[0.5, 0.3], &[0.5, 0.1]), 0.625);
    }

    /// xorshift64* with Box-Muller normals: enough randomness for a test.
    struct TestRng(u64);

    impl TestRng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let u = self.uniform().max(1e-300);
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
        }
    }

    #[test]
    fn the_fitted_scale_recovers_a_known_temperature() {
        // Queries drawn from softmax(4 * z) with z in a fixed pattern: the NLL optimum is s = 4
        // at every shape, i.e. a = ln 4, b = c = 0 (up to sampling noise).
        let mut rng = TestRng(0x9e37_79b9_7f4a_7c15);
        let mut episodes = Vec::new();
        for &(ways, shots) in &[(2, 1), (5, 1), (5, 5), (10, 2)] {
            let mut scores = Vec::new();
            let mut labels = Vec::new();
            for _ in 0..4000 {
                let z: Vec<f64> = (0..ways).map(|_| rng.normal()).collect();
                let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(4.0 * v));
                let w: Vec<f64> = z.iter().map(|&v| (4.0 * v - max).exp()).collect();
                let total: f64 = w.iter().sum();
                let mut u = rng.uniform() * total;
                let mut y = ways - 1;
                for (k, wk) in w.iter().enumerate() {
                    if u < *wk {
                        y = k;
                        break;
                    }
                    u -= wk;
                }
                scores.extend(z);
                labels.push(y);
            }
            episodes.push(EpisodeScores {
                ways,
                shots,
                scores,
                labels,
            });
        }
        let f = fit_scale(&episodes).unwrap();
        for &(ways, shots) in &[(2.0, 1.0), (5.0, 5.0), (10.0, 2.0)] {
            let s = f.scale(ways, shots);
            assert!((s - 4.0).abs() < 0.25, "scale {s} at {ways}/{shots}");
        }
    }

    #[test]
    fn open_set_fit_separates_by_similarity() {
        let mut samples = Vec::new();
        for i in 0..200 {
            let m = i as f64 / 200.0;
            samples.push(OpenSetSample {
                max_cos: m,
                ways: 5,
                shots: 1,
                known: m > 0.5 || i % 10 == 0,
            });
        }
        let f = fit_open_set(&samples).unwrap();
        assert!(f.known_probability(0.9, 5.0, 1.0) > 0.8);
        assert!(f.known_probability(0.1, 5.0, 1.0) < 0.3);
        assert!(fit_open_set(&samples[..10]).is_ok());
        let all_known: Vec<_> = samples
            .iter()
            .map(|s| OpenSetSample { known: true, ..*s })
            .collect();
        assert!(fit_open_set(&all_known).is_err());
    }

    #[test]
    fn metadata_round_trips_and_rejects_garbage() {
        let c = Calibration {
            version: 1,
            logistic: ScaleFn {
                a: 1.0,
                b: 0.5,
                c: -0.2,
            },
            prototype: ScaleFn {
                a: 2.0,
                b: 0.1,
                c: 0.3,
            },
            open_set: OpenSetFn {
                w: [-5.0, 9.0, 0.1, 0.2],
            },
            fitted_on: serde_json::json!({"episodes": 10}),
            unaugmented: None,
        };
        assert_eq!(Calibration::from_metadata(&c.to_metadata()).unwrap(), c);
        assert!(
            !c.to_metadata().contains("unaugmented"),
            "files without it read as before"
        );
        assert!(Calibration::from_metadata("{").is_err());
        let v2 = c.to_metadata().replace("\"version\":1", "\"version\":2");
        assert!(Calibration::from_metadata(&v2).is_err());

        // With the functions for unaugmented tasks: kept, validated, never nested further.
        let mut plain = c.clone();
        plain.prototype.a = 3.0;
        let both = Calibration {
            unaugmented: Some(Box::new(plain.clone())),
            ..c.clone()
        };
        assert_eq!(
            Calibration::from_metadata(&both.to_metadata()).unwrap(),
            both
        );
        let mut bad_inner = both.clone();
        bad_inner.unaugmented.as_mut().unwrap().version = 2;
        assert!(Calibration::from_metadata(&bad_inner.to_metadata()).is_err());
        let nested = Calibration {
            unaugmented: Some(Box::new(both.clone())),
            ..c.clone()
        };
        assert!(Calibration::from_metadata(&nested.to_metadata()).is_err());
    }

    #[test]
    fn a_task_without_copies_picks_the_unaugmented_functions_when_there_are_some() {
        let scale = |a| ScaleFn { a, b: 0.0, c: 0.0 };
        let fitted = |a| Calibration {
            version: 1,
            logistic: scale(a),
            prototype: scale(a),
            open_set: OpenSetFn { w: [a; 4] },
            fitted_on: serde_json::json!({}),
            unaugmented: None,
        };
        let only = fitted(1.0);
        assert_eq!(only.for_copies(0), &only);
        assert_eq!(only.for_copies(4), &only);
        let both = Calibration {
            unaugmented: Some(Box::new(fitted(2.0))),
            ..fitted(1.0)
        };
        assert_eq!(both.for_copies(0).logistic.a, 2.0);
        assert_eq!(both.for_copies(1).logistic.a, 1.0);
        assert_eq!(both.for_copies(4).logistic.a, 1.0);
    }
}
