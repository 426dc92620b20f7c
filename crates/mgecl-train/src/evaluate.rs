//! Few-shot evaluation (the protocol of `models/README.md`): N-way K-shot episodes on classes the encoder
//! never trained on, the SDK's own task API fitted per episode, mean accuracy with a 95%
//! confidence interval. Also the episodes-file format that pins exact episodes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{s, Array2, Axis};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Episode};
use crate::error::{Error, Result};
use mgecl::classifier::calibration::{auroc, expected_calibration_error};
use mgecl::internals::{extend_with_copies, merge_copies};
use mgecl::model::Model;
use mgecl::preprocess::ImageSource;
use mgecl::task::{Task, TaskConfig};

/// The outcome of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalResult {
    /// Mean accuracy over episodes, in [0, 1].
    pub accuracy: f64,
    /// Half-width of the 95% confidence interval: 1.96 * std / sqrt(episodes).
    pub ci95: f64,
    /// Number of episodes.
    pub episodes: usize,
    /// Classes per episode.
    pub ways: usize,
    /// Support images per class.
    pub shots: usize,
    /// Query images per class (of the first episode, for files with varying counts).
    pub queries: usize,
    /// The classifier used.
    pub classifier: String,
    /// Whether each episode's queries were classified transductively
    /// ([`TaskConfig::transductive`]).
    pub transductive: bool,
    /// Episodes whose logistic fit did not reach the tolerance.
    pub unconverged_fits: usize,
    /// Mean top probability of the answers to known-class queries.
    pub mean_confidence: f64,
    /// Expected calibration error of those answers (15 equal-width bins of the top
    /// probability, as in `models/README.md`).
    pub ece: f64,
    /// With unknown-class queries: AUROC of telling known from unknown queries by
    /// [`Prediction::known_probability`](mgecl::Prediction::known_probability).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_set_auroc: Option<f64>,
    /// With unknown-class queries: the same by the top class probability (for comparison).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_set_auroc_top_probability: Option<f64>,
    /// Every known-class answer's (top probability, correct), for reliability diagrams.
    #[serde(skip)]
    pub answers: Vec<(f64, bool)>,
    /// Each episode's accuracy, in episode order: two evaluations of the same episodes
    /// compare pairwise (`research/paired.py`).
    #[serde(skip)]
    pub episode_accuracies: Vec<f64>,
}

/// Runs `episodes` (indices into `labels`) through a fresh [`Task`] each. `features` are the
/// encoder's outputs for `model`: per image, its row and then its augmented copies' as
/// [`embed_dataset`] gives them (`1 + config.augmented_copies` rows), which the task fits on
/// and, with [`TaskConfig::augment_queries`], merges for the queries as
/// [`Task::classify`](mgecl::Task::classify) does.
///
/// # Errors
/// [`Error::InvalidArgument`] for no episodes or a row count that does not match; any task
/// error.
pub fn evaluate_episodes(
    model: &Arc<Model>,
    features: &Array2<f32>,
    labels: &[usize],
    episodes: &[Episode],
    config: &TaskConfig,
) -> Result<EvalResult> {
    let first = episodes
        .first()
        .ok_or_else(|| Error::InvalidArgument("no episodes to evaluate".into()))?;
    let copies = config.augmented_copies;
    let group = 1 + copies;
    if features.nrows() != labels.len() * group {
        return Err(Error::InvalidArgument(format!(
            "{} feature rows for {} images with {copies} augmented copies each",
            features.nrows(),
            labels.len()
        )));
    }
    let query_features = |images: &[usize]| query_rows(features, images, config);
    let mut accuracies = Vec::with_capacity(episodes.len());
    let mut unconverged = 0;
    let mut answers: Vec<(f64, bool)> = Vec::new();
    let (mut known_scores, mut unknown_scores) = (Vec::new(), Vec::new());
    let (mut known_top, mut unknown_top) = (Vec::new(), Vec::new());
    for ep in episodes {
        let mut task = Task::new(model.clone(), config.clone())?;
        let mut names: HashMap<usize, String> = HashMap::new();
        for &c in &ep.classes {
            let name = format!("{c}");
            task.add_class(&name)?;
            names.insert(c, name);
        }
        for &i in &ep.support {
            let name = names.get(&labels[i]).ok_or_else(|| {
                Error::InvalidArgument("support image outside the episode's classes".into())
            })?;
            task.add_example_feature(name, &example_rows(features, i, copies))?;
        }
        if !task.fit()?.converged {
            unconverged += 1;
        }
        // Known and unknown queries in one batch, as a folder holds them: with
        // `config.transductive` each answer depends on the whole batch.
        let batch: Vec<usize> = ep.query.iter().chain(&ep.unknown).copied().collect();
        let predictions = task.classify_features(query_features(&batch)?.view())?;
        let (known, unknown) = predictions.split_at(ep.query.len());
        let mut correct = 0;
        for (p, &i) in known.iter().zip(&ep.query) {
            let right = p.label.as_deref() == names.get(&labels[i]).map(String::as_str);
            correct += usize::from(right);
            answers.push((p.probability, right));
            known_scores.push(p.known_probability);
            known_top.push(p.probability);
        }
        accuracies.push(correct as f64 / ep.query.len().max(1) as f64);
        for p in unknown {
            unknown_scores.push(p.known_probability);
            unknown_top.push(p.probability);
        }
    }
    let (confidence, right): (Vec<f64>, Vec<bool>) = answers.iter().copied().unzip();
    let open_set = !unknown_scores.is_empty();
    let n = accuracies.len() as f64;
    let mean = accuracies.iter().sum::<f64>() / n;
    let var = accuracies.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n;
    let ways = first.classes.len();
    Ok(EvalResult {
        accuracy: mean,
        ci95: 1.96 * var.sqrt() / n.sqrt(),
        episodes: accuracies.len(),
        ways,
        shots: first.support.len() / ways.max(1),
        queries: first.query.len() / ways.max(1),
        classifier: config.classifier.to_string(),
        transductive: config.transductive,
        unconverged_fits: unconverged,
        mean_confidence: confidence.iter().sum::<f64>() / confidence.len().max(1) as f64,
        ece: expected_calibration_error(&confidence, &right, 15),
        open_set_auroc: open_set.then(|| auroc(&known_scores, &unknown_scores)),
        open_set_auroc_top_probability: open_set.then(|| auroc(&known_top, &unknown_top)),
        answers,
        episode_accuracies: accuracies,
    })
}

/// Embeds every image of a dataset (eval mode) through the SDK model, in chunks, each
/// followed by its `config.augmented_copies` augmented copies (the rows
/// [`evaluate_episodes`] takes).
///
/// # Errors
/// Any error of [`Model::embed_preprocessed`].
pub fn embed_dataset(model: &Model, dataset: &Dataset, config: &TaskConfig) -> Result<Array2<f32>> {
    let info = model.info();
    let (h, w) = dataset.size;
    let c = dataset.channels;
    let group = 1 + config.augmented_copies;
    let mut rows = Vec::with_capacity(dataset.len() * group * model.feature_dim());
    for chunk in dataset.pixels.chunks(256) {
        let mut input = Vec::with_capacity(chunk.len() * c * h * w);
        for img in chunk {
            mgecl::internals::normalize_hwc(
                img,
                (h, w, c),
                &info.input.mean,
                &info.input.std,
                &mut input,
            );
        }
        rows.extend(embed_with_copies(model, &input, config)?);
    }
    Array2::from_shape_vec((dataset.len() * group, model.feature_dim()), rows)
        .map_err(|e| Error::Internal(format!("feature matrix: {e}")))
}

/// The rows [`Task::add_example_feature`] takes for image `i` of [`embed_dataset`]'s
/// `features`: its row and its `copies` augmented copies' rows.
pub(crate) fn example_rows(features: &Array2<f32>, i: usize, copies: usize) -> Vec<f32> {
    let group = 1 + copies;
    let rows = features.slice(s![i * group..(i + 1) * group, ..]);
    rows.iter().copied().collect()
}

/// The query features of `images` in [`embed_dataset`]'s `features` as a task with `config`
/// classifies them: each image's own row, or with [`TaskConfig::augment_queries`] the merge
/// of its row and its copies'.
pub(crate) fn query_rows(
    features: &Array2<f32>,
    images: &[usize],
    config: &TaskConfig,
) -> Result<Array2<f32>> {
    let copies = config.augmented_copies;
    let group = 1 + copies;
    if config.augment_queries && copies > 0 {
        let rows: Vec<usize> = images
            .iter()
            .flat_map(|&i| i * group..(i + 1) * group)
            .collect();
        Ok(merge_copies(
            features.select(Axis(0), &rows).view(),
            copies,
        )?)
    } else {
        let rows: Vec<usize> = images.iter().map(|&i| i * group).collect();
        Ok(features.select(Axis(0), &rows))
    }
}

/// Features of preprocessed images (back to back), each image's row followed by its
/// augmented copies' rows, made as a [`Task`] with `config` makes them.
fn embed_with_copies(model: &Model, inputs: &[f32], config: &TaskConfig) -> Result<Vec<f32>> {
    let pre = model.preprocessor();
    let mut batch = Vec::with_capacity(inputs.len() * (1 + config.augmented_copies));
    for image in inputs.chunks(pre.input_len()) {
        let (kind, copies) = (config.augmentation, config.augmented_copies);
        extend_with_copies(&mut batch, image, pre.input_shape(), kind, copies);
    }
    Ok(model.embed_preprocessed(&batch)?.into_iter().collect())
}

/// One entry of an episodes file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpisodeItem {
    /// Class label.
    pub label: String,
    /// Image path, relative to the episodes file's folder.
    pub path: String,
}

/// One episode of an episodes file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpisodeSpec {
    /// Labelled support images.
    pub support: Vec<EpisodeItem>,
    /// Labelled query images.
    pub query: Vec<EpisodeItem>,
}

/// An episodes file: `{"episodes": [{"support": [...], "query": [...]}]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpisodesFile {
    /// The episodes.
    pub episodes: Vec<EpisodeSpec>,
}

/// Longest episodes file accepted.
pub const MAX_EPISODES_FILE_BYTES: u64 = 256 << 20;

impl EpisodesFile {
    /// Parses episodes-file JSON and checks every episode: at least two support labels, every
    /// query label among them, no empty lists.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] describing the first problem.
    pub fn parse(text: &str) -> Result<Self> {
        let file: EpisodesFile = serde_json::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("episodes file: {e}")))?;
        if file.episodes.is_empty() {
            return Err(Error::InvalidArgument("episodes file: no episodes".into()));
        }
        for (i, ep) in file.episodes.iter().enumerate() {
            let labels: std::collections::HashSet<&str> =
                ep.support.iter().map(|s| s.label.as_str()).collect();
            if labels.len() < 2 || ep.query.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "episode {i}: needs >= 2 support labels and >= 1 query"
                )));
            }
            if let Some(q) = ep.query.iter().find(|q| !labels.contains(q.label.as_str())) {
                return Err(Error::InvalidArgument(format!(
                    "episode {i}: query label {:?} has no support image",
                    q.label
                )));
            }
        }
        Ok(file)
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`mgecl::Error::Io`]; [`mgecl::Error::LimitExceeded`] over [`MAX_EPISODES_FILE_BYTES`]; as
    /// [`EpisodesFile::parse`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            mgecl::internals::read_file_limited(path, MAX_EPISODES_FILE_BYTES, "episodes file")?;
        // Not UTF-8: the same I/O error `read_to_string` gives.
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        Self::parse(&text)
    }

    /// Evaluates the pinned episodes: every distinct image embedded once, then each episode
    /// fitted and classified through the task API.
    ///
    /// # Errors
    /// Any image or task error.
    pub fn evaluate(
        &self,
        base: &Path,
        model: &Arc<Model>,
        config: &TaskConfig,
    ) -> Result<EvalResult> {
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        let mut paths = Vec::new();
        let mut label_ids: HashMap<String, usize> = HashMap::new();
        let mut labels = Vec::new();
        let mut episodes = Vec::new();
        // Each (episode, image) gets its own row so that the same file may carry different
        // labels in different episodes; identical files are embedded once via `index`.
        let mut rows: Vec<usize> = Vec::new();
        for spec in &self.episodes {
            let mut ep = Episode {
                classes: Vec::new(),
                support: Vec::new(),
                query: Vec::new(),
                unknown: Vec::new(),
            };
            for (items, is_support) in [(&spec.support, true), (&spec.query, false)] {
                for item in items {
                    let next = label_ids.len();
                    let label = *label_ids.entry(item.label.clone()).or_insert(next);
                    if is_support && !ep.classes.contains(&label) {
                        ep.classes.push(label);
                    }
                    let path = base.join(&item.path);
                    let next = paths.len();
                    let img = *index.entry(path.clone()).or_insert_with(|| {
                        paths.push(path);
                        next
                    });
                    rows.push(img);
                    labels.push(label);
                    let row = labels.len() - 1;
                    if is_support {
                        ep.support.push(row)
                    } else {
                        ep.query.push(row)
                    }
                }
            }
            episodes.push(ep);
        }
        let mut inputs = Vec::with_capacity(paths.len() * model.preprocessor().input_len());
        for path in &paths {
            inputs.extend(model.preprocessor().preprocess(&ImageSource::Path(path))?);
        }
        let dim = model.feature_dim();
        let group = 1 + config.augmented_copies;
        let unique = Array2::from_shape_vec(
            (paths.len() * group, dim),
            embed_with_copies(model, &inputs, config)?,
        )
        .map_err(|e| Error::Internal(format!("feature matrix: {e}")))?;
        let rows: Vec<usize> = rows
            .iter()
            .flat_map(|&i| i * group..(i + 1) * group)
            .collect();
        let features = unique.select(Axis(0), &rows);
        evaluate_episodes(model, &features, &labels, &episodes, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episodes_file_validation() {
        assert!(EpisodesFile::parse("{}").is_err());
        assert!(EpisodesFile::parse(r#"{"episodes": []}"#).is_err());
        let one_label = r#"{"episodes": [{"support": [{"label": "a", "path": "x.png"}], "query": [{"label": "a", "path": "y.png"}]}]}"#;
        assert!(EpisodesFile::parse(one_label).is_err());
        let stray = r#"{"episodes": [{"support": [{"label": "a", "path": "x.png"}, {"label": "b", "path": "z.png"}], "query": [{"label": "c", "path": "y.png"}]}]}"#;
        assert!(EpisodesFile::parse(stray).is_err());
        let ok = r#"{"episodes": [{"support": [{"label": "a", "path": "x.png"}, {"label": "b", "path": "z.png"}], "query": [{"label": "b", "path": "y.png"}]}]}"#;
        assert_eq!(EpisodesFile::parse(ok).unwrap().episodes.len(), 1);
    }
}
