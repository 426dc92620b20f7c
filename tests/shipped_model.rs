//! The shipped models. The default (Omniglot) model on the shipped example images
//! (val-alphabet characters it never trained on): 6-way 1-shot, four queries per character.
//! The photo model on miniImageNet validation-class photos from `../shared/data/miniimagenet`
//! (never copied into the repository: that test says so and passes where the folder is
//! absent). Catches a broken model file or a preprocessing change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mgecl::{Augmentation, ClassifierKind, LoadOptions, Model, Task, TaskConfig};

const OMNIGLOT_MODEL: &str = "models/omniglot-conv4.safetensors";
const PHOTO_MODEL: &str = "models/miniimagenet-resnet12.safetensors";

fn load(model: &str) -> Arc<Model> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Arc::new(Model::load(root.join(model), &LoadOptions::default()).unwrap())
}

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

/// How many of `queries` (image, true label) `task` labels right.
fn correct_answers(task: &Task, queries: &[(PathBuf, String)]) -> usize {
    let paths: Vec<&Path> = queries.iter().map(|(p, _)| p.as_path()).collect();
    let answers = task.classify_paths(&paths).unwrap();
    answers
        .iter()
        .zip(queries)
        .filter(|(a, (_, l))| a.label.as_deref() == Some(l.as_str()))
        .count()
}

#[test]
fn shipped_model_recognises_unseen_characters_from_one_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = load(OMNIGLOT_MODEL);
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
        let correct = correct_answers(&task, &queries);
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
fn shipped_models_metadata_names_no_path_of_the_machine_it_was_made_on() {
    for file in [
        OMNIGLOT_MODEL,
        PHOTO_MODEL,
        "models/omniglot-conv4-int8.safetensors",
        "models/miniimagenet-resnet12-int8.safetensors",
    ] {
        let model = load(file);
        let metadata = &model.info().metadata;
        assert!(metadata.contains_key("calibration"), "{file} is calibrated");
        let training: serde_json::Value =
            serde_json::from_str(metadata.get("training").expect("training metadata")).unwrap();
        let mut texts: Vec<String> = metadata.values().cloned().collect();
        strings(&training, &mut texts);
        for text in texts {
            let windows_drive = text.as_bytes().get(1..3) == Some(b":\\".as_slice());
            assert!(
                !text.starts_with('/') && !text.starts_with('~') && !windows_drive,
                "absolute path in {file}'s metadata: {text:?}"
            );
        }
    }
}

/// The photo model: an RGB ResNet-12 at 84x84 whose recommended test-time copies, if any,
/// keep a photo's class (flip and shifts, never the rotations meant for drawings).
#[test]
fn photo_model_is_an_rgb_resnet12_that_recommends_photo_copies() {
    let model = load(PHOTO_MODEL);
    let info = model.info();
    assert_eq!(info.arch.to_string(), "resnet12");
    assert_eq!(info.input.in_channels, 3);
    assert_eq!(info.input.image_size, (84, 84));
    let defaults = model.task_defaults();
    if defaults.augmented_copies > 0 {
        assert_eq!(defaults.augmentation, Augmentation::FlipShift);
    }
}

/// At least this many of the 50 queries must be right: the model scores about 76% on 5-way
/// 5-shot val episodes (models/README.md; per-episode standard deviation ~8 points), and
/// 28/50 = 56% leaves more than two standard deviations; chance is 20%.
const PHOTO_MIN_CORRECT: usize = 28;

/// 5-way 5-shot on the first five validation classes (classes the model never trained on):
/// the first five photos of each (sorted by name) are the support set, the next ten the
/// queries; both classifiers, with the model's recommended settings.
#[test]
fn photo_model_recognises_unseen_classes_from_five_photos() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/miniimagenet");
    let Ok(list) = std::fs::read_to_string(root.join("splits/val_classes.txt")) else {
        eprintln!(
            "skipped: {} is absent (the miniImageNet photos are not part of the repository)",
            root.display()
        );
        return;
    };
    let model = load(PHOTO_MODEL);
    for classifier in [ClassifierKind::Logistic, ClassifierKind::Prototype] {
        let config = TaskConfig {
            classifier,
            ..model.task_defaults().clone()
        };
        let mut task = Task::new(model.clone(), config).unwrap();
        let mut queries = Vec::new();
        for class in list.lines().filter(|l| !l.is_empty()).take(5) {
            let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("images").join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            task.add_class(class).unwrap();
            for file in &files[..5] {
                task.add_example_path(class, file).unwrap();
            }
            queries.extend(files[5..15].iter().map(|f| (f.clone(), class.to_string())));
        }
        task.fit().unwrap();
        let correct = correct_answers(&task, &queries);
        println!("{classifier:?}: {correct}/50");
        assert!(
            correct >= PHOTO_MIN_CORRECT,
            "{classifier:?}: only {correct}/50 correct"
        );
    }
}

/// The shipped int8 models: quantised from the shipped float32 ones (their `quantization`
/// metadata names the float32 file's fingerprint), on the int8 engine, with features that
/// keep the float32 ones' directions on the shipped example drawings (the classifiers
/// L2-normalise).
#[test]
fn shipped_int8_models_follow_their_float32_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (f32_path, int8_path) in [
        (OMNIGLOT_MODEL, "models/omniglot-conv4-int8.safetensors"),
        (PHOTO_MODEL, "models/miniimagenet-resnet12-int8.safetensors"),
    ] {
        let (float, int8) = (load(f32_path), load(int8_path));
        assert_eq!(int8.info().engine.name(), "cpu-int8");
        let quantization = &int8.info().metadata[mgecl::QUANTIZATION_KEY];
        let quantization = mgecl::QuantizationInfo::from_metadata(quantization).unwrap();
        assert_eq!(quantization.source_fingerprint, float.info().fingerprint);
        // The drawings (grey) go to the photo model too: it converts them to RGB.
        let images: Vec<PathBuf> = sorted(&root.join("examples/data/omniglot"), true)
            .iter()
            .flat_map(|folder| sorted(folder, false))
            .collect();
        let (a, b) = (
            float.embed_paths(&images).unwrap(),
            int8.embed_paths(&images).unwrap(),
        );
        for (i, (x, y)) in a.rows().into_iter().zip(b.rows()).enumerate() {
            let cosine = x.dot(&y) / (x.dot(&x).sqrt() * y.dot(&y).sqrt());
            assert!(cosine > 0.99, "{int8_path}: image {i}: cosine {cosine}");
        }
    }
}
