//! The training pipeline on photographs: a few miniImageNet classes from `../shared/data/
//! miniimagenet` (never copied into the repository; the test says so and passes where that
//! folder is absent). RGB JPEGs at 84x84 with RFS's augmentation go through pretraining (the
//! loss falls, the normalisation comes out as the photos' own, near ImageNet's), meta-training
//! with both losses, and the SDK's task API with flip-shift test-time copies.

use mgecl_test_support as common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::training_log;
use mgecl::task::{Augmentation, Task, TaskConfig};
use mgecl::{DeviceChoice, ImageSource, LoadOptions, Model, PixelBuffer, PixelFormat};
use mgecl_train::augment::AugmentConfig;
use mgecl_train::metatrain::{metatrain, MetatrainConfig};
use mgecl_train::net::EncoderSpec;
use mgecl_train::optim::OptimConfig;
use mgecl_train::pretrain::{pretrain, PretrainConfig};
use mgecl_train::{RunConfig, Silent, ValidationConfig};

/// The shared miniImageNet folder, or None (and a note on stderr) where this machine lacks it.
fn miniimagenet() -> Option<PathBuf> {
    let root = common::repo_root().join("../shared/data/miniimagenet");
    if root.join("splits/train_classes.txt").exists() {
        Some(root)
    } else {
        eprintln!(
            "skipped: {} is absent (the miniImageNet photos are not part of the repository)",
            root.display()
        );
        None
    }
}

/// The files of `dir`, sorted by name.
fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Copies the first `images` files of the first `classes` classes of `split` into `out/`,
/// and writes `out/<name>.txt` listing them.
fn subset(root: &Path, split: &str, classes: usize, images: usize, out: &Path, name: &str) {
    let list = std::fs::read_to_string(root.join("splits").join(split)).unwrap();
    let picked: Vec<&str> = list
        .lines()
        .filter(|l| !l.is_empty())
        .take(classes)
        .collect();
    for class in &picked {
        let files = sorted_files(&root.join("images").join(class));
        std::fs::create_dir_all(out.join(class)).unwrap();
        for file in files.iter().take(images) {
            std::fs::copy(file, out.join(class).join(file.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(out.join(format!("{name}.txt")), picked.join("\n")).unwrap();
}

fn run(data: &Path, out: PathBuf) -> RunConfig {
    RunConfig {
        data: data.to_path_buf(),
        train_list: Some(data.join("train.txt")),
        val_list: Some(data.join("val.txt")),
        rotate_classes: false,
        augment: AugmentConfig::preset("imagenet").unwrap(),
        val_every: 3,
        validation: ValidationConfig {
            episodes: 20,
            ..Default::default()
        },
        seed: 0,
        out_dir: out,
        stop_after: None,
        engine: Default::default(),
        max_step_bytes: mgecl_train::memory::DEFAULT_MAX_STEP_BYTES,
    }
}

#[test]
fn photos_train_end_to_end_and_classify_with_flip_shift_copies() {
    let Some(root) = miniimagenet() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("photos");
    subset(&root, "train_classes.txt", 7, 40, &data, "train");
    subset(&root, "val_classes.txt", 5, 16, &data, "val");

    let stage1 = scratch.path().join("stage1");
    let config = PretrainConfig {
        run: run(&data, stage1.clone()),
        net: EncoderSpec {
            arch: mgecl::Architecture::Conv4,
            widths: vec![32; 4],
            in_channels: 3,
        },
        image_size: 84,
        invert: false,
        mean_std: None,
        epochs: 6,
        batch_size: 25,
        optim: OptimConfig {
            lr: 0.05,
            lr_milestones: vec![5],
            lr_decay: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            cosine_steps: None,
        },
        label_smoothing: 0.0,
        rotation_weight: 0.0,
        teacher: None,
    };
    pretrain(&config, DeviceChoice::Cpu, false, &mut Silent).unwrap();
    let log = training_log(&stage1);
    let loss = |i: usize| log[i]["loss"].as_f64().unwrap();
    println!("loss {:.3} -> {:.3}", loss(0), loss(5));
    assert!(loss(5) < 0.92 * loss(0), "{} -> {}", loss(0), loss(5));

    let model = Model::from_bytes(
        &std::fs::read(stage1.join("best.safetensors")).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let input = &model.info().input;
    assert_eq!(
        (input.in_channels, input.image_size),
        (3, (84, 84)),
        "an RGB 84x84 model"
    );
    // Normalisation computed from the photos: near ImageNet's (0.485, 0.456, 0.406) /
    // (0.229, 0.224, 0.225), the statistics of the collection these photos come from.
    for (k, (mean, std)) in input.mean.iter().zip(&input.std).enumerate() {
        let (imagenet_mean, imagenet_std) = ([0.485, 0.456, 0.406][k], [0.229, 0.224, 0.225][k]);
        assert!(
            (mean - imagenet_mean).abs() < 0.12,
            "channel {k} mean {mean}"
        );
        assert!((std - imagenet_std).abs() < 0.06, "channel {k} std {std}");
    }

    // Stage 2 with the class and the instance losses on augmented photo views.
    let stage2 = scratch.path().join("stage2");
    let meta = MetatrainConfig {
        run: run(&data, stage2.clone()),
        init: stage1.join("best.safetensors"),
        episodes: 4,
        ways: 5,
        shots: 1,
        queries: 5,
        classes: Default::default(),
        views: 2,
        margin: 0.2,
        tau: 0.1,
        lambda: 1.0,
        class_loss: true,
        instance_loss: true,
        optim: OptimConfig {
            lr: 5e-4,
            lr_milestones: vec![],
            lr_decay: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            cosine_steps: None,
        },
    };
    metatrain(&meta, DeviceChoice::Cpu, false, &mut Silent).unwrap();
    let model = Arc::new(
        Model::from_bytes(
            &std::fs::read(stage2.join("best.safetensors")).unwrap(),
            &LoadOptions::default(),
        )
        .unwrap(),
    );

    // Flip-shift test-time copies: with one copy (the mirror image) merged into each query, a
    // photo and its mirror image have the same copies, so the same prediction; without copies
    // they differ. The mirror is made here, independently of the SDK's flip.
    let photos = |class: &str| -> Vec<PathBuf> {
        let mut files = sorted_files(&data.join(class));
        files.truncate(3);
        files
    };
    let val = std::fs::read_to_string(data.join("val.txt")).unwrap();
    let classes: Vec<&str> = val.lines().take(3).collect();
    let task_with = |copies: usize| {
        let settings = TaskConfig {
            augmentation: Augmentation::FlipShift,
            augmented_copies: copies,
            augment_queries: copies > 0,
            ..TaskConfig::default()
        };
        let mut task = Task::new(model.clone(), settings).unwrap();
        for class in &classes {
            task.add_class(class).unwrap();
            for path in photos(class) {
                task.add_example_path(class, path).unwrap();
            }
        }
        task.fit().unwrap();
        task
    };
    let query = image::open(
        data.join(classes[0])
            .join(photos(classes[0])[0].file_name().unwrap()),
    )
    .unwrap()
    .to_rgb8();
    let (w, h) = query.dimensions();
    let pixels = query.into_raw();
    let mut mirror = pixels.clone();
    for (row, out) in pixels
        .chunks_exact(3 * w as usize)
        .zip(mirror.chunks_exact_mut(3 * w as usize))
    {
        for x in 0..w as usize {
            out[3 * x..3 * x + 3]
                .copy_from_slice(&row[3 * (w as usize - 1 - x)..3 * (w as usize - x)]);
        }
    }
    let source = |data| {
        ImageSource::Pixels(PixelBuffer {
            data,
            width: w,
            height: h,
            stride: 3 * w as usize,
            format: PixelFormat::Rgb8,
        })
    };
    let sources = [source(&pixels), source(&mirror)];
    let largest_difference = |task: &Task| {
        let p = task.classify(&sources).unwrap();
        p[0].probabilities
            .iter()
            .zip(&p[1].probabilities)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    };
    let with_flip = largest_difference(&task_with(1));
    let without = largest_difference(&task_with(0));
    println!("photo vs mirror, largest probability difference: {with_flip:.2e} with the flip copy, {without:.2e} without");
    assert!(with_flip < 1e-5, "{with_flip}");
    assert!(without > 1e-4, "{without}");
}
