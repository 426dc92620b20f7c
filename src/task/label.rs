//! Labelling many images with a fitted task: a proposed label per image, which ones a person
//! should review, and which unlabelled images to label next to help the classifier most.
//!
//! The "label next" ranking is uncertainty sampling weighted by density, with diversity
//! (Settles & Craven 2008's information density, greedy): an image scores
//! `uncertainty x density`, where uncertainty is one minus the margin between its two most
//! probable classes (two classes the task cannot tell apart) and density is its mean cosine
//! similarity to its nearest images (an image like many others teaches the classifier about all
//! of them; an outlier teaches it about one). Picks are greedy: after each, the scores of the
//! images similar to it are scaled down by `1 - similarity`, so the list does not spend its
//! places on near-duplicates of one confusing image.

use ndarray::{Array2, ArrayView2, Axis};
use serde::Serialize;

use super::{normalized_rows, Prediction, Task};
use crate::error::{Error, Result};

/// Most images the "label next" ranking scores (the most uncertain ones): bounds its cost to
/// `MAX_CANDIDATES x N` similarities whatever the number of images.
pub const MAX_CANDIDATES: usize = 512;
/// Images [`Task::label_paths`] embeds together (bounds its memory, whatever the number of
/// files).
pub const LABEL_CHUNK: usize = 64;
/// Neighbours averaged in an image's density.
const DENSITY_NEIGHBOURS: usize = 10;

/// How to label.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LabelOptions {
    /// An image needs review when its class probability or its known-probability (that it is
    /// of one of the task's classes at all) is below this.
    pub review_below: f64,
    /// How many images the "label next" ranking returns (0: none).
    pub label_next: usize,
}

impl LabelOptions {
    /// Review below `review_below`; rank `label_next` images to label next.
    pub fn new(review_below: f64, label_next: usize) -> Self {
        LabelOptions {
            review_below,
            label_next,
        }
    }
}

impl Default for LabelOptions {
    fn default() -> Self {
        LabelOptions {
            review_below: 0.8,
            label_next: 20,
        }
    }
}

/// The proposed label of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Proposal {
    /// The most probable class.
    pub label: String,
    /// Its probability, given that the image is of one of the task's classes.
    pub probability: f64,
    /// The second most probable class and its probability (`None` for a one-class task).
    pub runner_up: Option<(String, f64)>,
    /// Probability that the image is of one of the task's classes at all
    /// ([`Prediction::known_probability`]).
    pub known_probability: f64,
    /// `probability` or `known_probability` is below [`LabelOptions::review_below`].
    pub needs_review: bool,
}

/// An image worth labelling next.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Suggestion {
    /// Row of the image in the labelled batch.
    pub index: usize,
    /// `uncertainty x density`, after the diversity discount (what the ranking sorted by).
    pub score: f64,
    /// One minus the margin between the two most probable classes.
    pub uncertainty: f64,
    /// Mean cosine similarity to its nearest images.
    pub density: f64,
}

/// One row of a [`Labelling`]: an image's proposed label, or why it has none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LabelRow {
    /// The image was labelled.
    Labelled(Proposal),
    /// The image could not be read or decoded, or broke an image limit: the error's message
    /// (naming the file).
    Failed(String),
}

impl LabelRow {
    /// The proposal of a labelled image.
    pub fn proposal(&self) -> Option<&Proposal> {
        match self {
            LabelRow::Labelled(p) => Some(p),
            LabelRow::Failed(_) => None,
        }
    }

    /// Why a failed image has no label.
    pub fn error(&self) -> Option<&str> {
        match self {
            LabelRow::Labelled(_) => None,
            LabelRow::Failed(e) => Some(e),
        }
    }
}

/// What [`Task::label_features`] and [`Task::label_paths`] return.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Labelling {
    /// One per image, in input order.
    pub rows: Vec<LabelRow>,
    /// The images to label next, best first (indices into `rows`; never a failed one).
    pub label_next: Vec<Suggestion>,
}

/// The header of [`Labelling::csv`] (the `mgecl label` CSV contract).
/// `error` is empty for labelled images; for an image that could not be labelled it says why,
/// and the other fields but `path` are empty.
pub const CSV_HEADER: &str = "path,label,probability,needs_review,runner_up,runner_up_probability,known_probability,label_next,error";

/// One CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180; what
/// Python's csv module writes with QUOTE_MINIMAL).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Indices of the rows to review, least certain first (lowest of probability and
/// known-probability); failed rows are not among them.
pub fn review_order(rows: &[LabelRow]) -> Vec<usize> {
    let certainty = |i: usize| {
        rows[i]
            .proposal()
            .map_or(0.0, |p| p.probability.min(p.known_probability))
    };
    let mut order: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].proposal().is_some_and(|p| p.needs_review))
        .collect();
    order.sort_by(|&a, &b| certainty(a).total_cmp(&certainty(b)).then(a.cmp(&b)));
    order
}

/// Indices of the failed rows, in order.
pub fn failed_rows(rows: &[LabelRow]) -> Vec<usize> {
    (0..rows.len())
        .filter(|&i| rows[i].error().is_some())
        .collect()
}

/// A `mgecl label` CSV read back ([`LabelCsv::parse`]): what the report is drawn from.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelCsv {
    /// The `path` column.
    pub paths: Vec<String>,
    /// One per row.
    pub rows: Vec<LabelRow>,
    /// Row indices of the images to label next, by rank.
    pub label_next: Vec<usize>,
}

/// The records of a CSV text (RFC 4180: quoted fields may hold commas, quotes, line breaks).
fn csv_records(text: &str) -> Result<Vec<Vec<String>>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(Error::InvalidArgument(
            "the CSV ends inside a quoted field".into(),
        ));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

impl LabelCsv {
    /// Reads the text [`Labelling::csv`] writes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the line for another header, a row of the wrong
    /// width, a number or flag that does not parse, or a `label_next` rank out of place.
    pub fn parse(text: &str) -> Result<Self> {
        let records = csv_records(text)?;
        let bad = |line: usize, what: &str| {
            Error::InvalidArgument(format!("labels CSV, record {line}: {what}"))
        };
        let header: Vec<&str> = CSV_HEADER.split(',').collect();
        match records.first() {
            Some(first) if *first == header => {}
            _ => return Err(bad(1, &format!("expected the header {CSV_HEADER}"))),
        }
        let mut parsed = LabelCsv {
            paths: Vec::new(),
            rows: Vec::new(),
            label_next: Vec::new(),
        };
        let mut ranks = Vec::new();
        for (i, record) in records.iter().enumerate().skip(1) {
            let line = i + 1;
            if record.len() != header.len() {
                return Err(bad(
                    line,
                    &format!("{} fields, expected {}", record.len(), header.len()),
                ));
            }
            let number = |k: usize| {
                record[k]
                    .parse::<f64>()
                    .ok()
                    .filter(|v| (0.0..=1.0).contains(v))
                    .ok_or_else(|| {
                        bad(
                            line,
                            &format!("{} = {:?} is not a probability", header[k], record[k]),
                        )
                    })
            };
            parsed.paths.push(record[0].clone());
            if !record[8].is_empty() {
                if record[1..8].iter().any(|f| !f.is_empty()) {
                    return Err(bad(line, "a failed image's row has a label"));
                }
                parsed.rows.push(LabelRow::Failed(record[8].clone()));
                continue;
            }
            let needs_review = match record[3].as_str() {
                "true" => true,
                "false" => false,
                other => return Err(bad(line, &format!("needs_review = {other:?}"))),
            };
            let runner_up = if record[4].is_empty() {
                None
            } else {
                Some((record[4].clone(), number(5)?))
            };
            if !record[7].is_empty() {
                let rank: usize = record[7]
                    .parse()
                    .map_err(|_| bad(line, &format!("label_next = {:?}", record[7])))?;
                ranks.push((rank, parsed.rows.len()));
            }
            parsed.rows.push(LabelRow::Labelled(Proposal {
                label: record[1].clone(),
                probability: number(2)?,
                runner_up,
                known_probability: number(6)?,
                needs_review,
            }));
        }
        ranks.sort_unstable();
        if ranks
            .iter()
            .enumerate()
            .any(|(i, &(rank, _))| rank != i + 1)
        {
            return Err(bad(0, "the label_next ranks are not 1, 2, 3, ..."));
        }
        parsed.label_next = ranks.into_iter().map(|(_, index)| index).collect();
        Ok(parsed)
    }
}

impl Labelling {
    /// The CSV of `mgecl label`: [`CSV_HEADER`], then one row per image in input order, `path`
    /// being `paths[i]`; `\n` line ends, probabilities with 6 decimals, `label_next` the
    /// image's rank in [`Labelling::label_next`] (from 1) or empty, `error` empty but for a
    /// failed image, whose other fields are empty.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `paths` and the rows differ in number.
    pub fn csv<S: AsRef<str>>(&self, paths: &[S]) -> Result<String> {
        if paths.len() != self.rows.len() {
            return Err(Error::InvalidArgument(format!(
                "{} paths for {} labelled images",
                paths.len(),
                self.rows.len()
            )));
        }
        let mut rank = vec![None; paths.len()];
        for (i, s) in self.label_next.iter().enumerate() {
            rank[s.index] = Some(i + 1);
        }
        let mut out = String::with_capacity(64 * (paths.len() + 1));
        out.push_str(CSV_HEADER);
        out.push('\n');
        for ((path, row), rank) in paths.iter().zip(&self.rows).zip(rank) {
            let path = csv_field(path.as_ref());
            let p = match row {
                LabelRow::Failed(error) => {
                    out.push_str(&format!("{path},,,,,,,,{}\n", csv_field(error)));
                    continue;
                }
                LabelRow::Labelled(p) => p,
            };
            let (runner, runner_p) = match &p.runner_up {
                Some((label, prob)) => (csv_field(label), format!("{prob:.6}")),
                None => (String::new(), String::new()),
            };
            let rank = rank.map(|r| r.to_string()).unwrap_or_default();
            out.push_str(&format!(
                "{path},{},{:.6},{},{runner},{runner_p},{:.6},{rank},\n",
                csv_field(&p.label),
                p.probability,
                p.needs_review,
                p.known_probability,
            ));
        }
        Ok(out)
    }

    /// Indices of the images to review, least certain first ([`review_order`]).
    pub fn review_order(&self) -> Vec<usize> {
        review_order(&self.rows)
    }

    /// Indices of the images that could not be labelled, in order.
    pub fn failed(&self) -> Vec<usize> {
        failed_rows(&self.rows)
    }
}

impl Task {
    /// Proposes a label for each feature row (`N x feature_dim`, encoder outputs), marks the
    /// ones to review and ranks the ones to label next (see the module documentation).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `review_below` outside [0, 1] or a wrong feature width;
    /// [`Error::NotFitted`].
    pub fn label_features(
        &self,
        features: ArrayView2<f32>,
        options: &LabelOptions,
    ) -> Result<Labelling> {
        if !(0.0..=1.0).contains(&options.review_below) {
            return Err(Error::InvalidArgument(format!(
                "review_below = {} is not a probability",
                options.review_below
            )));
        }
        let predictions = self.classify_features(features)?;
        let rows = predictions
            .iter()
            .map(|p| LabelRow::Labelled(self.proposal(p, options.review_below)))
            .collect();
        let label_next = rank_to_label(features, &predictions, options.label_next);
        Ok(Labelling { rows, label_next })
    }

    /// [`Task::label_features`] of a batch in which some images could not be embedded:
    /// `outcomes` holds, per image in order, its feature row (`feature_dim` values, as
    /// [`Task::embed_queries_each`] gives them) or why it has none. The failed images get
    /// [`LabelRow::Failed`] rows and are left out of the "label next" ranking.
    ///
    /// # Errors
    /// As [`Task::label_features`] (when every image failed, every row is a failed one).
    pub fn label_outcomes<E: AsRef<str>>(
        &self,
        outcomes: &[std::result::Result<Vec<f32>, E>],
        options: &LabelOptions,
    ) -> Result<Labelling> {
        if !self.is_fitted() {
            return Err(Error::NotFitted);
        }
        if !(0.0..=1.0).contains(&options.review_below) {
            return Err(Error::InvalidArgument(format!(
                "review_below = {} is not a probability",
                options.review_below
            )));
        }
        let dim = self.model().feature_dim();
        let good: Vec<(usize, &Vec<f32>)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, outcome)| outcome.as_ref().ok().map(|values| (i, values)))
            .collect();
        let mut features = Array2::<f32>::zeros((good.len(), dim));
        for (mut row, &(i, values)) in features.rows_mut().into_iter().zip(&good) {
            if values.len() != dim {
                return Err(Error::InvalidArgument(format!(
                    "image {i}: {} feature values, expected {dim}",
                    values.len()
                )));
            }
            row.assign(&ndarray::ArrayView1::from(values.as_slice()));
        }
        let labelled = if good.is_empty() {
            Labelling {
                rows: Vec::new(),
                label_next: Vec::new(),
            }
        } else {
            self.label_features(features.view(), options)?
        };
        let mut labelled_rows = labelled.rows.into_iter();
        let rows = outcomes
            .iter()
            .map(|outcome| match outcome {
                Err(e) => LabelRow::Failed(e.as_ref().to_string()),
                Ok(_) => labelled_rows
                    .next()
                    .expect("label_features gives one row per feature row"),
            })
            .collect();
        let label_next = labelled
            .label_next
            .into_iter()
            .map(|s| Suggestion {
                index: good[s.index].0,
                ..s
            })
            .collect();
        Ok(Labelling { rows, label_next })
    }

    /// [`Task::label_features`] of image files (embedded [`LABEL_CHUNK`] at a time): a file
    /// that cannot be read or decoded, or breaks an image limit, gets a [`LabelRow::Failed`]
    /// row saying why (naming its path), and the others are labelled as they would be without
    /// it.
    ///
    /// # Errors
    /// [`Error::NotFitted`] (before any embedding); the errors of
    /// [`Task::embed_queries_each`] that are not one image's; those of
    /// [`Task::label_features`].
    pub fn label_paths<P: AsRef<std::path::Path>>(
        &self,
        paths: &[P],
        options: &LabelOptions,
    ) -> Result<Labelling> {
        if !self.is_fitted() {
            return Err(Error::NotFitted);
        }
        let mut outcomes = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(LABEL_CHUNK) {
            let sources = crate::preprocess::ImageSource::paths(chunk);
            for outcome in self.embed_queries_each(&sources)? {
                outcomes.push(outcome.map_err(|e| e.to_string()));
            }
        }
        self.label_outcomes(&outcomes, options)
    }

    /// The `count` feature rows (`N x feature_dim`, encoder outputs) most worth labelling
    /// next, best first (see the module documentation).
    ///
    /// # Errors
    /// As [`Task::classify_features`].
    pub fn label_next(&self, features: ArrayView2<f32>, count: usize) -> Result<Vec<Suggestion>> {
        let predictions = self.classify_features(features)?;
        Ok(rank_to_label(features, &predictions, count))
    }

    fn proposal(&self, prediction: &Prediction, review_below: f64) -> Proposal {
        let classes = &self.classes;
        let top = prediction.top_k(2);
        let runner_up = top.get(1).map(|&(i, p)| (classes[i].label.clone(), p));
        Proposal {
            label: classes[prediction.class_index].label.clone(),
            probability: prediction.probability,
            runner_up,
            known_probability: prediction.known_probability,
            needs_review: prediction.probability < review_below
                || prediction.known_probability < review_below,
        }
    }
}

/// The `count` images to label next (see the module documentation). `features` are the rows
/// `predictions` were made from; they are L2-normalised here.
pub fn rank_to_label(
    features: ArrayView2<f32>,
    predictions: &[Prediction],
    count: usize,
) -> Vec<Suggestion> {
    let n = predictions.len().min(features.nrows());
    if count == 0 || n == 0 {
        return Vec::new();
    }
    let uncertainty: Vec<f64> = predictions[..n]
        .iter()
        .map(|p| match p.top_k(2).as_slice() {
            [(_, a), (_, b)] => 1.0 - (a - b),
            _ => 1.0 - p.known_probability,
        })
        .collect();
    let mut candidates: Vec<usize> = (0..n).collect();
    candidates.sort_by(|&a, &b| uncertainty[b].total_cmp(&uncertainty[a]).then(a.cmp(&b)));
    candidates.truncate(MAX_CANDIDATES);

    let x = normalized_rows(features.slice(ndarray::s![..n, ..]));
    let rows = x.select(Axis(0), &candidates);
    // Candidates x all images.
    let similarity = rows.dot(&x.t());
    let density: Vec<f64> = similarity
        .axis_iter(Axis(0))
        .zip(&candidates)
        .map(|(row, &me)| {
            let mut others: Vec<f64> = row
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != me)
                .map(|(_, &s)| s.max(0.0))
                .collect();
            let k = DENSITY_NEIGHBOURS.min(others.len());
            if k == 0 {
                return 1.0;
            }
            others.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            others[..k].iter().sum::<f64>() / k as f64
        })
        .collect();
    let mut score: Vec<f64> = candidates
        .iter()
        .zip(&density)
        .map(|(&i, d)| uncertainty[i] * d)
        .collect();
    let mut picked = Vec::new();
    let mut taken = vec![false; candidates.len()];
    for _ in 0..count.min(candidates.len()) {
        let Some(best) = (0..candidates.len())
            .filter(|&c| !taken[c])
            .max_by(|&a, &b| score[a].total_cmp(&score[b]).then(b.cmp(&a)))
        else {
            break;
        };
        taken[best] = true;
        let image = candidates[best];
        picked.push(Suggestion {
            index: image,
            score: score[best],
            uncertainty: uncertainty[image],
            density: density[best],
        });
        // Discount the candidates like the one just picked.
        for (c, s) in score.iter_mut().enumerate() {
            if !taken[c] {
                *s *= 1.0 - similarity[[c, image]].clamp(0.0, 1.0);
            }
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn prediction(probabilities: Vec<f64>) -> Prediction {
        let (best, p) = probabilities
            .iter()
            .copied()
            .enumerate()
            .fold((0, f64::MIN), |a, (i, v)| if v > a.1 { (i, v) } else { a });
        Prediction {
            label: Some(format!("c{best}")),
            class_index: best,
            probability: p,
            probabilities,
            known_probability: 0.9,
        }
    }

    #[test]
    fn picks_the_uncertain_dense_image_first_and_skips_its_duplicate() {
        // Four certain images near (1, 0); two identical uncertain ones at 45 degrees; one
        // fairly uncertain at (0, 1).
        let features = array![
            [1.0f32, 0.0],
            [1.0, 0.05],
            [1.0, -0.05],
            [1.0, 0.1],
            [0.7, 0.7],
            [0.7, 0.7],
            [0.0, 1.0]
        ];
        let predictions: Vec<Prediction> = [
            [0.9, 0.1],
            [0.9, 0.1],
            [0.9, 0.1],
            [0.9, 0.1],
            [0.5, 0.5],
            [0.5, 0.5],
            [0.55, 0.45],
        ]
        .iter()
        .map(|p| prediction(p.to_vec()))
        .collect();
        // Hand computation of uncertainty x density (6 neighbours: all the others).
        let unit: Vec<[f64; 2]> = features
            .rows()
            .into_iter()
            .map(|r| {
                let n = (f64::from(r[0]).powi(2) + f64::from(r[1]).powi(2)).sqrt();
                [f64::from(r[0]) / n, f64::from(r[1]) / n]
            })
            .collect();
        let score = |i: usize| {
            let top = &predictions[i].probabilities;
            let uncertainty = 1.0 - (top[0] - top[1]).abs();
            let density = (0..7)
                .filter(|&j| j != i)
                .map(|j| (unit[i][0] * unit[j][0] + unit[i][1] * unit[j][1]).max(0.0))
                .sum::<f64>()
                / 6.0;
            uncertainty * density
        };
        let best = (0..7)
            .max_by(|&a, &b| score(a).total_cmp(&score(b)))
            .unwrap();
        let ranked = rank_to_label(features.view(), &predictions, 3);
        assert_eq!(ranked.len(), 3);
        assert_eq!(
            ranked[0].index,
            best.min(4),
            "the first of the two equal best"
        );
        assert!((ranked[0].score - score(ranked[0].index)).abs() < 1e-9);
        // Its duplicate's score is multiplied by 1 - 1 = 0: the (0, 1) image comes next.
        assert_eq!(ranked[1].index, 6);
        assert_ne!(ranked[2].index, 5);
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("a/b.png"), "a/b.png");
        assert_eq!(csv_field("a,b.png"), "\"a,b.png\"");
        assert_eq!(csv_field("say \"hi\".png"), "\"say \"\"hi\"\".png\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn the_csv_reads_back() {
        let labelling = Labelling {
            rows: vec![
                LabelRow::Labelled(Proposal {
                    label: "a,b".into(),
                    probability: 0.25,
                    runner_up: Some(("say \"c\"".into(), 0.125)),
                    known_probability: 0.5,
                    needs_review: true,
                }),
                LabelRow::Failed("x,\"y\".jpg: cannot decode".into()),
                LabelRow::Labelled(Proposal {
                    label: "d".into(),
                    probability: 1.0,
                    runner_up: None,
                    known_probability: 1.0,
                    needs_review: false,
                }),
            ],
            label_next: vec![Suggestion {
                index: 2,
                score: 0.5,
                uncertainty: 0.5,
                density: 1.0,
            }],
        };
        let paths = ["two\nlines.png", "x,\"y\".jpg", "x.png"];
        let csv = labelling.csv(&paths).unwrap();
        // The failed row by hand: only its path and its (quoted) error.
        assert!(csv.contains("\n\"x,\"\"y\"\".jpg\",,,,,,,,\"x,\"\"y\"\".jpg: cannot decode\"\n"));
        let back = LabelCsv::parse(&csv).unwrap();
        assert_eq!(back.paths, paths);
        assert_eq!(back.rows, labelling.rows);
        assert_eq!(back.label_next, [2]);
        assert_eq!(labelling.failed(), [1]);
        assert_eq!(labelling.review_order(), [0]);
        assert!(LabelCsv::parse("path,label\nx,y\n").is_err());
    }

    #[test]
    fn asks_for_no_more_than_there_is() {
        let features = array![[1.0f32, 0.0], [0.0, 1.0]];
        let predictions = vec![prediction(vec![0.6, 0.4]), prediction(vec![0.3, 0.7])];
        assert!(rank_to_label(features.view(), &predictions, 0).is_empty());
        let all = rank_to_label(features.view(), &predictions, 10);
        let mut indices: Vec<usize> = all.iter().map(|s| s.index).collect();
        indices.sort();
        assert_eq!(indices, [0, 1]);
    }
}
