//! The evaluation protocol against the task API it stands for: an episodes file evaluated
//! with test-time augmentation (features of every image and its copies computed once, then
//! reused across episodes) gives, episode by episode, the answers of a task that embeds the
//! same images itself.

use mgecl_test_support as common;

use std::path::PathBuf;
use std::sync::Arc;

use mgecl::{LoadOptions, Model, Task, TaskConfig};
use mgecl_train::data::scan_classes;
use mgecl_train::evaluate::{EpisodeItem, EpisodeSpec, EpisodesFile};

#[test]
fn augmented_evaluation_matches_the_task_api_on_images() {
    let root = common::data("omniglot_mini");
    let model = Arc::new(
        Model::load(
            common::data("conv4_gray.safetensors"),
            &LoadOptions::default(),
        )
        .unwrap(),
    );
    let classes = scan_classes(&root, None).unwrap();
    // Three 4-way 1-shot episodes with 3 queries per class, from different classes.
    let mut episodes = Vec::new();
    for e in 0..3 {
        let mut spec = EpisodeSpec {
            support: Vec::new(),
            query: Vec::new(),
        };
        for class in classes.iter().skip(4 * e).take(4) {
            let item = |i: usize| EpisodeItem {
                label: class.name.clone(),
                path: class.files[i]
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            };
            spec.support.push(item(0));
            spec.query.extend((1..4).map(item));
        }
        episodes.push(spec);
    }
    let file = EpisodesFile { episodes };
    for (copies, augment_queries) in [(0, false), (2, false), (2, true)] {
        let config = TaskConfig {
            augmented_copies: copies,
            augment_queries,
            ..TaskConfig::default()
        };
        let result = file.evaluate(&root, &model, &config).unwrap();
        // The same episodes through tasks that embed the images (and copies) themselves.
        let mut accuracy = 0.0;
        let mut answers = Vec::new();
        for spec in &file.episodes {
            let mut task = Task::new(model.clone(), config.clone()).unwrap();
            for item in &spec.support {
                task.add_class(&item.label).unwrap();
                task.add_example_path(&item.label, root.join(&item.path))
                    .unwrap();
            }
            task.fit().unwrap();
            let paths: Vec<PathBuf> = spec.query.iter().map(|q| root.join(&q.path)).collect();
            let predictions = task.classify_paths(&paths).unwrap();
            let mut right = 0;
            for (p, q) in predictions.iter().zip(&spec.query) {
                let correct = p.label.as_deref() == Some(q.label.as_str());
                right += usize::from(correct);
                answers.push((p.probability, correct));
            }
            accuracy += right as f64 / spec.query.len() as f64 / file.episodes.len() as f64;
        }
        assert!(
            (result.accuracy - accuracy).abs() < 1e-12,
            "copies {copies}"
        );
        assert_eq!(result.answers.len(), answers.len());
        for (a, b) in result.answers.iter().zip(&answers) {
            assert_eq!(a.1, b.1, "copies {copies}");
            assert!((a.0 - b.0).abs() < 1e-5, "copies {copies}: {a:?} vs {b:?}");
        }
    }
}
