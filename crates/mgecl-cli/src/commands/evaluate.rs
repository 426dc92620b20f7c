//! `mgecl evaluate`: few-shot accuracy and calibration of a model on episodes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use clap::Args;
use mgecl::{ClassifierKind, TaskConfig};
use mgecl_train::data::{
    add_unknown_queries, check_episodes, dirichlet_queries, read_list, sample_episodes,
    scan_classes, Dataset,
};
use mgecl_train::evaluate::{embed_dataset, evaluate_episodes, EpisodesFile};
use mgecl_train::rng::Rng;

use crate::options::{episode_classes, named, ModelArgs, TaskArgs};
use crate::plot;

/// Few-shot evaluation: sampled episodes (--data) or pinned ones (--episodes-file).
#[derive(Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image-folder root to sample episodes from.
    #[arg(long, conflicts_with = "episodes_file")]
    data: Option<PathBuf>,
    /// File listing the top-level folders to use.
    #[arg(long)]
    include: Option<PathBuf>,
    /// Pinned episodes (JSON, paths relative to the file).
    #[arg(long)]
    episodes_file: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    ways: usize,
    /// Support images per class; a list (`1,5`) evaluates each on the same embeddings (one
    /// result per value, each on the episodes a run with that value alone draws).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    shots: Vec<usize>,
    #[arg(long, default_value_t = 15)]
    queries: usize,
    #[arg(long, default_value_t = 600)]
    episodes: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    task: TaskArgs,
    /// Evaluate each of these classifiers (`logistic,prototype`) on one embedding of the
    /// images: one result per classifier and shot count, on the same episodes.
    #[arg(long, value_parser = named::<ClassifierKind>(), value_delimiter = ',', conflicts_with = "classifier")]
    classifiers: Vec<ClassifierKind>,
    /// Evaluate every setting twice on one embedding and the same episodes: as given
    /// inductively and transductively (a pair of results each).
    #[arg(long, conflicts_with = "transductive")]
    also_transductive: bool,
    /// Draw each episode's classes from one parent folder (one alphabet: Lake et al.'s
    /// within-alphabet one-shot protocol).
    #[arg(long, conflicts_with = "episodes_file")]
    within_alphabet: bool,
    /// Also query, in each episode, `queries` images of each of N classes outside it, and
    /// report open_set_auroc (known-probability) and open_set_auroc_top_probability.
    #[arg(long, default_value_t = 0, conflicts_with = "episodes_file")]
    unknown_ways: usize,
    /// Unequal classes: each episode's ways x queries known-class queries split by class
    /// proportions drawn from a symmetric Dirichlet(ALPHA), at least one per class (Veilleux
    /// et al. 2021; 2 is their setting). The supports are those of the balanced episodes of
    /// the same seed.
    #[arg(long, value_name = "ALPHA", conflicts_with = "episodes_file")]
    query_dirichlet: Option<f64>,
    /// Draw the reliability diagram (accuracy against confidence, 15 bins) as a PNG here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// With --json: also each episode's accuracy (`episode_accuracies`), for paired
    /// comparisons of two models or settings on the same episodes (`research/paired.py`).
    #[arg(long, requires = "json")]
    per_episode: bool,
}

pub fn run(a: EvaluateArgs) -> anyhow::Result<()> {
    if a.shots.is_empty() || a.shots.contains(&0) {
        bail!("--shots must be one or more values >= 1");
    }
    if (a.shots.len() > 1 || a.classifiers.len() > 1 || a.also_transductive) && a.plot.is_some() {
        bail!(
            "--plot draws one result: give one --shots value and one classifier, without \
             --also-transductive"
        );
    }
    if a.shots.len() > 1 && a.episodes_file.is_some() {
        bail!("a list of --shots needs --data (not --episodes-file)");
    }
    let model = Arc::new(a.model.load()?);
    let config = a.task.config(&model)?;
    // The classifier does not change the features, so every one of them is evaluated on the
    // same embedding.
    let configs: Vec<TaskConfig> = if a.classifiers.is_empty() {
        vec![config]
    } else {
        a.classifiers
            .iter()
            .map(|&kind| TaskConfig {
                classifier: kind,
                ..config.clone()
            })
            .collect()
    };
    let configs: Vec<TaskConfig> = if a.also_transductive {
        configs
            .into_iter()
            .flat_map(|c| {
                let transductive = TaskConfig {
                    transductive: true,
                    ..c.clone()
                };
                [c, transductive]
            })
            .collect()
    } else {
        configs
    };
    let mut results = Vec::new();
    match (&a.data, &a.episodes_file) {
        (_, Some(file)) => {
            let episodes = EpisodesFile::load(file)?;
            let base = file.parent().unwrap_or(Path::new("."));
            for config in &configs {
                results.push((config, episodes.evaluate(base, &model, config)?));
            }
        }
        (Some(root), None) => {
            if a.episodes == 0 {
                bail!("--episodes must be >= 1");
            }
            let include = a.include.as_deref().map(read_list).transpose()?;
            let dataset = Dataset::load(
                &scan_classes(root, include.as_deref())?,
                model.preprocessor(),
            )?;
            let classes = episode_classes(a.within_alphabet);
            for &shots in &a.shots {
                check_episodes(&dataset, classes, (a.ways, shots, a.queries))?;
            }
            // Embedded once for every --shots value and classifier: the embeddings dominate
            // the cost.
            let features = embed_dataset(&model, &dataset, &configs[0])?;
            for config in &configs {
                for &shots in &a.shots {
                    let shape = (a.ways, shots, a.queries);
                    let mut rng = Rng::new(a.seed, 0xe7a1);
                    let mut episodes =
                        sample_episodes(&dataset, classes, shape, a.episodes, &mut rng);
                    if let Some(alpha) = a.query_dirichlet {
                        let mut rng = Rng::new(a.seed, 0xd1e1);
                        dirichlet_queries(&dataset, &mut episodes, a.queries, alpha, &mut rng)?;
                    }
                    if a.unknown_ways > 0 {
                        let mut rng = Rng::new(a.seed, 0x0de7);
                        add_unknown_queries(
                            &dataset,
                            &mut episodes,
                            a.unknown_ways,
                            a.queries,
                            &mut rng,
                        )?;
                    }
                    let result =
                        evaluate_episodes(&model, &features, &dataset.labels, &episodes, config)?;
                    results.push((config, result));
                }
            }
        }
        (None, None) => bail!("give --data DIR or --episodes-file F"),
    };
    for (config, result) in &results {
        report(&a, config, result)?;
    }
    Ok(())
}

/// Prints one result (and draws its plot) as `a` asks.
fn report(
    a: &EvaluateArgs,
    config: &TaskConfig,
    result: &mgecl_train::evaluate::EvalResult,
) -> anyhow::Result<()> {
    let raw = a.task.raw_probabilities;
    if let Some(path) = &a.plot {
        let title = format!(
            "{} {}-way {}-shot{}: accuracy {:.2}%, ECE {:.3}",
            result.classifier,
            result.ways,
            result.shots,
            if raw { " (raw)" } else { "" },
            100.0 * result.accuracy,
            result.ece
        );
        plot::reliability_diagram(&result.answers, &title, path)?;
    }
    if a.json {
        let mut v = serde_json::to_value(result)?;
        v["seed"] = a.seed.into();
        v["within_alphabet"] = a.within_alphabet.into();
        v["augmented_copies"] = config.augmented_copies.into();
        v["augmentation"] = config.augmentation.to_string().into();
        v["augment_queries"] = config.augment_queries.into();
        if let Some(alpha) = a.query_dirichlet {
            v["query_dirichlet"] = alpha.into();
        }
        if a.per_episode {
            // Six decimals: exact enough to pair, a third of the full digits.
            let rounded: Vec<f64> = result
                .episode_accuracies
                .iter()
                .map(|a| (a * 1e6).round() / 1e6)
                .collect();
            v["episode_accuracies"] = rounded.into();
        }
        outln!("{v}");
        return Ok(());
    }
    outln!(
        "{}-way {}-shot{}{}, {} episodes, {}{}: accuracy {:.2}% +- {:.2}% (95% CI), ECE {:.3}",
        result.ways,
        result.shots,
        if a.within_alphabet {
            " within-alphabet"
        } else {
            ""
        },
        a.query_dirichlet
            .map(|alpha| format!(", queries Dirichlet({alpha})"))
            .unwrap_or_default(),
        result.episodes,
        result.classifier,
        if result.transductive {
            " transductive"
        } else {
            ""
        },
        100.0 * result.accuracy,
        100.0 * result.ci95,
        result.ece
    );
    if let (Some(known), Some(top)) = (result.open_set_auroc, result.open_set_auroc_top_probability)
    {
        outln!("open-set AUROC: {known:.4} (known-probability), {top:.4} (top probability)");
    }
    Ok(())
}
