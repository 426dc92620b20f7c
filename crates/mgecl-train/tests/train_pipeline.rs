//! The training pipeline end to end on a few Omniglot characters: pretraining lowers the loss
//! and beats the untrained encoder on held-out classes; a killed run resumes to the same
//! result; meta-training runs and produces a loadable model; bad configurations fail before
//! any work starts.

use mgecl_test_support as common;

use std::path::PathBuf;

use common::{data, training_log};
use mgecl::{DeviceChoice, LoadOptions, Model};
use mgecl_train::augment::AugmentConfig;
use mgecl_train::metatrain::{metatrain, MetatrainConfig};
use mgecl_train::net::{EncoderSpec, TrainNet};
use mgecl_train::optim::OptimConfig;
use mgecl_train::pretrain::{pretrain, PretrainConfig};
use mgecl_train::Error;
use mgecl_train::{
    checkpoint_bytes, model_metadata, validate, InputSpec, RunConfig, Silent, ValidationConfig,
};

/// A fresh folder, removed when the returned guard drops.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Run settings on the mini data set: train on two alphabets, validate on Tagalog.
fn run(out: PathBuf, val_every: usize, validation_episodes: usize, seed: u64) -> RunConfig {
    let root = data("omniglot_mini");
    RunConfig {
        data: root.clone(),
        train_list: Some(root.join("train.txt")),
        val_list: Some(root.join("val.txt")),
        rotate_classes: false,
        augment: AugmentConfig::preset("omniglot").unwrap(),
        val_every,
        validation: ValidationConfig {
            episodes: validation_episodes,
            ..Default::default()
        },
        seed,
        out_dir: out,
        stop_after: None,
        engine: Default::default(),
        max_step_bytes: mgecl_train::memory::DEFAULT_MAX_STEP_BYTES,
    }
}

fn config(out: PathBuf, epochs: usize) -> PretrainConfig {
    PretrainConfig {
        run: run(out, 1, 200, 3),
        net: EncoderSpec {
            arch: mgecl::Architecture::Conv4,
            widths: vec![32; 4],
            in_channels: 1,
        },
        image_size: 28,
        invert: true,
        mean_std: None,
        epochs,
        batch_size: 32,
        optim: OptimConfig {
            lr: 0.05,
            lr_milestones: vec![epochs.saturating_sub(1)],
            lr_decay: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            cosine_steps: None,
        },
        label_smoothing: 0.0,
        rotation_weight: 0.0,
        teacher: None,
    }
}

#[test]
fn pretraining_learns_and_beats_the_untrained_encoder() {
    let out_dir = scratch();
    let out = out_dir.path().to_path_buf();
    let cfg = config(out.clone(), 6);
    let summary = pretrain(&cfg, DeviceChoice::Cpu, false, &mut Silent).unwrap();
    let log = training_log(&out);
    assert_eq!(log.len(), 6);
    let first = log[0]["loss"].as_f64().unwrap();
    let last = log[5]["loss"].as_f64().unwrap();
    println!(
        "loss {first:.3} -> {last:.3}, {:.0} img/s",
        summary.images_per_second
    );
    assert!(last < 0.7 * first, "loss {first} -> {last}");

    // The untrained network of the same seed, validated on the same episodes.
    let untrained =
        TrainNet::new(cfg.net.clone(), 12, cfg.run.seed, &candle_core::Device::Cpu).unwrap();
    let best = std::fs::read(out.join("best.safetensors")).unwrap();
    let model = Model::from_bytes(&best, &LoadOptions::default()).unwrap();
    let info = model.info();
    let input: InputSpec = info.input.clone();
    assert!(input.invert);
    let untrained_bytes = checkpoint_bytes(
        &untrained,
        None,
        &model_metadata(&cfg.net, &input, &serde_json::json!({})),
    )
    .unwrap();
    let root = data("omniglot_mini");
    let classes = mgecl_train::data::scan_classes(&root, Some(&["Tagalog".to_string()])).unwrap();
    let val = mgecl_train::data::Dataset::load(&classes, model.preprocessor()).unwrap();
    let before = validate(&untrained_bytes, &val, &cfg.run.validation, cfg.run.seed).unwrap();
    let after = validate(&best, &val, &cfg.run.validation, cfg.run.seed).unwrap();
    println!(
        "5-way 1-shot on held-out Tagalog: untrained {:.3}, trained {:.3}",
        before.accuracy, after.accuracy
    );
    assert!(
        after.accuracy > 0.2 + 3.0 * after.ci95,
        "not above chance: {after:?}"
    );
    assert!(
        after.accuracy > before.accuracy,
        "{} <= {}",
        after.accuracy,
        before.accuracy
    );
    assert_eq!(
        summary.best_val_accuracy,
        Some(after.accuracy),
        "best.safetensors holds the best validation"
    );

    // The checkpoint is a model file the SDK loads, with its training recorded.
    assert_eq!(info.arch, mgecl::Architecture::Conv4);
    assert!(info.input.invert);
    let training: serde_json::Value = serde_json::from_str(&info.metadata["training"]).unwrap();
    assert_eq!(training["config"]["epochs"], 6);
    // The run was given absolute paths (data, lists, output); the file keeps none of them.
    assert!(cfg.run.data.is_absolute());
    assert_eq!(training["config"]["run"]["data"], ".../data/omniglot_mini");
    let repo = common::repo_root();
    for (key, value) in &info.metadata {
        assert!(
            !value.contains(repo.to_str().unwrap()) && !value.contains("\"/"),
            "metadata {key} names a machine path: {value}"
        );
    }
}

#[test]
fn metatraining_runs_every_loss_combination() {
    let out_dir = scratch();
    let out = out_dir.path().to_path_buf();
    let mut cfg = config(out.clone(), 2);
    cfg.run.val_list = None;
    pretrain(&cfg, DeviceChoice::Cpu, false, &mut Silent).unwrap();
    for (class_loss, instance_loss) in [(true, true), (true, false), (false, true)] {
        let meta_out_dir = scratch();
        let meta_out = meta_out_dir.path().to_path_buf();
        let meta = MetatrainConfig {
            init: out.join("best.safetensors"),
            run: run(meta_out.clone(), 2, 20, 1),
            episodes: 4,
            ways: 3,
            shots: 1,
            queries: 3,
            classes: Default::default(),
            views: 2,
            margin: 0.2,
            tau: 0.5,
            lambda: 1.0,
            class_loss,
            instance_loss,
            optim: OptimConfig {
                lr: 5e-4,
                lr_milestones: vec![],
                lr_decay: 0.1,
                momentum: 0.9,
                weight_decay: 5e-4,
                cosine_steps: None,
            },
        };
        let summary = metatrain(&meta, DeviceChoice::Cpu, false, &mut Silent).unwrap();
        assert_eq!(summary.completed, 4);
        let log = training_log(&meta_out);
        assert_eq!(log.len(), 2);
        let l = &log[1];
        assert_eq!(l["class_loss"].as_f64().unwrap() > 0.0, class_loss, "{l}");
        assert_eq!(
            l["instance_loss"].as_f64().unwrap() > 0.0,
            instance_loss,
            "{l}"
        );
        assert!(Model::load(meta_out.join("best.safetensors"), &LoadOptions::default()).is_ok());
    }
    // An episode over the memory limit is refused before the data is read or a file written:
    // 3 ways x 1 shot x (1 + 2 views) + 3 x 3 queries = 18 images.
    let meta_out = out.join("over-the-limit");
    let mut meta = MetatrainConfig {
        init: out.join("best.safetensors"),
        run: run(meta_out.clone(), 2, 20, 1),
        episodes: 4,
        ways: 3,
        shots: 1,
        queries: 3,
        classes: Default::default(),
        views: 2,
        margin: 0.2,
        tau: 0.5,
        lambda: 1.0,
        class_loss: true,
        instance_loss: true,
        optim: cfg.optim.clone(),
    };
    meta.run.max_step_bytes = 1 << 20;
    match metatrain(&meta, DeviceChoice::Cpu, false, &mut Silent) {
        Err(Error::Core(mgecl::Error::LimitExceeded(m))) => {
            assert!(m.contains("an episode of 18 images at 28x28"), "{m}");
            assert!(m.contains("over the limit of 1 MiB"), "{m}");
        }
        other => panic!(
            "expected LimitExceeded, got {:?}",
            other.map(|s| s.completed)
        ),
    }
    assert!(!meta_out.exists(), "nothing was written");
}

#[test]
fn bad_configurations_fail_before_any_work() {
    let out_dir = scratch();
    let out = out_dir.path().to_path_buf();
    let invalid = |r: Result<mgecl_train::pretrain::RunSummary, Error>| match r {
        Err(Error::InvalidArgument(m)) => m,
        Err(Error::Core(mgecl::Error::Io { path, .. })) => format!("io {}", path.display()),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("expected an error"),
    };
    let mut c = config(out.clone(), 1);
    c.run.data = data("no-such-folder");
    assert!(invalid(pretrain(&c, DeviceChoice::Cpu, false, &mut Silent)).contains("no-such-folder"));
    let mut c = config(out.clone(), 1);
    c.run.validation.shots = 25; // classes have 20 images
    assert!(invalid(pretrain(&c, DeviceChoice::Cpu, false, &mut Silent)).contains("fewer than"));
    let mut c = config(out.clone(), 1);
    c.run.validation.ways = 0;
    assert!(invalid(pretrain(&c, DeviceChoice::Cpu, false, &mut Silent)).contains("2 ways"));
    let c = config(out.clone(), 0);
    assert!(invalid(pretrain(&c, DeviceChoice::Cpu, false, &mut Silent)).contains("epochs"));
    // An included folder without any image is an empty split.
    let empty = out.join("data");
    std::fs::create_dir_all(empty.join("EmptyAlphabet/character01")).unwrap();
    std::fs::write(out.join("list.txt"), "EmptyAlphabet\n").unwrap();
    let mut c = config(out.clone(), 1);
    c.run.data = empty;
    c.run.train_list = Some(out.join("list.txt"));
    c.run.val_list = None;
    assert!(
        invalid(pretrain(&c, DeviceChoice::Cpu, false, &mut Silent)).contains("no image folders")
    );
    assert!(
        !out.join("last.safetensors").exists(),
        "nothing was trained"
    );
    // A step over the memory limit: refused before the data is read or a file written.
    let mut c = config(out.join("over-the-limit"), 1);
    c.batch_size = 64;
    c.run.max_step_bytes = 1 << 20;
    match pretrain(&c, DeviceChoice::Cpu, false, &mut Silent) {
        Err(Error::Core(mgecl::Error::LimitExceeded(m))) => {
            assert!(m.contains("a step of 64 images at 28x28"), "{m}");
            assert!(m.contains("over the limit of 1 MiB"), "{m}");
        }
        other => panic!(
            "expected LimitExceeded, got {:?}",
            other.map(|s| s.completed)
        ),
    }
    assert!(!out.join("over-the-limit").exists(), "nothing was written");
}

/// Pretraining with the rotation head: its checkpoints carry the 4-way head beside the class
/// head, a run stopped after one epoch and resumed ends on the same tensors as one that ran
/// straight through (the head and its momentum travel through the resume point), and the
/// head trained.
#[test]
fn rotation_pretraining_resumes_to_the_same_tensors() {
    let read = |dir: &std::path::Path| -> Vec<(String, Vec<usize>, Vec<u8>)> {
        let bytes = std::fs::read(dir.join("last.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(name, t)| (name, t.shape().to_vec(), t.data().to_vec()))
            .collect();
        tensors.sort();
        tensors
    };
    let rotation_config = |out: PathBuf| PretrainConfig {
        rotation_weight: 0.5,
        ..config(out, 2)
    };
    let (straight, split) = (scratch(), scratch());
    pretrain(
        &rotation_config(straight.path().to_path_buf()),
        DeviceChoice::Cpu,
        false,
        &mut Silent,
    )
    .unwrap();
    let mut first = rotation_config(split.path().to_path_buf());
    first.run.stop_after = Some(1);
    pretrain(&first, DeviceChoice::Cpu, false, &mut Silent).unwrap();
    let after_one = read(split.path());
    pretrain(
        &rotation_config(split.path().to_path_buf()),
        DeviceChoice::Cpu,
        true,
        &mut Silent,
    )
    .unwrap();
    let (a, b) = (read(straight.path()), read(split.path()));
    assert_eq!(a, b, "the resumed run differs from the straight one");
    let names: Vec<&str> = a.iter().map(|(n, _, _)| n.as_str()).collect();
    let shape = |name: &str| a.iter().find(|(n, _, _)| n == name).unwrap().1.clone();
    assert_eq!(shape("rotation.weight"), vec![4, 32]);
    assert_eq!(shape("rotation.bias"), vec![4]);
    assert!(names.contains(&"optimizer.momentum.rotation.weight"));
    let head = |t: &[(String, Vec<usize>, Vec<u8>)]| {
        t.iter()
            .find(|(n, _, _)| n == "rotation.weight")
            .unwrap()
            .2
            .clone()
    };
    assert_ne!(
        head(&after_one),
        head(&a),
        "the rotation head did not train"
    );
    // A resume with another rotation weight is refused.
    let mut other = rotation_config(split.path().to_path_buf());
    other.rotation_weight = 1.0;
    assert!(pretrain(&other, DeviceChoice::Cpu, true, &mut Silent).is_err());
}

/// Born-again distillation end to end: a student trains from a teacher run's checkpoint, its
/// checkpoint records the distillation, and a resume with other distillation settings is
/// refused. (The teacher's logits and the loss are checked against the training network and
/// PyTorch in the unit and step-fixture tests.)
#[test]
fn distillation_pretraining_runs_from_a_teacher_checkpoint() {
    use mgecl_train::pretrain::Teacher;
    use mgecl_train::trainer::Distillation;
    let (teacher_dir, student_dir) = (scratch(), scratch());
    pretrain(
        &config(teacher_dir.path().to_path_buf(), 1),
        DeviceChoice::Cpu,
        false,
        &mut Silent,
    )
    .unwrap();
    let student = |weight: f64| PretrainConfig {
        teacher: Some(Teacher {
            checkpoint: teacher_dir.path().join("best.safetensors"),
            distillation: Distillation {
                temperature: 4.0,
                weight,
            },
        }),
        ..config(student_dir.path().to_path_buf(), 2)
    };
    let mut first = student(0.5);
    first.run.stop_after = Some(1);
    pretrain(&first, DeviceChoice::Cpu, false, &mut Silent).unwrap();
    let model = Model::load(
        student_dir.path().join("last.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    let training: serde_json::Value =
        serde_json::from_str(&model.info().metadata["training"]).unwrap();
    assert_eq!(training["config"]["teacher"]["distillation"]["weight"], 0.5);
    assert!(pretrain(&student(0.7), DeviceChoice::Cpu, true, &mut Silent).is_err());
    pretrain(&student(0.5), DeviceChoice::Cpu, true, &mut Silent).unwrap();
    let log = training_log(student_dir.path());
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|e| e["loss"].as_f64().unwrap().is_finite()));
}

/// A resume point carried to another machine without `best.safetensors`: the resumed run
/// writes a best model again at its next validation (the one before the move is lost).
#[test]
fn a_resume_point_alone_resumes_to_a_best_model() {
    let dir = scratch();
    let mut first = config(dir.path().to_path_buf(), 2);
    first.run.stop_after = Some(1);
    pretrain(&first, DeviceChoice::Cpu, false, &mut Silent).unwrap();
    let best = dir.path().join("best.safetensors");
    assert!(best.exists());
    std::fs::remove_file(&best).unwrap();
    // The recorded best made unbeatable: only a run that forgets it writes a best model.
    let last = dir.path().join("last.safetensors");
    let bytes = std::fs::read(&last).unwrap();
    let mut metadata = mgecl_train::checkpoint_metadata(&bytes).unwrap();
    let mut training: serde_json::Value = serde_json::from_str(&metadata["training"]).unwrap();
    training["best_val_accuracy"] = 1.0.into();
    metadata.insert("training".into(), training.to_string());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let rewritten = safetensors::serialize(
        st.tensors(),
        Some(
            metadata
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        ),
    )
    .unwrap();
    std::fs::write(&last, rewritten).unwrap();
    pretrain(
        &config(dir.path().to_path_buf(), 2),
        DeviceChoice::Cpu,
        true,
        &mut Silent,
    )
    .unwrap();
    assert!(best.exists(), "the resumed run wrote no best model");
    Model::load(&best, &LoadOptions::default()).unwrap();
}
