//! Calibrated probabilities and the open-set score: what the task computes from a model's
//! calibration, checked against the formulas computed by hand from the task's raw scores;
//! one-class tasks; the threshold; `calibrate_file` on real images.

use mgecl_test_support as common;

use std::sync::Arc;

use mgecl::classifier::calibration::{Calibration, OpenSetFn, ScaleFn};
use mgecl::{ClassifierKind, Error, LoadOptions, Model, Task, TaskConfig};
use mgecl_train::calibrate::{calibrate_file, with_calibration, CalibrateConfig};
use mgecl_train::rng::Rng;
use ndarray::Array2;

fn model_bytes() -> Vec<u8> {
    std::fs::read(common::data("conv4_gray.safetensors")).unwrap()
}

fn calibration() -> Calibration {
    Calibration {
        version: 1,
        logistic: ScaleFn {
            a: 1.2,
            b: 0.3,
            c: -0.4,
        },
        prototype: ScaleFn {
            a: 2.5,
            b: 0.2,
            c: 0.1,
        },
        open_set: OpenSetFn {
            w: [-4.0, 9.0, 0.2, -0.3],
        },
        fitted_on: serde_json::json!({}),
        unaugmented: None,
    }
}

/// [`calibration`] as fitted for augmented tasks, with other functions for unaugmented ones.
fn calibration_with_unaugmented() -> Calibration {
    Calibration {
        unaugmented: Some(Box::new(Calibration {
            logistic: ScaleFn {
                a: 0.4,
                b: -0.1,
                c: 0.6,
            },
            prototype: ScaleFn {
                a: 1.5,
                b: 0.4,
                c: -0.2,
            },
            open_set: OpenSetFn {
                w: [-2.0, 5.0, -0.1, 0.3],
            },
            ..calibration()
        })),
        ..calibration()
    }
}

fn calibrated_model() -> Arc<Model> {
    model_with(&calibration())
}

fn model_with(calibration: &Calibration) -> Arc<Model> {
    let bytes = with_calibration(&model_bytes(), calibration).unwrap();
    Arc::new(Model::from_bytes(&bytes, &LoadOptions::default()).unwrap())
}

fn random_rows(n: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| (0..64).map(|_| rng.normal() as f32).collect())
        .collect()
}

/// A task of `ways` classes with `shots` random examples each (each with the rows of its
/// augmented copies when the config asks for copies).
fn task(model: &Arc<Model>, config: TaskConfig, ways: usize, shots: usize) -> Task {
    let mut rng = Rng::new(7, 1);
    let rows_per_example = 1 + config.augmented_copies;
    let mut task = Task::new(model.clone(), config).unwrap();
    for k in 0..ways {
        task.add_class(&format!("c{k}")).unwrap();
        for _ in 0..shots {
            let rows = random_rows(rows_per_example, &mut rng).concat();
            task.add_example_feature(&format!("c{k}"), &rows).unwrap();
        }
    }
    task.fit().unwrap();
    task
}

fn queries() -> Array2<f32> {
    let rows = random_rows(6, &mut Rng::new(9, 2));
    Array2::from_shape_vec((6, 64), rows.concat()).unwrap()
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn calibrated_probabilities_are_scaled_scores_and_keep_the_winner() {
    let plain = calibration();
    let with_unaugmented = calibration_with_unaugmented();
    let unaugmented = *with_unaugmented.unaugmented.clone().unwrap();
    // (model's calibration, the task's augmented copies, the functions that must apply)
    let cases = [
        (&plain, 0, &plain),
        (&plain, 2, &plain),
        (&with_unaugmented, 0, &unaugmented),
        (&with_unaugmented, 2, &with_unaugmented),
    ];
    for (calibration, copies, applies) in cases {
        check_calibrated_answers(&model_with(calibration), copies, applies);
    }
}

/// Tasks of `model` with `copies` augmented copies answer with the probabilities and
/// known-probabilities that the functions of `c` give for their raw scores.
fn check_calibrated_answers(model: &Arc<Model>, copies: usize, c: &Calibration) {
    let (ways, shots) = (3usize, 2usize);
    for kind in [ClassifierKind::Logistic, ClassifierKind::Prototype] {
        let config = TaskConfig {
            classifier: kind,
            augmented_copies: copies,
            ..TaskConfig::default()
        };
        let calibrated = task(model, config.clone(), ways, shots);
        let raw = task(
            model,
            TaskConfig {
                calibrated: false,
                ..config
            },
            ways,
            shots,
        );
        let q = queries();
        let scores = calibrated.scores(q.view()).unwrap();
        let f = match kind {
            ClassifierKind::Logistic => c.logistic,
            ClassifierKind::Prototype => c.prototype,
        };
        let (lw, ls) = ((ways as f64).ln(), (shots as f64).ln());
        let s = (f.a + f.b * lw + f.c * ls).exp();
        let answers = calibrated.classify_features(q.view()).unwrap();
        let raw_answers = raw.classify_features(q.view()).unwrap();
        for (i, (a, r)) in answers.iter().zip(&raw_answers).enumerate() {
            let z: Vec<f64> = scores.classifier.row(i).iter().map(|v| s * v).collect();
            for (p, want) in a.probabilities.iter().zip(softmax(&z)) {
                assert!(
                    (p - want).abs() < 1e-12,
                    "{kind:?}, {copies} copies: {p} vs {want}"
                );
            }
            assert_eq!(
                a.class_index, r.class_index,
                "{kind:?}: calibration changed the winner"
            );
            assert_ne!(a.probabilities, r.probabilities);
            let w = c.open_set.w;
            let v = w[0] + w[1] * scores.best_cosine[i] + w[2] * lw + w[3] * ls;
            let known = 1.0 / (1.0 + (-v).exp());
            assert!((a.known_probability - known).abs() < 1e-12);
            assert_eq!(a.known_probability, r.known_probability);
        }
    }
}

#[test]
fn without_a_calibration_probabilities_are_raw_and_known_is_the_best_cosine() {
    let model = Arc::new(Model::from_bytes(&model_bytes(), &LoadOptions::default()).unwrap());
    assert!(model.calibration().is_none());
    let on = task(&model, TaskConfig::default(), 3, 2);
    let off = task(
        &model,
        TaskConfig {
            calibrated: false,
            ..TaskConfig::default()
        },
        3,
        2,
    );
    let q = queries();
    let scores = on.scores(q.view()).unwrap();
    for (i, (a, b)) in on
        .classify_features(q.view())
        .unwrap()
        .iter()
        .zip(off.classify_features(q.view()).unwrap())
        .enumerate()
    {
        assert_eq!(a.probabilities, b.probabilities);
        assert_eq!(a.known_probability, scores.best_cosine[i].clamp(0.0, 1.0));
    }
    // The calibration is not part of the fingerprint: tasks stay valid across it.
    assert_eq!(
        model.info().fingerprint,
        calibrated_model().info().fingerprint
    );
}

#[test]
fn a_single_class_task_answers_with_its_known_probability() {
    let model = calibrated_model();
    let mut rng = Rng::new(3, 3);
    let rows = random_rows(3, &mut rng);
    let mut task = Task::new(
        model.clone(),
        TaskConfig {
            classifier: ClassifierKind::Prototype,
            ..TaskConfig::default()
        },
    )
    .unwrap();
    task.add_class("this").unwrap();
    task.add_example_feature("this", &rows[0]).unwrap();
    task.fit().unwrap();
    // The support image itself, and an unrelated one.
    let q = Array2::from_shape_vec((2, 64), [rows[0].clone(), rows[1].clone()].concat()).unwrap();
    let answers = task.classify_features(q.view()).unwrap();
    for a in &answers {
        assert_eq!(a.probabilities, vec![a.known_probability]);
        assert_eq!(a.probability, a.known_probability);
    }
    assert!(
        answers[0].known_probability > 0.9,
        "{}",
        answers[0].known_probability
    );
    assert!(
        answers[1].known_probability < 0.5,
        "{}",
        answers[1].known_probability
    );
    // With a threshold the unrelated image is unknown, the support image is "this".
    let mut config = task.config().clone();
    config.threshold = Some(0.5);
    task.set_config(config).unwrap();
    task.fit().unwrap();
    let answers = task.classify_features(q.view()).unwrap();
    assert_eq!(answers[0].label.as_deref(), Some("this"));
    assert_eq!(answers[1].label, None);
    // Logistic regression needs two classes.
    let mut logistic = Task::new(
        model,
        TaskConfig {
            classifier: ClassifierKind::Logistic,
            ..TaskConfig::default()
        },
    )
    .unwrap();
    logistic.add_class("this").unwrap();
    logistic.add_example_feature("this", &rows[0]).unwrap();
    assert!(matches!(logistic.fit(), Err(Error::InvalidTask(_))));
}

#[test]
fn calibrate_file_fits_on_images_and_writes_a_loadable_model() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let out = dir.join("calibrated.safetensors");
    let config = CalibrateConfig {
        episodes_per_shape: 4,
        queries: 3,
        unknown_ways: 2,
        seed: 1,
    };
    // An override the model is loaded with is written into the calibrated file.
    let overrides = [("feature_power".to_string(), "0.5".to_string())].into();
    let fitted = calibrate_file(
        &common::data("conv4_gray.safetensors"),
        &overrides,
        &common::data("omniglot_mini"),
        None,
        &out,
        &config,
        false,
    )
    .unwrap();
    let model = Model::load(&out, &LoadOptions::default()).unwrap();
    assert_eq!(model.calibration(), Some(&fitted));
    assert_eq!(model.info().metadata["feature_power"], "0.5");
    assert_eq!(
        model.info().metadata["arch"],
        "conv4",
        "the file's own metadata is kept"
    );
    let text = &model.info().metadata["calibration"];
    assert!(
        !text.contains('/'),
        "calibration metadata names a path: {text}"
    );
}

/// A model that recommends test-time augmentation is calibrated on augmented tasks (support
/// copies, merged queries): the fit records it and differs from the plain fit on the same
/// episodes (it would not if the recommendation were ignored).
#[test]
fn calibration_follows_the_models_recommended_augmentation() {
    let scratch = tempfile::tempdir().unwrap();
    let config = CalibrateConfig {
        episodes_per_shape: 4,
        queries: 3,
        unknown_ways: 2,
        seed: 1,
    };
    let fit = |overrides: &std::collections::BTreeMap<String, String>, name: &str| {
        calibrate_file(
            &common::data("conv4_gray.safetensors"),
            overrides,
            &common::data("omniglot_mini"),
            None,
            &scratch.path().join(name),
            &config,
            false,
        )
        .unwrap()
    };
    let plain = fit(&Default::default(), "plain.safetensors");
    let augmented = fit(
        &[(
            "task_defaults".to_string(),
            r#"{"augmented_copies":2,"augment_queries":true}"#.to_string(),
        )]
        .into(),
        "augmented.safetensors",
    );
    assert_eq!(plain.fitted_on["augmented_copies"], 0);
    assert_eq!(augmented.fitted_on["augmented_copies"], 2);
    assert_eq!(augmented.fitted_on["augment_queries"], true);
    assert_ne!(plain.prototype, augmented.prototype);
    assert_ne!(plain.open_set, augmented.open_set);
    // For apps that turn the augmentation off, the augmented model also carries the plain fit
    // of the same episodes: what the model without the recommendation is calibrated with.
    assert_eq!(plain.unaugmented, None);
    assert_eq!(augmented.unaugmented.as_deref(), Some(&plain));
}

/// `centre`: the file gains the mean of the class means of the model's features on the data,
/// computed here by hand from `Model::embed_paths` per class folder; the centred model's
/// class means then average to zero, and centring it again finds the same centre (the one
/// it applies is added back).
#[test]
fn calibrate_file_centres_the_features_on_the_class_means() {
    let scratch = tempfile::tempdir().unwrap();
    let config = CalibrateConfig {
        episodes_per_shape: 2,
        queries: 3,
        unknown_ways: 2,
        seed: 1,
    };
    let data = common::data("omniglot_mini");
    let centre_with = |model: &std::path::Path, out: &str| {
        let out = scratch.path().join(out);
        calibrate_file(model, &Default::default(), &data, None, &out, &config, true).unwrap();
        let loaded = Model::load(&out, &LoadOptions::default()).unwrap();
        let centre: Vec<f64> =
            serde_json::from_str(&loaded.info().metadata["feature_mean"]).unwrap();
        (out, loaded, centre)
    };
    // The mean of the class means, by hand.
    let class_means = |model: &Model| -> Vec<Vec<f64>> {
        let scan = mgecl_train::data::scan_classes(&data, None).unwrap();
        assert!(scan.len() >= 5);
        scan.iter()
            .map(|class| {
                let features = model.embed_paths(&class.files).unwrap();
                let n = features.nrows() as f64;
                (0..features.ncols())
                    .map(|j| {
                        features
                            .column(j)
                            .iter()
                            .map(|&v| f64::from(v))
                            .sum::<f64>()
                            / n
                    })
                    .collect()
            })
            .collect()
    };
    let mean_of = |means: &[Vec<f64>]| -> Vec<f64> {
        (0..means[0].len())
            .map(|j| means.iter().map(|m| m[j]).sum::<f64>() / means.len() as f64)
            .collect()
    };
    let plain = Model::load(
        common::data("conv4_gray.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    let want = mean_of(&class_means(&plain));
    let (out, centred, centre) = centre_with(&common::data("conv4_gray.safetensors"), "c1");
    let worst = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    assert_eq!(centre.len(), plain.feature_dim());
    assert!(
        worst(&centre, &want) <= 1e-5,
        "centre off by {}",
        worst(&centre, &want)
    );
    assert!(
        want.iter().any(|v| v.abs() > 0.1),
        "a trivial centre checks nothing"
    );
    let zeros = vec![0.0; centre.len()];
    let after = mean_of(&class_means(&centred));
    assert!(
        worst(&after, &zeros) <= 1e-5,
        "centred class means average to {after:?}"
    );
    let (_, _, again) = centre_with(&out, "c2");
    assert!(worst(&again, &centre) <= 1e-5);
}
