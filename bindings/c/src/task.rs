//! Task handles: classes and examples, fitting, classification, saving and loading.

use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use ndarray::ArrayView2;
use sdk::error::Error;
use sdk::task::{LabelOptions, Prediction, Task, TaskConfig};

use crate::args::{
    c_string, check_out, features_out, image_arg, images_arg, mut_arg, out_buffer, out_text,
    ref_arg, slice_arg, str_arg, str_array_arg,
};
use crate::error::{guard, mgecl_status, Failure};
use crate::model::mgecl_model;
use crate::types::{
    config_to_options, fit_report, mgecl_fit_report, mgecl_image, mgecl_prediction,
    mgecl_task_options, options_to_config,
};
use crate::versioned;

/// A few-shot task bound to a model (opaque). Not thread-safe: use one handle from one thread
/// at a time (different tasks may run in parallel, also on one shared model).
pub struct mgecl_task {
    pub(crate) task: Task,
    /// NUL-terminated copies of the class labels, in class order, for the pointers handed out.
    pub(crate) labels: Vec<CString>,
}

impl mgecl_task {
    pub(crate) fn new(task: Task) -> Box<Self> {
        let mut handle = Box::new(mgecl_task {
            task,
            labels: Vec::new(),
        });
        handle.refresh_labels();
        handle
    }

    /// Rebuilds the label copies after the classes changed.
    pub(crate) fn refresh_labels(&mut self) {
        self.labels = self
            .task
            .classes()
            .iter()
            .map(|c| c.label.as_str())
            .map(c_string)
            .collect();
    }

    pub(crate) fn prediction(&self, p: &Prediction) -> mgecl_prediction {
        mgecl_prediction {
            label: match &p.label {
                Some(_) => self
                    .labels
                    .get(p.class_index)
                    .map_or(std::ptr::null(), |l| l.as_ptr()),
                None => std::ptr::null(),
            },
            class_index: p.class_index,
            probability: p.probability,
            known_probability: p.known_probability,
        }
    }
}

/// Fills the caller's `options` with the default task options, whatever the model: the
/// prototype classifier (temperature 0.1; logistic regression: alpha 1, 1000 iterations,
/// gradient tolerance 1e-6), no augmentation, no threshold, calibrated probabilities, at
/// most 1000 classes and 10000 feature rows. `struct_size` is `sizeof *options` in the
/// caller's header: `mgecl_task_options_init(&options, sizeof options)`. A model may
/// recommend other options: `mgecl_model_task_options`.
///
/// Errors: `NULL_ARGUMENT` (options), `INVALID_ARGUMENT` (a struct_size no header had),
/// `HEADER_TOO_NEW` (struct_size larger than this library's struct). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_options_init(
    options: *mut mgecl_task_options,
    struct_size: usize,
) -> mgecl_status {
    guard(|| unsafe { versioned::init(options, struct_size, default_task_options(), "options") })
}

/// What `mgecl_task_options_init` writes, and what the fields an older header lacks take.
fn default_task_options() -> mgecl_task_options {
    config_to_options(&TaskConfig::default())
}

/// The task options `model` recommends, written to `*out_options` (whose `struct_size` the
/// caller sets first, as `mgecl_task_options_init` does): the defaults with the model's
/// `task_defaults` metadata applied (e.g. the test-time augmentation it was measured best
/// with). What `mgecl_task_new` uses for NULL options; change fields and pass it there.
///
/// Errors: `NULL_ARGUMENT` (model, out_options), `INVALID_ARGUMENT` (a struct_size no header
/// had), `HEADER_TOO_NEW`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_task_options(
    model: *const mgecl_model,
    out_options: *mut mgecl_task_options,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(model, "model") }?;
        let options = config_to_options(handle.model.task_defaults());
        unsafe { versioned::write(out_options, options, "out_options") }
    })
}

/// Creates an empty task bound to `model`, written to `*out_task`. `options`: NULL for the
/// model's recommended options (`mgecl_model_task_options`). The task holds its own reference
/// to the model. The caller owns `*out_task` and
/// releases it with `mgecl_task_free`.
///
/// Errors: `NULL_ARGUMENT` (model, out_task), `INVALID_ARGUMENT` (an option out of range,
/// unknown classifier, a struct_size no header had), `HEADER_TOO_NEW` (options from a newer
/// header). Thread-safe with respect to the model.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_new(
    model: *const mgecl_model,
    options: *const mgecl_task_options,
    out_task: *mut *mut mgecl_task,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(model, "model") }?;
        check_out(out_task, "out_task")?;
        let config = if options.is_null() {
            handle.model.task_defaults().clone()
        } else {
            let options = unsafe { versioned::read(options, default_task_options(), "options") }?;
            options_to_config(&options)?
        };
        let task = Task::new(Arc::clone(&handle.model), config)?;
        unsafe { out_task.write(Box::into_raw(mgecl_task::new(task))) };
        Ok(())
    })
}

/// Releases a task handle. `NULL` is a no-op. Label pointers handed out by the task become
/// invalid.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_free(task: *mut mgecl_task) {
    if !task.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(task) })));
    }
}

/// The task's current options, written to `*out_options` (whose `struct_size` the caller sets
/// first, as `mgecl_task_options_init` does).
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (a struct_size no header had),
/// `HEADER_TOO_NEW`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_get_options(
    task: *const mgecl_task,
    out_options: *mut mgecl_task_options,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        let options = config_to_options(handle.task.config());
        unsafe { versioned::write(out_options, options, "out_options") }
    })
}

/// Replaces the task's options; the task must be fitted again. On error the old options stay.
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (an option out of range, unknown classifier,
/// a struct_size no header had), `HEADER_TOO_NEW` (options from a newer header),
/// `LIMIT_EXCEEDED` (the task already holds more classes or rows than the new limits). One
/// thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_set_options(
    task: *mut mgecl_task,
    options: *const mgecl_task_options,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { mut_arg(task, "task") }?;
        let options = unsafe { versioned::read(options, default_task_options(), "options") }?;
        handle.task.set_config(options_to_config(&options)?)?;
        Ok(())
    })
}

/// Adds an empty class named `label` (UTF-8, NUL-terminated, 1..1024 bytes, no control
/// characters). The task must be fitted again.
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (bad UTF-8, empty, too long, control
/// characters), `DUPLICATE_LABEL`, `LIMIT_EXCEEDED` (`max_classes` reached). One thread at a
/// time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_add_class(
    task: *mut mgecl_task,
    label: *const c_char,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { mut_arg(task, "task") }?;
        let label = unsafe { str_arg(label, "label") }?;
        handle.task.add_class(label)?;
        handle.refresh_labels();
        Ok(())
    })
}

/// Removes a class and its examples. Label pointers handed out before become invalid; the
/// task must be fitted again.
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (bad UTF-8), `UNKNOWN_LABEL`. One thread at a
/// time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_remove_class(
    task: *mut mgecl_task,
    label: *const c_char,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { mut_arg(task, "task") }?;
        let label = unsafe { str_arg(label, "label") }?;
        handle.task.remove_class(label)?;
        handle.refresh_labels();
        Ok(())
    })
}

/// Embeds `image` (with its augmented copies when configured) and adds it to class `label`.
/// The example's id is written to `*out_id` (`out_id` may be NULL). On error the task is
/// unchanged.
///
/// Errors: `NULL_ARGUMENT` (task, label, image, the image's path/data), `INVALID_ARGUMENT`,
/// `UNKNOWN_LABEL`, `IO`, `INVALID_IMAGE`, `LIMIT_EXCEEDED`, `BACKEND`, `PANIC`. One thread
/// at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_add_example(
    task: *mut mgecl_task,
    label: *const c_char,
    image: *const mgecl_image,
    out_id: *mut u64,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { mut_arg(task, "task") }?;
        let label = unsafe { str_arg(label, "label") }?;
        let source = unsafe { image_arg(ref_arg(image, "image")?, "image") }?;
        let id = handle.task.add_example(label, &source)?;
        if !out_id.is_null() {
            unsafe { out_id.write(id) };
        }
        Ok(())
    })
}

/// Adds an already computed feature (`len` floats, the model's `feature_dim`, e.g. a row from
/// `mgecl_model_embed`) to class `label`; a multiple of `feature_dim` holds the image's
/// feature, then its augmented copies' (fitted on when `augmented_copies` is not 0). The id is
/// written to `*out_id` (may be NULL).
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (wrong length, NaN/infinite value, bad
/// UTF-8), `UNKNOWN_LABEL`, `LIMIT_EXCEEDED` (`max_rows` reached). One thread at a time per
/// task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_add_example_feature(
    task: *mut mgecl_task,
    label: *const c_char,
    feature: *const f32,
    len: usize,
    out_id: *mut u64,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { mut_arg(task, "task") }?;
        let label = unsafe { str_arg(label, "label") }?;
        if feature.is_null() {
            return Err(Failure::Null("feature"));
        }
        let feature = unsafe { slice_arg(feature, len, "feature") }?;
        let id = handle.task.add_example_feature(label, feature)?;
        if !out_id.is_null() {
            unsafe { out_id.write(id) };
        }
        Ok(())
    })
}

/// Adds the classes of the support folder `folder`, each with its images as examples (as the
/// `mgecl` command reads `--support`): one class per sub-folder, labelled by the
/// sub-folder's name, sorted by name (names starting with a dot are skipped); each class's
/// examples are the image files directly inside its sub-folder (.png, .jpg, ...: other files
/// and deeper folders are ignored). Fit the task afterwards with `mgecl_task_fit`. The
/// number of examples added is written to `*out_examples` (may be NULL). Label pointers
/// handed out before become invalid. Every image is tried before the call fails, so the
/// error message names all that cannot be used; on error the task is left without the
/// folder's classes (and unfitted).
///
/// Errors: `NULL_ARGUMENT` (task, folder), `INVALID_ARGUMENT` (bad UTF-8; no class
/// sub-folder, a class sub-folder without images, a sub-folder name that is no label),
/// `DUPLICATE_LABEL` (a class the task already has), `IO` (a folder or image cannot be
/// read), `INVALID_IMAGE` (damaged or unsupported images; several unusable images of any
/// kind), `LIMIT_EXCEEDED` (an image over the model's image limits; `max_classes`,
/// `max_rows` reached), `BACKEND`, `PANIC`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_add_folder(
    task: *mut mgecl_task,
    folder: *const c_char,
    out_examples: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { mut_arg(task, "task") }?;
        let folder = unsafe { str_arg(folder, "folder") }?;
        let added = handle.task.add_folder(folder);
        handle.refresh_labels();
        let examples = added?.iter().map(|class| class.images.len()).sum();
        if !out_examples.is_null() {
            unsafe { out_examples.write(examples) };
        }
        Ok(())
    })
}

/// Removes one example by id; the task must be fitted again.
///
/// Errors: `NULL_ARGUMENT`, `UNKNOWN_EXAMPLE`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_remove_example(task: *mut mgecl_task, id: u64) -> mgecl_status {
    guard(|| {
        let handle = unsafe { mut_arg(task, "task") }?;
        handle.task.remove_example(id)?;
        Ok(())
    })
}

/// Number of classes, written to `*out_count`.
///
/// Errors: `NULL_ARGUMENT`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_class_count(
    task: *const mgecl_task,
    out_count: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        check_out(out_count, "out_count")?;
        unsafe { out_count.write(handle.labels.len()) };
        Ok(())
    })
}

/// The label of class `index` (classes are in the order they were added), written to
/// `*out_label`. The string belongs to the task: valid until the task is next changed or
/// freed.
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (index out of range). One thread at a time per
/// task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_class_label(
    task: *const mgecl_task,
    index: usize,
    out_label: *mut *const c_char,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        check_out(out_label, "out_label")?;
        let label = handle.labels.get(index).ok_or_else(|| {
            Failure::Argument(format!(
                "class index {index} is out of range (the task has {} classes)",
                handle.labels.len()
            ))
        })?;
        unsafe { out_label.write(label.as_ptr()) };
        Ok(())
    })
}

/// The ids of the examples of class `index`, in the order they were added, copied into the
/// caller's `ids` array of `ids_len` elements. `needed` (may be NULL) receives the number of
/// examples, on success and on `BUFFER_TOO_SMALL`.
///
/// Errors: `NULL_ARGUMENT` (task, or ids when ids_len > 0), `INVALID_ARGUMENT` (index out of
/// range), `BUFFER_TOO_SMALL`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_class_examples(
    task: *const mgecl_task,
    index: usize,
    ids: *mut u64,
    ids_len: usize,
    needed: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        let classes = handle.task.classes();
        let class = classes.get(index).ok_or_else(|| {
            Failure::Argument(format!(
                "class index {index} is out of range (the task has {} classes)",
                classes.len()
            ))
        })?;
        let out = unsafe { out_buffer(ids, ids_len, class.example_ids.len(), needed, "ids") }?;
        out.copy_from_slice(&class.example_ids);
        Ok(())
    })
}

/// Whether the task has been fitted since its last change, written to `*out_fitted`.
///
/// Errors: `NULL_ARGUMENT`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_is_fitted(
    task: *const mgecl_task,
    out_fitted: *mut bool,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        check_out(out_fitted, "out_fitted")?;
        unsafe { out_fitted.write(handle.task.is_fitted()) };
        Ok(())
    })
}

/// Fits the task's classifier (set by its options) on the L2-normalised support features.
/// What the fit did is written to `*out_report` (may be NULL; else the caller sets its
/// `struct_size` first: `mgecl_fit_report report = { sizeof report };`). A logistic fit that
/// stops at the iteration cap still succeeds, with `converged` false. On error the task is
/// unfitted.
///
/// Errors: `NULL_ARGUMENT` (task), `INVALID_TASK` (fewer than two classes, an empty class),
/// `INVALID_ARGUMENT` (also a report struct_size no header had; checked before fitting),
/// `HEADER_TOO_NEW`, `BACKEND`, `PANIC`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_fit(
    task: *mut mgecl_task,
    out_report: *mut mgecl_fit_report,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { mut_arg(task, "task") }?;
        if !out_report.is_null() {
            unsafe { versioned::check_out(out_report, "out_report") }?;
        }
        let report = handle.task.fit()?;
        if !out_report.is_null() {
            unsafe { versioned::write(out_report, fit_report(&report), "out_report") }?;
        }
        Ok(())
    })
}

/// Embeds and classifies one image: the best class and its probability, written to
/// `*out_prediction` (its label belongs to the task).
///
/// Errors: `NULL_ARGUMENT`, `NOT_FITTED` (checked before embedding), `INVALID_ARGUMENT`,
/// `IO`, `INVALID_IMAGE`, `LIMIT_EXCEEDED`, `BACKEND`, `PANIC`. One thread at a time per
/// task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_classify(
    task: *const mgecl_task,
    image: *const mgecl_image,
    out_prediction: *mut mgecl_prediction,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        let source = unsafe { image_arg(ref_arg(image, "image")?, "image") }?;
        check_out(out_prediction, "out_prediction")?;
        let predictions = handle.task.classify(&[source])?;
        let first = predictions
            .first()
            .ok_or_else(|| Error::backend("no prediction for the image"))?;
        unsafe { out_prediction.write(handle.prediction(first)) };
        Ok(())
    })
}

/// Embeds and classifies `count` images in one batch: one prediction per image, in input
/// order, written to the caller's `out_predictions` array of `out_len` elements. With
/// `options.transductive`, the batch refines the prototypes first (see there).
///
/// Errors: as `mgecl_task_classify`; `INVALID_ARGUMENT` for count 0; `BUFFER_TOO_SMALL` when
/// `out_len < count`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_classify_batch(
    task: *const mgecl_task,
    images: *const mgecl_image,
    count: usize,
    out_predictions: *mut mgecl_prediction,
    out_len: usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        let sources = unsafe { images_arg(images, count) }?;
        let out = unsafe {
            out_buffer(
                out_predictions,
                out_len,
                count,
                std::ptr::null_mut(),
                "out_predictions",
            )
        }?;
        let predictions = handle.task.classify(&sources)?;
        for (o, p) in out.iter_mut().zip(&predictions) {
            *o = handle.prediction(p);
        }
        Ok(())
    })
}

/// Embeds and classifies one image and writes its `k` most probable classes, best first, to
/// the caller's arrays `out_indices` and `out_probabilities` (each of at least `k`
/// elements); `*out_count` receives how many were written (`min(k, classes)`). Labels of the
/// indices come from `mgecl_task_class_label`.
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (k = 0), otherwise as `mgecl_task_classify`.
/// One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_classify_top_k(
    task: *const mgecl_task,
    image: *const mgecl_image,
    k: usize,
    out_indices: *mut usize,
    out_probabilities: *mut f64,
    out_count: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        let source = unsafe { image_arg(ref_arg(image, "image")?, "image") }?;
        if k == 0 {
            return Err(Failure::Argument("k must be at least 1".into()));
        }
        check_out(out_indices, "out_indices")?;
        check_out(out_probabilities, "out_probabilities")?;
        check_out(out_count, "out_count")?;
        let predictions = handle.task.classify(&[source])?;
        let top = predictions
            .first()
            .ok_or_else(|| Error::backend("no prediction for the image"))?
            .top_k(k);
        for (i, &(index, probability)) in top.iter().enumerate() {
            unsafe { out_indices.add(i).write(index) };
            unsafe { out_probabilities.add(i).write(probability) };
        }
        unsafe { out_count.write(top.len()) };
        Ok(())
    })
}

/// Embeds `count` query images as the task's classify functions do: with
/// `options.augment_queries` and `augmented_copies > 0`, each row is the mean direction of
/// the image's and its copies' features; otherwise it is `mgecl_model_embed`'s row. Writes
/// `count x feature_dim` floats (row-major, in input order) into the caller's `out` of
/// `out_len` floats, for `mgecl_task_classify_feature`, `mgecl_task_label_next` and
/// `mgecl_task_label_csv` (so that work split over processes classifies what
/// `mgecl_task_classify_batch` would).
///
/// `needed` (may be NULL) receives `count x feature_dim`, on success and on
/// `BUFFER_TOO_SMALL` (which is checked before any work). `out` is written only on success.
///
/// Errors: as `mgecl_model_embed` (the task need not be fitted). One thread at a time per
/// task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_embed_queries(
    task: *const mgecl_task,
    images: *const mgecl_image,
    count: usize,
    out: *mut f32,
    out_len: usize,
    needed: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        let sources = unsafe { images_arg(images, count) }?;
        let shape = (count, handle.task.model().feature_dim());
        unsafe {
            features_out(out, out_len, needed, shape, || {
                Ok(handle.task.embed_queries(&sources)?)
            })
        }
    })
}

/// Classifies an already computed feature (`len` floats = the model's `feature_dim`, e.g. a
/// row from `mgecl_model_embed` or `mgecl_task_embed_queries`), written to
/// `*out_prediction`.
///
/// Errors: `NULL_ARGUMENT`, `NOT_FITTED`, `INVALID_ARGUMENT` (wrong length, NaN/infinite).
/// One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_classify_feature(
    task: *const mgecl_task,
    feature: *const f32,
    len: usize,
    out_prediction: *mut mgecl_prediction,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        if feature.is_null() {
            return Err(Failure::Null("feature"));
        }
        let feature = unsafe { slice_arg(feature, len, "feature") }?;
        check_out(out_prediction, "out_prediction")?;
        let row = ArrayView2::from_shape((1, len), feature)
            .map_err(|e| Failure::Argument(format!("feature: {e}")))?;
        let predictions = handle.task.classify_features(row)?;
        let first = predictions
            .first()
            .ok_or_else(|| Error::backend("no prediction for the feature"))?;
        unsafe { out_prediction.write(handle.prediction(first)) };
        Ok(())
    })
}

/// Ranks `rows` feature rows (`rows x dim` floats, row-major, as `mgecl_model_embed` writes
/// them) by how much labelling each would help the task: the `count` best, best first, go to
/// the caller's `out_indices` (row numbers) and `out_scores` (uncertainty x density after the
/// diversity discount), each of `out_len` elements; `*out_count` receives how many were
/// written (`min(count, rows)`). Uncertainty is one minus the margin between the two most
/// probable classes, density the mean cosine similarity to the 10 nearest rows; after each
/// pick, rows like it are discounted so that near-duplicates are not all suggested. With
/// `options.transductive`, the uncertainty is that of the rows' transductive answers.
///
/// Errors: `NULL_ARGUMENT`, `NOT_FITTED`, `INVALID_ARGUMENT` (rows 0, `dim` not the model's
/// feature_dim, NaN/infinite values), `BUFFER_TOO_SMALL` (`out_len < min(count, rows)`).
/// One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_label_next(
    task: *const mgecl_task,
    features: *const f32,
    rows: usize,
    dim: usize,
    count: usize,
    out_indices: *mut usize,
    out_scores: *mut f64,
    out_len: usize,
    out_count: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        if features.is_null() {
            return Err(Failure::Null("features"));
        }
        let len = rows
            .checked_mul(dim)
            .ok_or_else(|| Failure::Argument("rows x dim overflows".into()))?;
        let features = unsafe { slice_arg(features, len, "features") }?;
        check_out(out_count, "out_count")?;
        let wanted = count.min(rows);
        let indices = unsafe {
            out_buffer(
                out_indices,
                out_len,
                wanted,
                std::ptr::null_mut(),
                "out_indices",
            )
        }?;
        let scores = unsafe {
            out_buffer(
                out_scores,
                out_len,
                wanted,
                std::ptr::null_mut(),
                "out_scores",
            )
        }?;
        let view = ArrayView2::from_shape((rows, dim), features)
            .map_err(|e| Failure::Argument(format!("features: {e}")))?;
        let ranked = handle.task.label_next(view, count)?;
        for ((i, s), suggestion) in indices.iter_mut().zip(scores.iter_mut()).zip(&ranked) {
            *i = suggestion.index;
            *s = suggestion.score;
        }
        unsafe { out_count.write(ranked.len()) };
        Ok(())
    })
}

/// Labels `rows` feature rows (`rows x dim` floats, row-major, as `mgecl_model_embed` writes
/// them) and writes `mgecl label`'s CSV for them, NUL-terminated, into the caller's `buffer`
/// of `buffer_len` bytes: a header row (`path,label,probability,needs_review,runner_up,
/// runner_up_probability,known_probability,label_next,error`), then one row per feature row
/// with `paths[i]` (`rows` NUL-terminated UTF-8 strings) as its path and an empty `error`.
/// An image needs review when its probability or known-probability is below `review_below`;
/// the `label_next` best rows to label next get their rank (see `mgecl_task_label_next`).
/// With `options.transductive`, the rows are answered together (see there).
///
/// `needed` (may be NULL) receives the bytes required including the NUL, on success and on
/// `BUFFER_TOO_SMALL`; call with `buffer_len` 0 (buffer may then be NULL) to ask the size
/// (the labelling is computed on each call).
///
/// Errors: `NULL_ARGUMENT` (task, features, paths or one of them, buffer when buffer_len >
/// 0), `NOT_FITTED`, `INVALID_ARGUMENT` (rows 0, `dim` not the model's feature_dim, NaN or
/// infinite values, `review_below` outside [0, 1], bad UTF-8), `BUFFER_TOO_SMALL`.
/// One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_label_csv(
    task: *const mgecl_task,
    features: *const f32,
    rows: usize,
    dim: usize,
    paths: *const *const c_char,
    review_below: f64,
    label_next: usize,
    buffer: *mut c_char,
    buffer_len: usize,
    needed: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        if features.is_null() {
            return Err(Failure::Null("features"));
        }
        let len = rows
            .checked_mul(dim)
            .ok_or_else(|| Failure::Argument("rows x dim overflows".into()))?;
        let features = unsafe { slice_arg(features, len, "features") }?;
        let paths = unsafe { str_array_arg(paths, rows, "paths") }?;
        let view = ArrayView2::from_shape((rows, dim), features)
            .map_err(|e| Failure::Argument(format!("features: {e}")))?;
        let labelling = handle
            .task
            .label_features(view, &label_options(review_below, label_next))?;
        unsafe { out_text(&labelling.csv(&paths)?, buffer, buffer_len, needed) }
    })
}

/// Labels the image files `paths` (`count` NUL-terminated UTF-8 paths) and writes `mgecl
/// label`'s CSV for them, NUL-terminated, into `buffer` as `mgecl_task_label_csv` does, with
/// `paths[i]` as each row's path. A file that cannot be read or decoded, or breaks the image
/// limits, does not fail the call: its row has empty fields but `path` and `error`, which says
/// why (naming the file), and it is not among the images to label next. With
/// `options.transductive`, the images that could be embedded are answered together.
///
/// `needed` (may be NULL) receives the bytes required including the NUL, on success and on
/// `BUFFER_TOO_SMALL`; call with `buffer_len` 0 (buffer may then be NULL) to ask the size
/// (the images are embedded and labelled on each call: ask with a generous buffer first).
///
/// Errors: `NULL_ARGUMENT` (task, paths or one of them, buffer when buffer_len > 0),
/// `NOT_FITTED`, `INVALID_ARGUMENT` (count 0, `review_below` outside [0, 1], bad UTF-8),
/// `BACKEND`, `BUFFER_TOO_SMALL`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_label_paths_csv(
    task: *const mgecl_task,
    paths: *const *const c_char,
    count: usize,
    review_below: f64,
    label_next: usize,
    buffer: *mut c_char,
    buffer_len: usize,
    needed: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        let paths = unsafe { str_array_arg(paths, count, "paths") }?;
        if paths.is_empty() {
            return Err(Failure::Argument("no images to label".into()));
        }
        let labelling = handle
            .task
            .label_paths(&paths, &label_options(review_below, label_next))?;
        unsafe { out_text(&labelling.csv(&paths)?, buffer, buffer_len, needed) }
    })
}

/// The labelling options of both CSV calls.
fn label_options(review_below: f64, label_next: usize) -> LabelOptions {
    LabelOptions::new(review_below, label_next)
}

/// Saves the task (labels, features, options, model fingerprint, whether it was fitted) to
/// `path` atomically: a crash leaves the old file or the new one.
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (bad UTF-8), `IO`, `BACKEND`. One thread at a
/// time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_save(
    task: *const mgecl_task,
    path: *const c_char,
) -> mgecl_status {
    guard(|| {
        let handle = unsafe { ref_arg(task, "task") }?;
        let path = unsafe { str_arg(path, "path") }?;
        handle.task.save(path)?;
        Ok(())
    })
}

/// Loads a task saved by `mgecl_task_save` against `model` (refitting it if it was fitted),
/// into a new handle written to `*out_task`; free it with `mgecl_task_free`.
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (bad UTF-8), `IO`, `LIMIT_EXCEEDED`,
/// `INVALID_TASK_FILE` (not a task file, truncated, modified), `MODEL_MISMATCH` (made with a
/// different model), errors of `mgecl_task_fit`. Thread-safe with respect to the model.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_load(
    path: *const c_char,
    model: *const mgecl_model,
    out_task: *mut *mut mgecl_task,
) -> mgecl_status {
    guard(|| {
        let path = unsafe { str_arg(path, "path") }?;
        let handle = unsafe { ref_arg(model, "model") }?;
        check_out(out_task, "out_task")?;
        let task = Task::load(path, Arc::clone(&handle.model))?;
        unsafe { out_task.write(Box::into_raw(mgecl_task::new(task))) };
        Ok(())
    })
}

/// `mgecl_task_load` from the `len` bytes of a task file at `data` (borrowed for the call).
///
/// Errors: as `mgecl_task_load` without `IO`. Thread-safe with respect to the model.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_load_bytes(
    data: *const u8,
    len: usize,
    model: *const mgecl_model,
    out_task: *mut *mut mgecl_task,
) -> mgecl_status {
    guard(|| {
        if data.is_null() {
            return Err(Failure::Null("data"));
        }
        let bytes = unsafe { slice_arg(data, len, "data") }?;
        let handle = unsafe { ref_arg(model, "model") }?;
        check_out(out_task, "out_task")?;
        let task = Task::from_bytes(bytes, Arc::clone(&handle.model))?;
        unsafe { out_task.write(Box::into_raw(mgecl_task::new(task))) };
        Ok(())
    })
}
