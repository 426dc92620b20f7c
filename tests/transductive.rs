//! Transductive answers (`TaskConfig::transductive`) against the numpy reference of
//! `scripts/transductive_reference.py` (the method written again from its description), the
//! inductive fallback for small batches, and determinism.

use mgecl_test_support as common;

use std::sync::Arc;

use mgecl::{ClassifierKind, LoadOptions, Model, Task, TaskConfig};
use ndarray::Array2;
use serde_json::Value;

struct Case {
    model: Arc<Model>,
    classes: usize,
    support: Vec<Vec<f32>>,
    labels: Vec<usize>,
    queries: Array2<f32>,
    probabilities: Vec<Vec<f64>>,
    known: Vec<f64>,
}

fn rows_f64(value: &Value) -> Vec<Vec<f64>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Rows the reference rounded to f32 (exact).
fn rows(value: &Value) -> Vec<Vec<f32>> {
    rows_f64(value)
        .into_iter()
        .map(|r| r.into_iter().map(|v| v as f32).collect())
        .collect()
}

fn case(name: &str) -> Case {
    let path = common::data(&format!("transductive/{name}"));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let model_path = common::repo_root().join(json["model"].as_str().unwrap());
    let model = Arc::new(Model::load(model_path, &LoadOptions::default()).unwrap());
    let queries = rows(&json["queries"]);
    let dim = queries[0].len();
    let flat: Vec<f32> = queries.into_iter().flatten().collect();
    Case {
        model,
        classes: json["classes"].as_u64().unwrap() as usize,
        support: rows(&json["support"]),
        labels: json["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect(),
        queries: Array2::from_shape_vec((flat.len() / dim, dim), flat).unwrap(),
        probabilities: rows_f64(&json["probabilities"]),
        known: json["known_probability"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect(),
    }
}

fn fitted(case: &Case, config: TaskConfig) -> Task {
    let mut task = Task::new(case.model.clone(), config).unwrap();
    for k in 0..case.classes {
        task.add_class(&k.to_string()).unwrap();
    }
    for (row, &label) in case.support.iter().zip(&case.labels) {
        task.add_example_feature(&label.to_string(), row).unwrap();
    }
    task.fit().unwrap();
    task
}

/// The probabilities json stores as f64 are the reference's; compared to 1e-9 (only the
/// order of f64 sums differs).
fn check_against_reference(name: &str, config: TaskConfig) {
    let case = case(name);
    let task = fitted(
        &case,
        TaskConfig {
            transductive: true,
            ..config.clone()
        },
    );
    let answers = task.classify_features(case.queries.view()).unwrap();
    let mut worst: f64 = 0.0;
    for ((answer, expected), known) in answers.iter().zip(&case.probabilities).zip(&case.known) {
        for (p, e) in answer.probabilities.iter().zip(expected) {
            worst = worst.max((p - e).abs());
        }
        assert!(
            (answer.known_probability - known).abs() < 1e-9,
            "{name}: known-probability {} vs {known}",
            answer.known_probability
        );
    }
    assert!(worst < 1e-9, "{name}: probabilities differ by {worst}");
    // The refinement moved the answers: the inductive prototype answer is another.
    let inductive = fitted(
        &case,
        TaskConfig {
            classifier: ClassifierKind::Prototype,
            ..config
        },
    )
    .classify_features(case.queries.view())
    .unwrap();
    let moved = answers
        .iter()
        .zip(&inductive)
        .flat_map(|(a, b)| a.probabilities.iter().zip(&b.probabilities))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(moved > 1e-3, "{name}: transductive = inductive ({moved})");
}

#[test]
fn uncalibrated_task_matches_the_numpy_reference() {
    check_against_reference(
        "conv4_gray.json",
        TaskConfig {
            classifier: ClassifierKind::Prototype,
            ..TaskConfig::default()
        },
    );
}

/// The photo model's calibration: the prototype scale and the open-set function of its
/// unaugmented calibration (no copies), whatever classifier the task was fitted with.
#[test]
fn calibrated_task_matches_the_numpy_reference() {
    check_against_reference(
        "photo.json",
        TaskConfig {
            classifier: ClassifierKind::Logistic,
            ..TaskConfig::default()
        },
    );
}

/// Fewer than 2 queries per class: the inductive answer, bit for bit.
#[test]
fn small_batches_get_the_inductive_answer() {
    let case = case("conv4_gray.json");
    for kind in [ClassifierKind::Prototype, ClassifierKind::Logistic] {
        let config = TaskConfig {
            classifier: kind,
            ..TaskConfig::default()
        };
        let inductive = fitted(&case, config.clone());
        let transductive = fitted(
            &case,
            TaskConfig {
                transductive: true,
                ..config
            },
        );
        let few = case.queries.slice(ndarray::s![..5, ..]);
        assert_eq!(
            transductive.classify_features(few).unwrap(),
            inductive.classify_features(few).unwrap()
        );
    }
}

/// The same answers on one thread and on several.
#[test]
fn deterministic_across_thread_counts() {
    let case = case("photo.json");
    let task = fitted(
        &case,
        TaskConfig {
            transductive: true,
            ..TaskConfig::default()
        },
    );
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| task.classify_features(case.queries.view()).unwrap())
    };
    assert_eq!(on(1), on(4));
}

/// A task file keeps the setting.
#[test]
fn the_setting_survives_a_task_file() {
    let case = case("conv4_gray.json");
    let task = fitted(
        &case,
        TaskConfig {
            transductive: true,
            ..TaskConfig::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.task");
    task.save(&path).unwrap();
    let loaded = Task::load(&path, case.model.clone()).unwrap();
    assert!(loaded.config().transductive);
}
