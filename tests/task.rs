//! The few-shot task API: sklearn parity from stored features, images end to end, open-set
//! threshold, persistence, and every documented error.

use mgecl_test_support as common;

use std::sync::Arc;

use common::{data, lr_fixture, synthetic_conv4};
use mgecl::task::augmented_copy;
use mgecl::task::TASK_DEFAULTS_KEY;
use mgecl::{
    Augmentation, ClassifierKind, Error, ImageSource, LoadOptions, Model, ModelProblem, Task,
    TaskConfig,
};
use ndarray::{Array2, Axis};

/// The logistic-regression classifier (the fixtures are scikit-learn's; the default is prototype).
fn logistic() -> TaskConfig {
    TaskConfig {
        classifier: ClassifierKind::Logistic,
        ..TaskConfig::default()
    }
}

fn task_from_fixture(name: &str, config: TaskConfig) -> (Task, lr_fixture::Fixture) {
    let fx = lr_fixture::load(name);
    let model = synthetic_conv4(fx.support.ncols());
    let mut task = Task::new(model, config).unwrap();
    for k in 0..fx.n_classes {
        task.add_class(&format!("class {k}")).unwrap();
    }
    for (row, &label) in fx.support.axis_iter(Axis(0)).zip(&fx.support_labels) {
        let feature: Vec<f32> = row.iter().map(|&v| v as f32).collect();
        task.add_example_feature(&format!("class {label}"), &feature)
            .unwrap();
    }
    (task, fx)
}

#[test]
fn logistic_task_matches_sklearn_on_every_fixture() {
    for name in ["lr_5w1s", "lr_5w5s", "lr_20w1s"] {
        let (mut task, fx) = task_from_fixture(name, logistic());
        let report = task.fit().unwrap();
        assert!(report.converged, "{name}: {report:?}");
        let query: Array2<f32> = fx.query.mapv(|v| v as f32);
        let proba = task.predict_proba(query.view()).unwrap();
        let dp = lr_fixture::max_abs_diff(proba.iter(), fx.proba.iter());
        let lr = task.logistic_model().unwrap();
        let dc = lr_fixture::max_abs_diff(lr.coef().iter(), fx.coef.iter());
        let di = lr_fixture::max_abs_diff(
            lr_fixture::centred(&lr.intercept().to_owned()).iter(),
            lr_fixture::centred(&fx.intercept).iter(),
        );
        println!(
            "{name}: proba {dp:.2e} coef {dc:.2e} intercept {di:.2e} grad {:.2e}",
            report.gradient_max_abs
        );
        assert!(
            dp <= 1e-5 && dc <= 1e-4 && di <= 1e-4,
            "{name}: proba {dp} coef {dc} intercept {di}"
        );
        let predictions = task.classify_features(query.view()).unwrap();
        for (p, &expected) in predictions.iter().zip(&fx.pred) {
            assert_eq!(p.class_index, expected, "{name}");
            assert_eq!(
                p.label.as_deref(),
                Some(format!("class {expected}").as_str())
            );
            assert_eq!(p.probabilities.len(), fx.n_classes);
        }
    }
}

#[test]
fn prototype_task_matches_a_hand_computation() {
    let model = synthetic_conv4(4);
    let config = TaskConfig {
        classifier: ClassifierKind::Prototype,
        temperature: 0.5,
        ..Default::default()
    };
    let mut task = Task::new(model, config).unwrap();
    task.add_class("x").unwrap();
    task.add_class("y").unwrap();
    // Class x: (2,0,0,0) and (0,3,0,0) normalise to e1, e2: mean (0.5,0.5,0,0) -> (1,1,0,0)/sqrt2.
    task.add_example_feature("x", &[2.0, 0.0, 0.0, 0.0])
        .unwrap();
    task.add_example_feature("x", &[0.0, 3.0, 0.0, 0.0])
        .unwrap();
    // Class y: e3.
    task.add_example_feature("y", &[0.0, 0.0, 5.0, 0.0])
        .unwrap();
    task.fit().unwrap();
    // Query e1: cos to x = 1/sqrt2, to y = 0. Logits /0.5: sqrt2, 0.
    let p = task
        .classify_features(
            Array2::from_shape_vec((1, 4), vec![7.0, 0.0, 0.0, 0.0])
                .unwrap()
                .view(),
        )
        .unwrap();
    let expected_x = 1.0 / (1.0 + (-(2f64.sqrt())).exp());
    assert!((p[0].probability - expected_x).abs() < 1e-12, "{:?}", p[0]);
    assert_eq!(p[0].label.as_deref(), Some("x"));
    assert_eq!(p[0].top_k(1), vec![(0, p[0].probability)]);
}

fn conv4_model() -> Arc<Model> {
    Arc::new(Model::load(data("conv4_gray.safetensors"), &LoadOptions::default()).unwrap())
}

fn image(i: usize) -> std::path::PathBuf {
    data(&format!("conv4_gray_inputs/{i}.png"))
}

#[test]
fn images_end_to_end_with_threshold_and_augmentation() {
    let model = conv4_model();
    for copies in [0, 3] {
        let mut task = Task::new(
            model.clone(),
            TaskConfig {
                augmented_copies: copies,
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..3 {
            task.add_class(&format!("img{i}")).unwrap();
            task.add_example_path(&format!("img{i}"), image(i)).unwrap();
        }
        let report = task.fit().unwrap();
        assert_eq!(report.rows, 3 * (1 + copies));
        assert!(report.converged);
        let answers = task
            .classify_paths(&[image(0), image(1), image(2)])
            .unwrap();
        for (i, a) in answers.iter().enumerate() {
            assert_eq!(
                a.label.as_deref(),
                Some(format!("img{i}").as_str()),
                "copies {copies}: {a:?}"
            );
            assert!((a.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        // Raw bytes classify the same as the path.
        let bytes = std::fs::read(image(1)).unwrap();
        let from_bytes = task.classify(&[ImageSource::Encoded(&bytes)]).unwrap();
        assert_eq!(from_bytes[0], answers[1]);

        let mut strict = task.config().clone();
        strict.threshold = Some(1.0);
        task.set_config(strict).unwrap();
        assert!(matches!(
            task.classify_paths(&[image(0)]),
            Err(Error::NotFitted)
        ));
        task.fit().unwrap();
        // An image of no class (image 3): its best cosine to a class mean is below 1. (A
        // support image itself, without copies, is at cosine 1 up to rounding.)
        let rejected = task.classify_paths(&[image(3)]).unwrap();
        assert!(rejected[0].known_probability < 1.0, "{:?}", rejected[0]);
        assert_eq!(
            rejected[0].label, None,
            "probability < 1 is below threshold 1"
        );
    }
}

#[test]
fn save_and_load_round_trip() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let path = dir.join("task.safetensors");
    let (mut task, fx) = task_from_fixture(
        "lr_5w1s",
        TaskConfig {
            threshold: Some(0.3),
            ..Default::default()
        },
    );
    task.fit().unwrap();
    task.save(&path).unwrap();
    let loaded = Task::load(&path, task.model().clone()).unwrap();
    assert_eq!(loaded.classes(), task.classes());
    assert_eq!(loaded.config(), task.config());
    assert!(loaded.is_fitted());
    let query: Array2<f32> = fx.query.mapv(|v| v as f32);
    assert_eq!(
        loaded.classify_features(query.view()).unwrap(),
        task.classify_features(query.view()).unwrap()
    );

    // An unfitted task stays unfitted; ids continue after the saved ones.
    let mut unfitted = Task::new(task.model().clone(), TaskConfig::default()).unwrap();
    unfitted.add_class("a").unwrap();
    let first = unfitted.add_example_feature("a", &vec![1.0; 160]).unwrap();
    unfitted.save(&path).unwrap();
    let mut back = Task::load(&path, task.model().clone()).unwrap();
    assert!(!back.is_fitted());
    assert!(back.add_example_feature("a", &vec![2.0; 160]).unwrap() > first);
}

#[test]
fn damaged_or_foreign_task_files_are_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let path = dir.join("task.safetensors");
    let (mut task, _) = task_from_fixture("lr_5w1s", TaskConfig::default());
    task.fit().unwrap();
    task.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let model = task.model().clone();
    let load = |b: &[u8]| Task::from_bytes(b, model.clone());

    let truncated = load(&bytes[..bytes.len() - 7]).err().unwrap();
    assert!(
        matches!(truncated, Error::InvalidTaskFile(_)),
        "{truncated}"
    );
    // Flip one bit of one feature value.
    let mut tampered = bytes.clone();
    let n = tampered.len();
    tampered[n - 10] ^= 0x01;
    let err = load(&tampered).err().unwrap();
    assert!(
        matches!(err, Error::InvalidTaskFile(ref m) if m.contains("checksum")),
        "{err}"
    );
    // Edit a label in the header (same length, so the file stays well-formed).
    let text = String::from_utf8_lossy(&bytes).replace("class 3", "class 9");
    let err = load(text.as_bytes()).err().unwrap();
    assert!(matches!(err, Error::InvalidTaskFile(_)), "{err}");
    let err = load(&std::fs::read(data("conv4_gray.safetensors")).unwrap())
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidTaskFile(_)), "{err}");
    let err = load(b"garbage").err().unwrap();
    assert!(matches!(err, Error::InvalidTaskFile(_)), "{err}");
    // Another model with the same feature size.
    let other = common::synthetic_conv4_seeded(160, 7);
    assert_eq!(other.feature_dim(), model.feature_dim());
    let err = Task::load(&path, other).err().unwrap();
    assert!(matches!(err, Error::ModelMismatch { .. }), "{err}");
    let err = Task::load(dir.join("missing.safetensors"), model.clone())
        .err()
        .unwrap();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn every_documented_task_error() {
    let model = synthetic_conv4(8);
    let mut task = Task::new(model.clone(), logistic()).unwrap();
    let f = [0.5f32; 8];
    let q = Array2::<f32>::ones((1, 8));
    assert!(matches!(
        task.classify_features(q.view()),
        Err(Error::NotFitted)
    ));
    assert!(
        matches!(task.fit(), Err(Error::InvalidTask(_))),
        "no classes"
    );
    task.add_class("a").unwrap();
    task.add_example_feature("a", &f).unwrap();
    assert!(
        matches!(task.fit(), Err(Error::InvalidTask(_))),
        "one class"
    );
    assert!(matches!(task.add_class("a"), Err(Error::DuplicateLabel(_))));
    assert!(matches!(task.add_class(""), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        task.add_class("bad\nlabel"),
        Err(Error::InvalidArgument(_))
    ));
    task.add_class("b").unwrap();
    let err = task.fit().err().unwrap();
    assert!(
        matches!(err, Error::InvalidTask(ref m) if m.contains("\"b\"")),
        "{err}"
    );
    assert!(matches!(
        task.add_example_feature("zzz", &f),
        Err(Error::UnknownLabel(_))
    ));
    assert!(matches!(
        task.remove_class("zzz"),
        Err(Error::UnknownLabel(_))
    ));
    assert!(matches!(
        task.add_example_feature("b", &[1.0; 7]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        task.add_example_feature("b", &[f32::NAN; 8]),
        Err(Error::InvalidArgument(_))
    ));
    let id = task.add_example_feature("b", &[-0.5; 8]).unwrap();
    task.fit().unwrap();
    assert!(matches!(
        task.classify_features(Array2::<f32>::ones((1, 9)).view()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        task.classify_features(Array2::<f32>::from_elem((1, 8), f32::INFINITY).view()),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        task.classify_features(q.view()).unwrap()[0]
            .label
            .as_deref(),
        Some("a")
    );
    // Changing the task un-fits it.
    task.remove_example(id).unwrap();
    assert!(matches!(
        task.classify_features(q.view()),
        Err(Error::NotFitted)
    ));
    assert!(matches!(
        task.remove_example(id),
        Err(Error::UnknownExample(_))
    ));
    for bad in [
        TaskConfig {
            alpha: 0.0,
            ..Default::default()
        },
        TaskConfig {
            temperature: -1.0,
            ..Default::default()
        },
        TaskConfig {
            max_iterations: 0,
            ..Default::default()
        },
        TaskConfig {
            threshold: Some(1.5),
            ..Default::default()
        },
        TaskConfig {
            augmented_copies: 100,
            ..Default::default()
        },
    ] {
        assert!(matches!(
            Task::new(model.clone(), bad),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert_eq!(
        task.classes()
            .iter()
            .map(|c| c.example_ids.len())
            .collect::<Vec<_>>(),
        vec![1, 0]
    );
}

/// FNV-1a, 64 bit (the task file's checksum, computed here independently).
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A task file with its metadata edited by `edit` and the checksum recomputed, as a
/// deliberate (not accidental) modification would be.
fn edited_task_file(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&metadata["config"]).unwrap();
    edit(&mut config);
    metadata.insert("config".into(), config.to_string());
    let features = st.tensor("features").unwrap();
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != "checksum").collect();
    keys.sort();
    let mut hash = fnv1a(0xcbf2_9ce4_8422_2325, features.data());
    for k in keys {
        hash = fnv1a(
            fnv1a(fnv1a(hash, k.as_bytes()), &[0]),
            metadata[k].as_bytes(),
        );
    }
    metadata.insert("checksum".into(), format!("{hash:016x}"));
    safetensors::serialize([("features", features)], Some(metadata)).unwrap()
}

#[test]
fn task_limits_are_enforced_and_configurable() {
    let config = TaskConfig {
        max_classes: 3,
        max_rows: 4,
        ..TaskConfig::default()
    };
    let model = synthetic_conv4(8);
    let mut task = Task::new(model.clone(), config.clone()).unwrap();
    for label in ["a", "b", "c"] {
        task.add_class(label).unwrap();
    }
    let err = task.add_class("d").err().unwrap();
    assert!(
        matches!(err, Error::LimitExceeded(ref m) if m.contains("max_classes")),
        "{err}"
    );
    for (i, label) in ["a", "b", "c", "a"].iter().enumerate() {
        task.add_example_feature(label, &[i as f32 + 1.0; 8])
            .unwrap();
    }
    let before = task.classes();
    let err = task.add_example_feature("b", &[1.0; 8]).err().unwrap();
    assert!(
        matches!(err, Error::LimitExceeded(ref m) if m.contains("max_rows")),
        "{err}"
    );
    assert_eq!(task.classes(), before, "a refused example changes nothing");
    // Limits below the current content are refused; raising them lets the task grow.
    let err = task
        .set_config(TaskConfig {
            max_rows: 3,
            ..config.clone()
        })
        .err()
        .unwrap();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
    assert_eq!(task.config(), &config);
    let invalid = TaskConfig {
        max_classes: 1,
        ..config.clone()
    };
    assert!(matches!(
        Task::new(model.clone(), invalid),
        Err(Error::InvalidArgument(_))
    ));
    task.set_config(TaskConfig {
        max_rows: 5,
        ..config.clone()
    })
    .unwrap();
    task.add_example_feature("b", &[1.0; 8]).unwrap();

    // Augmented copies count as rows: 1 + 2 copies per image.
    let images = conv4_model();
    let mut augmented = Task::new(
        images,
        TaskConfig {
            augmented_copies: 2,
            max_rows: 5,
            ..TaskConfig::default()
        },
    )
    .unwrap();
    augmented.add_class("zero").unwrap();
    augmented.add_example_path("zero", image(0)).unwrap();
    let err = augmented.add_example_path("zero", image(1)).err().unwrap();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err}");

    // A task file holding more than its own limits allow is refused on load; a file written
    // before the limits existed loads with the defaults.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let path = dir.join("task.safetensors");
    task.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let shrunk = edited_task_file(&bytes, |c| c["max_classes"] = 2.into());
    let err = Task::from_bytes(&shrunk, model.clone()).err().unwrap();
    assert!(
        matches!(err, Error::LimitExceeded(ref m) if m.contains("max_classes")),
        "{err}"
    );
    let old = edited_task_file(&bytes, |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("max_classes");
        c.remove("max_rows");
    });
    let loaded = Task::from_bytes(&old, model.clone()).unwrap();
    assert_eq!(
        loaded.config().max_classes,
        mgecl::task::DEFAULT_MAX_CLASSES
    );
    assert_eq!(loaded.config().max_rows, mgecl::task::DEFAULT_MAX_ROWS);
    assert_eq!(loaded.classes(), task.classes());
    // Before the augmentation kind was a setting, copies were flips and shifts.
    let old = edited_task_file(&bytes, |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("augmentation");
        c.remove("augment_queries");
    });
    let loaded = Task::from_bytes(&old, model).unwrap();
    assert_eq!(loaded.config().augmentation, Augmentation::FlipShift);
    assert!(!loaded.config().augment_queries);
}

/// Test-time augmentation of queries: `classify` answers what `classify_features` answers for
/// the mean direction of the image's and its copies' features, computed here by hand from
/// the model; the support example holds its copies' rows as `add_example_feature` takes them.
#[test]
fn augmented_queries_classify_the_mean_direction_of_their_copies() {
    let model = conv4_model();
    let config = TaskConfig {
        augmented_copies: 2,
        augment_queries: true,
        ..TaskConfig::default()
    };
    assert_eq!(config.augmentation, Augmentation::Rotate);
    let pre = model.preprocessor();
    // Each image and its two rotated copies, embedded by hand.
    let rows_of = |i: usize| -> Array2<f32> {
        let input = pre.preprocess(&ImageSource::Path(&image(i))).unwrap();
        let mut inputs = input.clone();
        for copy in 0..2 {
            inputs.extend(augmented_copy(
                &input,
                pre.input_shape(),
                Augmentation::Rotate,
                copy,
            ));
        }
        model.embed_preprocessed(&inputs).unwrap()
    };
    let mut by_images = Task::new(model.clone(), config.clone()).unwrap();
    let mut by_features = Task::new(model.clone(), config).unwrap();
    for i in 0..3 {
        let label = format!("img{i}");
        by_images.add_class(&label).unwrap();
        by_images.add_example_path(&label, image(i)).unwrap();
        by_features.add_class(&label).unwrap();
        let rows = rows_of(i);
        assert_ne!(
            rows.row(0),
            rows.row(1),
            "a rotated copy embeds differently"
        );
        by_features
            .add_example_feature(&label, rows.as_slice().unwrap())
            .unwrap();
    }
    assert_eq!(by_images.fit().unwrap().rows, 9);
    assert_eq!(by_features.fit().unwrap().rows, 9);
    let answers = by_images.classify_paths(&[image(0), image(2)]).unwrap();
    for (answer, i) in answers.iter().zip([0, 2]) {
        let rows = rows_of(i);
        let mut mean = ndarray::Array1::<f32>::zeros(rows.ncols());
        for row in rows.rows() {
            mean.scaled_add(1.0 / (3.0 * row.dot(&row).sqrt()), &row);
        }
        let expected = by_features
            .classify_features(mean.insert_axis(Axis(0)).view())
            .unwrap();
        assert_eq!(answer.label.as_deref(), Some(format!("img{i}").as_str()));
        assert_eq!(answer.class_index, expected[0].class_index);
        for (a, b) in answer.probabilities.iter().zip(&expected[0].probabilities) {
            assert!((a - b).abs() < 1e-5, "{answer:?} vs {:?}", expected[0]);
        }
    }
}

/// A task found by fuzzing (fuzz/regressions/task_from_bytes/): extreme feature values and
/// `gradient_tolerance = 1e-9`, below what f64 can resolve for it. argmin's line search then
/// looped forever inside `fit`; the solver tolerance floor makes it return.
#[test]
fn fit_returns_when_the_tolerance_is_below_float_precision() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let model_bytes = std::fs::read(root.join("seeds/task_model.safetensors")).unwrap();
    let model = Arc::new(Model::from_bytes(&model_bytes, &LoadOptions::default()).unwrap());
    let file = root.join("regressions/task_from_bytes/timeout-linesearch-tight-tolerance.task");
    let mut task = Task::from_bytes(&std::fs::read(file).unwrap(), model).unwrap();
    assert_eq!(task.config().gradient_tolerance, 1e-9);
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(task.fit()).unwrap());
    let report = receive
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("fit did not return within 60 s")
        .unwrap();
    // The caller's tolerance is out of reach: reported honestly, close to the floor.
    assert!(!report.converged, "{report:?}");
    assert!(report.gradient_max_abs < 1e-6, "{report:?}");
}

/// A model's `task_defaults` metadata: what `Model::task_defaults` gives (the rest of the
/// settings at their defaults), tasks made on it and saved under one value load under another
/// (the fingerprint ignores it), and bad values are BadMetadata.
#[test]
fn model_task_defaults_come_from_its_metadata() {
    let with = |value: &str| {
        Model::load(
            data("conv4_gray.safetensors"),
            &LoadOptions::default().with_metadata(TASK_DEFAULTS_KEY, value),
        )
    };
    let plain = conv4_model();
    assert_eq!(plain.task_defaults(), &TaskConfig::default());
    let model = Arc::new(
        with(r#"{"augmented_copies":2,"augment_queries":true,"classifier":"logistic"}"#).unwrap(),
    );
    let expected = TaskConfig {
        augmented_copies: 2,
        augment_queries: true,
        classifier: ClassifierKind::Logistic,
        ..TaskConfig::default()
    };
    assert_eq!(model.task_defaults(), &expected);
    assert_eq!(model.info().fingerprint, plain.info().fingerprint);

    // A task on the plain model loads against the one with defaults (same features).
    let mut task = Task::new(plain.clone(), plain.task_defaults().clone()).unwrap();
    task.add_class("zero").unwrap();
    task.add_example_path("zero", image(0)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("plain.task");
    task.save(&file).unwrap();
    Task::load(&file, model.clone()).unwrap();

    for bad in [
        "not json",
        r#"{"augmented_copies":9}"#,
        r#"{"augment_queries":true}"#,
        r#"{"alpha":2.0}"#,
        r#"{"augmentation":"mirror"}"#,
        r#"{"classifier":"svm"}"#,
    ] {
        match with(bad) {
            Err(Error::InvalidModel { problem, detail }) => {
                assert_eq!(problem, ModelProblem::BadMetadata, "{bad}");
                assert!(detail.contains(TASK_DEFAULTS_KEY), "{detail}");
            }
            other => panic!("{bad}: expected BadMetadata, got {:?}", other.map(|_| ())),
        }
    }
}

/// Releasing the engine's kept buffers, or keeping none at all, changes no feature.
#[test]
fn released_or_unpooled_buffers_give_the_same_features() {
    let model = Model::load(data("conv4_gray.safetensors"), &LoadOptions::default()).unwrap();
    let paths: Vec<_> = (0..4)
        .map(|i| data(&format!("conv4_gray_inputs/{i}.png")))
        .collect();
    let before = model.embed_paths(&paths).unwrap();
    mgecl::release_buffers();
    assert_eq!(model.embed_paths(&paths).unwrap(), before);
    // The limit is process-wide: tests running meanwhile only lose the reuse.
    mgecl::set_buffer_pool_limit(0);
    let unpooled = model.embed_paths(&paths).unwrap();
    mgecl::set_buffer_pool_limit(256 << 20);
    assert_eq!(unpooled, before);
}

/// A support folder (`Task::from_folder`, `support_classes`): one class per sub-folder, named by
/// it and sorted, its image files directly inside (other files, deeper folders, hidden folders
/// and files at the top ignored) give the task built by hand from the same files; a folder that
/// cannot be used names every damaged image and leaves the task as it was.
#[test]
fn a_support_folder_is_the_task_built_by_hand() {
    let scratch = tempfile::tempdir().unwrap();
    let support = scratch.path().join("support");
    let copy = |i: usize, to: &str| {
        let to = support.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(image(i), to).unwrap();
    };
    copy(0, "zero/b.png");
    copy(1, "zero/a.PNG");
    copy(2, "two/x.png");
    copy(3, "two/deeper/y.png");
    copy(3, ".hidden/z.png");
    copy(3, "top.png");
    std::fs::write(support.join("zero/notes.txt"), "not an image").unwrap();

    let classes = mgecl::task::support_classes(&support).unwrap();
    let listed: Vec<(&str, Vec<&str>)> = classes
        .iter()
        .map(|c| {
            let names = c
                .images
                .iter()
                .map(|p| p.file_name().unwrap().to_str().unwrap());
            (c.label.as_str(), names.collect())
        })
        .collect();
    assert_eq!(
        listed,
        vec![("two", vec!["x.png"]), ("zero", vec!["a.PNG", "b.png"])]
    );

    let model = conv4_model();
    let from_folder = Task::from_folder(model.clone(), TaskConfig::default(), &support).unwrap();
    let mut by_hand = Task::new(model.clone(), TaskConfig::default()).unwrap();
    for (label, files) in [("two", &["x.png"][..]), ("zero", &["a.PNG", "b.png"])] {
        by_hand.add_class(label).unwrap();
        for file in files {
            by_hand
                .add_example_path(label, support.join(label).join(file))
                .unwrap();
        }
    }
    by_hand.fit().unwrap();
    let queries: Vec<_> = (0..4).map(image).collect();
    let a = from_folder.classify_paths(&queries).unwrap();
    let b = by_hand.classify_paths(&queries).unwrap();
    for (a, b) in a.iter().zip(&b) {
        assert_eq!((&a.label, a.probability), (&b.label, b.probability));
    }

    // Damaged images: every one named (up to 20, then counted); the task keeps its classes.
    let damaged = scratch.path().join("damaged");
    for i in 0..23 {
        let class = damaged.join(format!("class{}", i % 2));
        std::fs::create_dir_all(&class).unwrap();
        std::fs::write(
            class.join(format!("broken{i:02}.png")),
            b"\x89PNG\r\n\x1a\n cut",
        )
        .unwrap();
    }
    let mut task = Task::new(model.clone(), TaskConfig::default()).unwrap();
    task.add_class("kept").unwrap();
    let err = task.add_folder(&damaged).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::InvalidImage(_)), "{err}");
    assert!(
        message.contains("23 images") && message.contains("and 3 more"),
        "{message}"
    );
    assert_eq!(message.matches("broken").count(), 20, "{message}");
    let labels: Vec<String> = task.classes().into_iter().map(|c| c.label).collect();
    assert_eq!(labels, ["kept"]);
    // One damaged image: its own error; a class the task has: refused before reading.
    std::fs::write(support.join("zero/c.png"), b"not a png").unwrap();
    let Err(err) = Task::from_folder(model.clone(), TaskConfig::default(), &support) else {
        panic!("a damaged image was accepted");
    };
    assert!(
        matches!(&err, Error::InvalidImage(m) if m.contains("c.png")),
        "{err}"
    );
    std::fs::remove_file(support.join("zero/c.png")).unwrap();
    let mut task = Task::new(model.clone(), TaskConfig::default()).unwrap();
    task.add_class("zero").unwrap();
    assert!(matches!(
        task.add_folder(&support),
        Err(Error::DuplicateLabel(l)) if l == "zero"
    ));
    // No class folder; an empty class folder; no folder.
    std::fs::create_dir_all(support.join("empty")).unwrap();
    for (folder, says) in [
        (support.join("zero"), "no class folders"),
        (support.clone(), "empty"),
    ] {
        let err = mgecl::task::support_classes(&folder).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains(says)),
            "{err}"
        );
    }
    assert!(matches!(
        mgecl::task::support_classes(scratch.path().join("missing")),
        Err(Error::Io { .. })
    ));
}
