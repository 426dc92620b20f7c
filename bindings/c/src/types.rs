//! The C-visible value types (`#[repr(C)]` enums and structs) and their conversions to and
//! from the Rust API's types.

use std::ffi::c_char;

use sdk::model::LoadOptions;
use sdk::task::{Augmentation, ClassifierKind, FitReport, TaskConfig};

use crate::error::{Failure, Res};
use crate::versioned::versioned;

/// Which classifier a task fits (`mgecl_task_options.classifier`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgecl_classifier {
    /// Multinomial logistic regression (scikit-learn's `LogisticRegression`, C = 1/alpha).
    Logistic = 0,
    /// Cosine similarity to class means, softmax with a temperature; fits in microseconds.
    Prototype = 1,
}

/// Which copies of an image a task makes (`mgecl_task_options.augmentation`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgecl_augmentation {
    /// Rotations about the centre (+-15, +-7.5, +-11.25, +-3.75 degrees): a drawing stays the
    /// same character.
    Rotate = 0,
    /// The horizontal flip, then shifts by 1/8 of the side: for photographs, not for text.
    FlipShift = 1,
}

/// What an `mgecl_image` holds (`mgecl_image.kind`). Zero is no valid kind, so a
/// zero-initialised `mgecl_image` is rejected.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgecl_image_kind {
    /// An encoded image file (PNG or JPEG) at `path`.
    File = 1,
    /// An encoded image (PNG or JPEG) in memory: `data`, `len`.
    Encoded = 2,
    /// Raw pixels: `data`, `len`, `width`, `height`, `stride`, `format`.
    Pixels = 3,
}

/// Layout of raw pixels (`mgecl_image.format`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgecl_pixel_format {
    /// 3 bytes per pixel: R, G, B.
    Rgb8 = 1,
    /// 4 bytes per pixel: R, G, B, A (alpha is ignored).
    Rgba8 = 2,
    /// 1 byte per pixel.
    Gray8 = 3,
}

/// One metadata override for `mgecl_load_options`. Passed in arrays, so it never grows.
#[repr(C)]
pub struct mgecl_metadata_entry {
    /// Metadata key (UTF-8, NUL-terminated), e.g. `"image_size"`.
    pub key: *const c_char,
    /// Its value as the file would store it, e.g. `"[28, 28]"`.
    pub value: *const c_char,
}

/// How to load a model. Fill it with `mgecl_load_options_init(&options, sizeof options)`,
/// then change fields; a NULL options pointer means the defaults (CPU, no overrides). A
/// struct that may grow (`struct_size` first, see "Structs that grow" at the top).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mgecl_load_options {
    /// `sizeof(mgecl_load_options)` in the caller's header; `mgecl_load_options_init` sets it.
    pub struct_size: usize,
    /// `"cpu"`, `"cuda"`, `"cuda:N"`, `"metal"`, `"metal:N"` or `"auto"`; NULL means `"cpu"`.
    pub device: *const c_char,
    /// `metadata_len` entries that supply or replace the file's `__metadata__` values (needed
    /// for files without metadata); may be NULL when `metadata_len` is 0.
    pub metadata: *const mgecl_metadata_entry,
    /// Number of entries in `metadata`.
    pub metadata_len: usize,
    /// Largest width or height of an image to decode, in pixels; 0 means the default (16384).
    /// Larger images fail with `MGECL_STATUS_LIMIT_EXCEEDED` before their pixels are decoded.
    pub max_image_side: u32,
    /// Most bytes decoding one image may allocate; 0 means the default (512 MiB).
    pub max_image_bytes: u64,
    /// Most bytes of activations one embedding pass may hold; 0 means the default (1 GiB).
    /// Batches are embedded in passes that fit; a model whose single image needs more fails
    /// to load with `MGECL_STATUS_LIMIT_EXCEEDED`, naming the need and the limit.
    pub max_embed_bytes: u64,
}

/// What a model is (`mgecl_model_describe`). The strings belong to the model handle and stay
/// valid until it is freed. Widths, normalisation and the full metadata are in
/// `mgecl_model_info_json`. A struct that may grow: set `struct_size` before the call
/// (`mgecl_model_info info = { sizeof info };`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mgecl_model_info {
    /// `sizeof(mgecl_model_info)` in the caller's header, set by the caller.
    pub struct_size: usize,
    /// `"resnet12"` or `"conv4"`.
    pub arch: *const c_char,
    /// The device the encoder runs on (`"cpu"`, `"cuda:0"`, ...).
    pub device: *const c_char,
    /// A stable hash (hex) of the weights and effective metadata.
    pub fingerprint: *const c_char,
    /// Length of a feature vector (floats per image from `mgecl_model_embed`).
    pub feature_dim: usize,
    /// Input channels (1 or 3).
    pub in_channels: usize,
    /// Input height in pixels.
    pub image_height: usize,
    /// Input width in pixels.
    pub image_width: usize,
    /// Whether pixels are inverted (255 - v) before normalisation.
    pub invert: bool,
}

/// One image to embed, add or classify; build it with `mgecl_image_file`,
/// `mgecl_image_encoded` or `mgecl_image_pixels`. It borrows the caller's path and bytes for
/// the duration of the call only. Passed in arrays, so it never grows: a new kind of image
/// is a new `kind` value over these fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mgecl_image {
    /// An `mgecl_image_kind` value.
    pub kind: u32,
    /// File path (UTF-8, NUL-terminated) for `MGECL_IMAGE_KIND_FILE`.
    pub path: *const c_char,
    /// Encoded bytes or raw pixels.
    pub data: *const u8,
    /// Bytes in `data`.
    pub len: usize,
    /// Raw pixels: width in pixels.
    pub width: u32,
    /// Raw pixels: height in pixels.
    pub height: u32,
    /// Raw pixels: bytes from the start of one row to the next (>= width x bytes per pixel).
    pub stride: usize,
    /// Raw pixels: an `mgecl_pixel_format` value.
    pub format: u32,
}

/// Settings of a task (the Rust `TaskConfig`). Fill it with
/// `mgecl_task_options_init(&options, sizeof options)` (the library's defaults) or
/// `mgecl_model_task_options` (a model's), then change fields. A struct that may grow
/// (`struct_size` first): a field an older header lacks takes the default given here.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mgecl_task_options {
    /// `sizeof(mgecl_task_options)` in the caller's header; `mgecl_task_options_init` sets it.
    pub struct_size: usize,
    /// An `mgecl_classifier` value (default `MGECL_CLASSIFIER_PROTOTYPE`).
    pub classifier: u32,
    /// Logistic regression: L2 penalty alpha = 1/C (default 1), > 0.
    pub alpha: f64,
    /// Logistic regression: iteration cap (default 1000), >= 1.
    pub max_iterations: u64,
    /// Logistic regression: converged when the largest absolute gradient entry is at most
    /// this (default 1e-6), > 0.
    pub gradient_tolerance: f64,
    /// Prototype classifier: softmax temperature (default 0.1), > 0.
    pub temperature: f64,
    /// Augmented copies embedded with each support image (default 0, at most 8), of the kind
    /// `augmentation` says; applies to examples added after it is set.
    pub augmented_copies: usize,
    /// Whether answers whose known-probability (`mgecl_prediction.known_probability`) is below
    /// `threshold` become "unknown" (label NULL). Default false.
    pub use_threshold: bool,
    /// Open-set rejection threshold in [0, 1], used when `use_threshold` is true: 0.5 rejects
    /// images more likely of no task class than of one (with a calibrated model).
    pub threshold: f64,
    /// Most classes the task holds (default 1000), >= 2; one more is
    /// `MGECL_STATUS_LIMIT_EXCEEDED`.
    pub max_classes: usize,
    /// Most feature rows (examples times 1 + augmented copies) the task holds (default
    /// 10000), >= 2: the logistic fit needs rows x rows x 8 bytes.
    pub max_rows: usize,
    /// The classifier's raw probabilities instead of calibrated ones (default false).
    /// Calibrated: the model's calibration rescales the scores for the task's classes and
    /// shots, so that 0.9 is right 9 times in 10; the winning class never changes. Raw:
    /// logistic regression's are scikit-learn's exactly. A model without a calibration always
    /// gives raw ones.
    pub raw_probabilities: bool,
    /// An `mgecl_augmentation` value: which copies `augmented_copies` makes (default
    /// `MGECL_AUGMENTATION_ROTATE`).
    pub augmentation: u32,
    /// Whether `mgecl_task_classify`, `_classify_batch` and `_classify_top_k` also embed each
    /// image with `augmented_copies` copies and classify the mean direction of their features
    /// (default false; costs 1 + `augmented_copies` embeddings per image). Features given
    /// directly are classified as they are.
    pub augment_queries: bool,
    /// Transductive answers: 1 on, 0 off (the default; other values are
    /// `MGECL_STATUS_INVALID_ARGUMENT`). A `uint64_t` rather than a `bool` so that it starts
    /// past the 0.4.0 struct's end (a `bool` would start inside its padding after
    /// `augment_queries`; see "Structs that grow").
    ///
    /// On, the images or feature rows classified together in one call refine the class
    /// prototypes before they are answered: the unlabelled images of a folder say where its
    /// classes lie. The answers are then the prototype classifier's, from the refined
    /// prototypes, whatever `classifier` says, calibrated as the prototype classifier's are
    /// (with `raw_probabilities` or a model without a calibration: the softmax at
    /// `temperature`); `known_probability` stays what it is without the option. An image's
    /// answer therefore depends on the other images of its call. A call with fewer than 2
    /// images per class (and a one-class task) gets the usual (inductive) answers.
    ///
    /// Calls it affects, those that answer several images or rows at once:
    /// `mgecl_task_classify_batch`, `mgecl_task_label_csv`, `mgecl_task_label_paths_csv`
    /// (the rows that could be embedded) and `mgecl_task_label_next`. One image
    /// (`mgecl_task_classify`, `_classify_top_k`, `_classify_feature`) is always answered
    /// alone. The fit is the same either way.
    pub transductive: u64,
}

/// What `mgecl_task_fit` did. A struct that may grow: set `struct_size` before the call
/// (`mgecl_fit_report report = { sizeof report };`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mgecl_fit_report {
    /// `sizeof(mgecl_fit_report)` in the caller's header, set by the caller.
    pub struct_size: usize,
    /// The `mgecl_classifier` fitted.
    pub classifier: u32,
    /// Whether the solver reached the gradient tolerance (always true for prototypes).
    pub converged: bool,
    /// Largest absolute gradient entry of the logistic objective (0 for prototypes).
    pub gradient_max_abs: f64,
    /// Feature rows fitted on (support examples and augmented copies).
    pub rows: usize,
    /// Number of classes.
    pub classes: usize,
}

/// The answer for one image. Passed in arrays, so it never grows: a new per-image value comes
/// with a new struct and new functions.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mgecl_prediction {
    /// The best class's label, or NULL ("unknown") when its known-probability is below the
    /// task's threshold. Owned by the task: valid until the task is next changed or freed.
    pub label: *const c_char,
    /// Index of the best class (also set when the label is rejected).
    pub class_index: usize,
    /// Probability of the best class, given the image is of one of the task's classes.
    pub probability: f64,
    /// Probability that the image is of one of the task's classes at all (the open-set score
    /// the threshold compares; calibrated when the model has a calibration, else the image's
    /// best cosine similarity to a class mean clipped to [0, 1]). A one-class task (prototype
    /// classifier) answers with it as its probability.
    pub known_probability: f64,
}

/// What `mgecl_load_options_init` writes, and what the fields an older header lacks take.
pub(crate) fn default_load_options() -> mgecl_load_options {
    let defaults = LoadOptions::default();
    mgecl_load_options {
        struct_size: std::mem::size_of::<mgecl_load_options>(),
        device: std::ptr::null(),
        metadata: std::ptr::null(),
        metadata_len: 0,
        max_image_side: defaults.image_limits.max_width,
        max_image_bytes: defaults.image_limits.max_decoded_bytes,
        max_embed_bytes: defaults.max_embed_bytes,
    }
}

pub(crate) fn classifier_code(kind: ClassifierKind) -> u32 {
    match kind {
        ClassifierKind::Logistic => mgecl_classifier::Logistic as u32,
        ClassifierKind::Prototype => mgecl_classifier::Prototype as u32,
    }
}

pub(crate) fn options_to_config(options: &mgecl_task_options) -> Res<TaskConfig> {
    let classifier = match options.classifier {
        c if c == mgecl_classifier::Logistic as u32 => ClassifierKind::Logistic,
        c if c == mgecl_classifier::Prototype as u32 => ClassifierKind::Prototype,
        other => {
            return Err(Failure::Argument(format!(
                "unknown classifier {other} (expected MGECL_CLASSIFIER_LOGISTIC or \
                 MGECL_CLASSIFIER_PROTOTYPE)"
            )))
        }
    };
    let augmentation = match options.augmentation {
        a if a == mgecl_augmentation::Rotate as u32 => Augmentation::Rotate,
        a if a == mgecl_augmentation::FlipShift as u32 => Augmentation::FlipShift,
        other => {
            return Err(Failure::Argument(format!(
                "unknown augmentation {other} (expected MGECL_AUGMENTATION_ROTATE or \
                 MGECL_AUGMENTATION_FLIP_SHIFT)"
            )))
        }
    };
    Ok(TaskConfig {
        classifier,
        alpha: options.alpha,
        max_iterations: options.max_iterations,
        gradient_tolerance: options.gradient_tolerance,
        temperature: options.temperature,
        augmented_copies: options.augmented_copies,
        augmentation,
        augment_queries: options.augment_queries,
        transductive: match options.transductive {
            0 => false,
            1 => true,
            other => {
                return Err(Failure::Argument(format!(
                    "transductive is {other} (expected 0 or 1)"
                )))
            }
        },
        threshold: options.use_threshold.then_some(options.threshold),
        calibrated: !options.raw_probabilities,
        max_classes: options.max_classes,
        max_rows: options.max_rows,
    })
}

pub(crate) fn config_to_options(config: &TaskConfig) -> mgecl_task_options {
    mgecl_task_options {
        struct_size: std::mem::size_of::<mgecl_task_options>(),
        classifier: classifier_code(config.classifier),
        alpha: config.alpha,
        max_iterations: config.max_iterations,
        gradient_tolerance: config.gradient_tolerance,
        temperature: config.temperature,
        augmented_copies: config.augmented_copies,
        use_threshold: config.threshold.is_some(),
        threshold: config.threshold.unwrap_or(0.0),
        max_classes: config.max_classes,
        max_rows: config.max_rows,
        raw_probabilities: !config.calibrated,
        augmentation: match config.augmentation {
            Augmentation::Rotate => mgecl_augmentation::Rotate as u32,
            Augmentation::FlipShift => mgecl_augmentation::FlipShift as u32,
        },
        augment_queries: config.augment_queries,
        transductive: u64::from(config.transductive),
    }
}

pub(crate) fn fit_report(report: &FitReport) -> mgecl_fit_report {
    mgecl_fit_report {
        struct_size: std::mem::size_of::<mgecl_fit_report>(),
        classifier: classifier_code(report.classifier),
        converged: report.converged,
        gradient_max_abs: report.gradient_max_abs,
        rows: report.rows,
        classes: report.classes,
    }
}

versioned!(mgecl_load_options {
    struct_size,
    device,
    metadata,
    metadata_len,
    max_image_side,
    max_image_bytes,
    max_embed_bytes,
});

versioned!(mgecl_model_info {
    struct_size,
    arch,
    device,
    fingerprint,
    feature_dim,
    in_channels,
    image_height,
    image_width,
    invert,
});

versioned!(mgecl_task_options {
    struct_size,
    classifier,
    alpha,
    max_iterations,
    gradient_tolerance,
    temperature,
    augmented_copies,
    use_threshold,
    threshold,
    max_classes,
    max_rows,
    raw_probabilities,
    augmentation,
    augment_queries,
    transductive,
});

versioned!(mgecl_fit_report {
    struct_size,
    classifier,
    converged,
    gradient_max_abs,
    rows,
    classes,
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioned::check_released_layouts;

    /// The last field of each layout a released header had, oldest first. Appending a field
    /// to one of these structs means adding it here as well; the older entries stay.
    #[test]
    fn every_released_layout_is_a_prefix_of_the_current_one() {
        // 0.4.0: the first layouts with struct_size.
        check_released_layouts::<mgecl_load_options>(&["max_embed_bytes"]);
        check_released_layouts::<mgecl_model_info>(&["invert"]);
        check_released_layouts::<mgecl_fit_report>(&["classes"]);
        // 0.4.0 ended at augment_queries; transductive was appended after it.
        check_released_layouts::<mgecl_task_options>(&["augment_queries", "transductive"]);
    }

    #[test]
    fn transductive_converts_both_ways() {
        for on in [false, true] {
            let config = TaskConfig {
                transductive: on,
                ..TaskConfig::default()
            };
            let options = config_to_options(&config);
            assert_eq!(options.transductive, u64::from(on));
            assert_eq!(options_to_config(&options).ok(), Some(config));
        }
        let mut options = config_to_options(&TaskConfig::default());
        options.transductive = 2;
        assert!(matches!(
            options_to_config(&options),
            Err(Failure::Argument(m)) if m.contains("transductive")
        ));
    }

    /// A struct of the 0.4.0 header (it ended at `augment_queries`) reads transductive off,
    /// whatever lies past its end.
    #[test]
    fn a_0_4_0_task_options_struct_reads_transductive_off() {
        let fields = <mgecl_task_options as crate::versioned::Versioned>::fields();
        let last = fields
            .iter()
            .position(|f| f.name == "augment_queries")
            .unwrap();
        let size = crate::versioned::prefix_size(&fields, last);
        // The 0.4.0 header's sizeof(mgecl_task_options) (tests/c/capi_test.c's
        // task_options_0_4 checks the same against the C compiler).
        #[cfg(target_pointer_width = "64")]
        assert_eq!(size, 104);
        let on = TaskConfig {
            transductive: true,
            ..TaskConfig::default()
        };
        let caller = mgecl_task_options {
            struct_size: size,
            ..config_to_options(&on)
        };
        let defaults = config_to_options(&TaskConfig::default());
        let read = unsafe { crate::versioned::read(&caller, defaults, "options") }
            .ok()
            .unwrap();
        assert_eq!(read.transductive, 0);
        assert!(!options_to_config(&read).ok().unwrap().transductive);
        // The whole struct reads it on.
        let whole = config_to_options(&on);
        let read = unsafe { crate::versioned::read(&whole, defaults, "options") }
            .ok()
            .unwrap();
        assert!(options_to_config(&read).ok().unwrap().transductive);
    }
}
