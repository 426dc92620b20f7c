//! The shipped default model on the shipped example images (val-alphabet characters it never
//! trained on): 6-way 1-shot, four queries per character. Catches a broken model file or a
//! preprocessing change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mgecl::{ClassifierKind, LoadOptions, Model, Task, TaskConfig};

/// At least this many of the 24 queries must be right (the model scores 99.0-99.1% on 5-way
/// 1-shot val episodes, with and without its recommended augmentation, both classifiers;
/// 24/24 is typical, 21 leaves room for a hard drawing or two).
const MIN_CORRECT: usize = 21;

fn sorted(dir: &Path, want_dirs: bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_dir() == want_dirs && (want_dirs || p.extension().is_some_and(|e| e == "png"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn shipped_model_recognises_unseen_characters_from_one_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Arc::new(
        Model::load(
            root.join("models/omniglot-conv4.safetensors"),
            &LoadOptions::default(),
        )
        .unwrap(),
    );
    let images = root.join("examples/data/omniglot");
    // The model's recommended settings (test-time augmentation), then none.
    let recommended = model.task_defaults().clone();
    assert!(recommended.augment_queries && recommended.augmented_copies > 0);
    let plain = TaskConfig {
        augmented_copies: 0,
        augment_queries: false,
        ..recommended.clone()
    };
    for (classifier, base) in [
        (ClassifierKind::Prototype, &recommended),
        (ClassifierKind::Logistic, &recommended),
        (ClassifierKind::Prototype, &plain),
    ] {
        let config = TaskConfig {
            classifier,
            ..base.clone()
        };
        let name = format!("{classifier:?}, {} copies", config.augmented_copies);
        let mut task = Task::new(model.clone(), config).unwrap();
        let mut queries = Vec::new();
        for folder in sorted(&images, true) {
            let label = folder.file_name().unwrap().to_string_lossy().into_owned();
            let files = sorted(&folder, false);
            task.add_class(&label).unwrap();
            task.add_example_path(&label, &files[0]).unwrap();
            queries.extend(files[1..].iter().map(|f| (f.clone(), label.clone())));
        }
        assert_eq!(queries.len(), 24);
        assert!(task.fit().unwrap().converged);
        let paths: Vec<&Path> = queries.iter().map(|(p, _)| p.as_path()).collect();
        let answers = task.classify_paths(&paths).unwrap();
        let correct = answers
            .iter()
            .zip(&queries)
            .filter(|(a, (_, l))| a.label.as_deref() == Some(l.as_str()))
            .count();
        println!("{name}: {correct}/24");
        assert!(correct >= MIN_CORRECT, "{name}: only {correct}/24 correct");
    }
}

/// Every string in a JSON value.
fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

#[test]
fn shipped_model_metadata_names_no_path_of_the_machine_it_was_made_on() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load(
        root.join("models/omniglot-conv4.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    let metadata = &model.info().metadata;
    assert!(
        metadata.contains_key("calibration"),
        "the shipped model is calibrated"
    );
    let training: serde_json::Value =
        serde_json::from_str(metadata.get("training").expect("training metadata")).unwrap();
    let mut texts: Vec<String> = metadata.values().cloned().collect();
    strings(&training, &mut texts);
    for text in texts {
        let windows_drive = text.as_bytes().get(1..3) == Some(b":\\".as_slice());
        assert!(
            !text.starts_with('/') && !text.starts_with('~') && !windows_drive,
            "absolute path in the shipped model's metadata: {text:?}"
        );
    }
}
