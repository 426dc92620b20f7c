//! `mgecl`: the command-line front end of the SDK. One subcommand per job.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;

use mgecl::{ClassifierKind, DeviceChoice, Error, LoadOptions, Model, Task, TaskConfig};

#[derive(Parser)]
#[command(
    name = "mgecl",
    version,
    about = "Few-shot image recognition with MGECL encoders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model: architecture, widths, input, feature size, device.
    Info {
        #[command(flatten)]
        model: ModelArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Embed images and write their features as a safetensors file (tensor `features`, [N, D],
    /// rows in argument order, not L2-normalised).
    Embed {
        #[command(flatten)]
        model: ModelArgs,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Images (PNG or JPEG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Classify images against a support folder holding one sub-folder of example images per
    /// class (the folder name is the label). One line per image: path, label, probability.
    Classify {
        #[command(flatten)]
        model: ModelArgs,
        /// Folder of class folders.
        #[arg(long)]
        support: PathBuf,
        /// logistic or prototype.
        #[arg(long, default_value = "logistic")]
        classifier: String,
        /// Answer "unknown" when the best probability is below this.
        #[arg(long)]
        threshold: Option<f64>,
        /// One JSON object per line: path, label, probability, probabilities.
        #[arg(long)]
        json: bool,
        /// Images to classify.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct ModelArgs {
    /// Model file (safetensors).
    #[arg(long)]
    model: PathBuf,
    /// cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Override a metadata entry, KEY=VALUE (repeatable), e.g. --meta image_size=28.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

impl ModelArgs {
    fn load(&self) -> Result<Model, Error> {
        let mut overrides = BTreeMap::new();
        for entry in &self.meta {
            let (k, v) = entry.split_once('=').ok_or_else(|| {
                Error::InvalidArgument(format!("--meta {entry:?}: expected KEY=VALUE"))
            })?;
            overrides.insert(k.to_string(), v.to_string());
        }
        let options = LoadOptions {
            device: self.device.parse::<DeviceChoice>()?,
            metadata_overrides: overrides,
        };
        Model::load(&self.model, &options)
    }
}

/// A progress bar on stderr, shown only for more than a handful of items.
fn progress(len: usize, what: &str) -> ProgressBar {
    if len <= 8 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn info(model: &Model, json: bool) -> Result<(), Error> {
    let info = model.info();
    if json {
        let text = serde_json::to_string(info)
            .map_err(|e| Error::Backend(format!("cannot serialise model info: {e}")))?;
        println!("{text}");
    } else {
        println!("architecture: {}", info.arch);
        println!("widths:       {:?}", info.widths);
        println!(
            "input:        {} channel(s), {}x{} px",
            info.in_channels, info.image_size.0, info.image_size.1
        );
        println!(
            "normalise:    mean {:?}, std {:?}, invert {}",
            info.mean, info.std, info.invert
        );
        println!("feature dim:  {}", info.feature_dim);
        println!("device:       {}", info.device);
        println!("fingerprint:  {}", info.fingerprint);
    }
    Ok(())
}

fn embed(model: &Model, out: &Path, images: &[PathBuf]) -> Result<(), Error> {
    let dim = model.feature_dim();
    let bar = progress(images.len(), "embedding");
    let mut features: Vec<f32> = Vec::with_capacity(images.len() * dim);
    for chunk in images.chunks(16) {
        let rows = model.embed_paths(chunk)?;
        features.extend(rows.iter());
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![images.len(), dim],
        &bytes,
    )
    .map_err(|e| Error::Backend(format!("cannot build output tensor: {e}")))?;
    let metadata = HashMap::from([
        (
            "model_fingerprint".to_string(),
            model.info().fingerprint.clone(),
        ),
        (
            "images".to_string(),
            serde_json::to_string(images).unwrap_or_default(),
        ),
    ]);
    let file = safetensors::serialize([("features", view)], Some(metadata))
        .map_err(|e| Error::Backend(format!("cannot serialise features: {e}")))?;
    mgecl::atomic::write_file(out, &file)?;
    eprintln!(
        "wrote {} x {dim} features to {}",
        images.len(),
        out.display()
    );
    Ok(())
}

/// Image files directly inside `dir`, sorted by name.
fn images_in(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::Io {
        path: dir.into(),
        source: e,
    })? {
        let path = entry
            .map_err(|e| Error::Io {
                path: dir.into(),
                source: e,
            })?
            .path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if path.is_file() && matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

struct ClassifyArgs {
    support: PathBuf,
    classifier: String,
    threshold: Option<f64>,
    json: bool,
    images: Vec<PathBuf>,
}

fn classify(model: Model, args: ClassifyArgs) -> Result<(), Error> {
    let config = TaskConfig {
        classifier: args.classifier.parse::<ClassifierKind>()?,
        threshold: args.threshold,
        ..TaskConfig::default()
    };
    let mut task = Task::new(Arc::new(model), config)?;
    let mut class_dirs: Vec<PathBuf> = std::fs::read_dir(&args.support)
        .map_err(|e| Error::Io {
            path: args.support.clone(),
            source: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    class_dirs.sort();
    let total: usize = class_dirs
        .iter()
        .map(|d| images_in(d).map(|v| v.len()).unwrap_or(0))
        .sum();
    let bar = progress(total + args.images.len(), "embedding");
    for dir in &class_dirs {
        let label = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        task.add_class(&label)?;
        for image in images_in(dir)? {
            task.add_example_path(&label, &image)?;
            bar.inc(1);
        }
    }
    let report = task.fit()?;
    if !report.converged {
        eprintln!(
            "warning: the classifier did not converge (gradient {:.2e})",
            report.gradient_max_abs
        );
    }
    let labels: Vec<String> = task.classes().into_iter().map(|c| c.label).collect();
    let mut answers = Vec::with_capacity(args.images.len());
    for chunk in args.images.chunks(16) {
        answers.extend(task.classify_paths(chunk)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
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
                "probabilities": probabilities,
            });
            println!("{line}");
        } else {
            println!("{}\t{label}\t{:.4}", path.display(), answer.probability);
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Info { model, json } => info(&model.load()?, json),
        Command::Embed { model, out, images } => embed(&model.load()?, &out, &images),
        Command::Classify {
            model,
            support,
            classifier,
            threshold,
            json,
            images,
        } => classify(
            model.load()?,
            ClassifyArgs {
                support,
                classifier,
                threshold,
                json,
                images,
            },
        ),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
