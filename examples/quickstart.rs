//! Quickstart: recognise handwritten characters the model has never seen, from one example
//! each.
//!
//!     cargo run --release --example quickstart [MODEL] [IMAGES_DIR]
//!
//! Loads the shipped default model, registers each character folder of
//! `examples/data/omniglot` from its first image, fits the task, classifies every other image
//! and prints each answer and the accuracy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mgecl::{LoadOptions, Model, Task};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let model_path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models/omniglot-conv4.safetensors"));
    let images = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("examples/data/omniglot"));

    let model = Arc::new(Model::load(&model_path, &LoadOptions::default())?);
    let info = model.info();
    println!(
        "model: {} {:?}, {}x{} input, {}-d features on {}",
        info.arch,
        info.widths,
        info.input.image_size.0,
        info.input.image_size.1,
        info.feature_dim,
        info.device
    );

    // One class per folder; its first image (sorted) is the single support example.
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&images)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    // The settings the model recommends (the shipped one: 4 rotated copies of every image).
    let config = model.task_defaults().clone();
    let mut task = Task::new(model.clone(), config.clone())?;
    let mut queries: Vec<(PathBuf, String)> = Vec::new();
    for folder in &folders {
        let label = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(folder)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "png"))
            .collect();
        files.sort();
        let Some((support, rest)) = files.split_first() else {
            continue;
        };
        task.add_class(&label)?;
        task.add_example_path(&label, support)?;
        queries.extend(rest.iter().map(|p| (p.clone(), label.clone())));
    }
    let report = task.fit()?;
    println!(
        "fitted a {}-way 1-shot {:?} classifier on {} rows ({} {} copies per image{}; \
         converged: {})",
        report.classes,
        report.classifier,
        report.rows,
        config.augmented_copies,
        config.augmentation,
        if config.augment_queries {
            ", queries too"
        } else {
            ""
        },
        report.converged
    );

    let paths: Vec<&Path> = queries.iter().map(|(p, _)| p.as_path()).collect();
    let answers = task.classify_paths(&paths)?;
    let mut correct = 0;
    for ((path, truth), answer) in queries.iter().zip(&answers) {
        let label = answer.label.as_deref().unwrap_or("unknown");
        let mark = if label == truth {
            correct += 1;
            "ok"
        } else {
            "WRONG"
        };
        let name = path.strip_prefix(&images).unwrap_or(path).display();
        println!(
            "{name:<45} -> {label:<30} p={:.3}  {mark}",
            answer.probability
        );
    }
    println!(
        "accuracy: {correct}/{} = {:.1}%",
        queries.len(),
        100.0 * correct as f64 / queries.len().max(1) as f64
    );
    Ok(())
}
