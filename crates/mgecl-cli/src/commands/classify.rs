//! `mgecl classify`: name images against a support folder.

use std::path::PathBuf;

use clap::Args;
use mgecl::TaskConfig;

use crate::options::{ModelArgs, TaskArgs};
use crate::support;
use crate::terminal::progress;

/// Classify images against a support folder holding one sub-folder of example images per
/// class (the folder name is the label). One line per image: path, label, probability. The
/// images are classified together (with --transductive, as one batch).
#[derive(Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder of class folders.
    #[arg(long)]
    support: PathBuf,
    #[command(flatten)]
    task: TaskArgs,
    /// Answer "unknown" when the image's known-probability (the probability that it is
    /// of one of the support classes at all) is below this, e.g. 0.5.
    #[arg(long)]
    threshold: Option<f64>,
    /// One JSON object per line: path, label, probability, known_probability,
    /// probabilities.
    #[arg(long)]
    json: bool,
    /// Images to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: ClassifyArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let config = TaskConfig {
        threshold: args.threshold,
        ..args.task.config(&model)?
    };
    let bar = progress(
        support::count(&args.support)? + args.images.len(),
        "embedding",
    );
    let (task, _) = support::fitted_task(model, config, &args.support, &bar)?;
    let labels: Vec<String> = task.classes().into_iter().map(|c| c.label).collect();
    // Embedded 16 at a time, classified together: with --transductive the answers depend on
    // the whole batch.
    let mut features = Vec::with_capacity(args.images.len() * task.model().feature_dim());
    for chunk in args.images.chunks(16) {
        features.extend(task.embed_query_paths(chunk)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let features =
        ndarray::Array2::from_shape_vec((args.images.len(), task.model().feature_dim()), features)?;
    let answers = task.classify_features(features.view())?;
    for (path, answer) in args.images.iter().zip(answers) {
        let label = answer.label.unwrap_or_else(|| "unknown".to_string());
        if args.json {
            let probabilities: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .cloned()
                .zip(answer.probabilities.iter().map(|&p| serde_json::json!(p)))
                .collect();
            let line = serde_json::json!({
                "path": path, "label": label, "probability": answer.probability,
                "known_probability": answer.known_probability, "probabilities": probabilities,
            });
            outln!("{line}");
        } else {
            outln!("{}\t{label}\t{:.4}", path.display(), answer.probability);
        }
    }
    Ok(())
}
