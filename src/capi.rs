//! The C ABI (DESIGN.md section 5): the model and task API as C functions over opaque
//! handles. A thin shell over the Rust API — marshalling, NULL/UTF-8 checks, panic catching and
//! buffer-size checks live here, nothing else. `include/mgecl.h` is generated from this file by
//! cbindgen (see `tests/c_header.rs`); the doc comments below become the header's.
//!
//! Conventions: every fallible function returns [`mgecl_status`] (0 = OK) and writes its
//! outputs through out-pointers only on success; the calling thread's last error message is
//! kept for [`mgecl_last_error_message`]; every entry point checks its pointers and UTF-8 and
//! catches panics ([`mgecl_status::Panic`]), so no unwinding crosses the ABI.
#![allow(non_camel_case_types)]
// Every exported function documents its pointer requirements in prose for C readers.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use ndarray::ArrayView2;

use crate::error::Error;
use crate::model::{LoadOptions, Model};
use crate::preprocess::{ImageSource, PixelBuffer, PixelFormat};
use crate::task::{ClassifierKind, FitReport, Prediction, Task, TaskConfig};

/// Major version of the library this header belongs to.
pub const MGECL_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header belongs to.
pub const MGECL_VERSION_MINOR: u32 = 3;
/// Patch version of the library this header belongs to.
pub const MGECL_VERSION_PATCH: u32 = 0;

/// Result of every fallible function: `MGECL_STATUS_OK` (0) or what went wrong. Each
/// `mgecl::Error` variant of the Rust API maps to exactly one code; `NULL_ARGUMENT`,
/// `BUFFER_TOO_SMALL` and `PANIC` come from the C layer itself. The message of the failure is
/// `mgecl_last_error_message()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgecl_status {
    /// Success.
    Ok = 0,
    /// An argument cannot be used: bad option value, wrong feature length, empty batch,
    /// invalid UTF-8 in a string, bad pixel buffer, unknown enum value.
    InvalidArgument = 1,
    /// A required pointer argument was NULL.
    NullArgument = 2,
    /// A caller-owned output buffer is too small; the message (and the `needed` out-parameter
    /// where the function has one) says how large it must be.
    BufferTooSmall = 3,
    /// A file could not be read or written.
    Io = 4,
    /// A model file could not be loaded (the message names the problem and the tensor/key).
    InvalidModel = 5,
    /// An image could not be decoded or is unusable.
    InvalidImage = 6,
    /// An image, model or task file, or a task (classes, feature rows), exceeds a resource limit.
    LimitExceeded = 7,
    /// The requested device is not compiled in or not present.
    DeviceUnavailable = 8,
    /// The task must be fitted (again) before it can classify.
    NotFitted = 9,
    /// The task cannot be fitted as it stands (fewer than two classes, an empty class).
    InvalidTask = 10,
    /// The class label is already in the task.
    DuplicateLabel = 11,
    /// The class label is not in the task.
    UnknownLabel = 12,
    /// The example id is not in the task.
    UnknownExample = 13,
    /// A task file is not one, is truncated, or was modified after it was written.
    InvalidTaskFile = 14,
    /// A task file was made with a different model.
    ModelMismatch = 15,
    /// The numeric backend failed.
    Backend = 16,
    /// A bug: the library panicked inside the call. The panic was caught; the handles the call
    /// used may be inconsistent and should only be freed.
    Panic = 17,
}

/// Which classifier a task fits (`mgecl_task_options.classifier`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mgecl_classifier {
    /// Multinomial logistic regression (scikit-learn's `LogisticRegression`, C = 1/alpha).
    Logistic = 0,
    /// Cosine similarity to class means, softmax with a temperature; fits in microseconds.
    Prototype = 1,
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

/// A loaded encoder (opaque). Immutable: one handle may be used by any number of threads at
/// once. Tasks keep their model alive, so the handle may be freed before its tasks.
pub struct mgecl_model {
    model: Arc<Model>,
    arch: CString,
    device: CString,
    fingerprint: CString,
}

/// A few-shot task bound to a model (opaque). Not thread-safe: use one handle from one thread
/// at a time (different tasks may run in parallel, also on one shared model).
pub struct mgecl_task {
    task: Task,
    /// NUL-terminated copies of the class labels, in class order, for the pointers handed out.
    labels: Vec<CString>,
}

/// One metadata override for `mgecl_load_options`.
#[repr(C)]
pub struct mgecl_metadata_entry {
    /// Metadata key (UTF-8, NUL-terminated), e.g. `"image_size"`.
    pub key: *const c_char,
    /// Its value as the file would store it, e.g. `"[28, 28]"`.
    pub value: *const c_char,
}

/// How to load a model. A zero-initialised struct (or a NULL options pointer) means the
/// defaults: CPU, no overrides.
#[repr(C)]
pub struct mgecl_load_options {
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
}

/// What a model is (`mgecl_model_describe`). The strings belong to the model handle and stay
/// valid until it is freed. Widths, normalisation and the full metadata are in
/// `mgecl_model_info_json`.
#[repr(C)]
pub struct mgecl_model_info {
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
/// the duration of the call only.
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

/// Settings of a task (the Rust `TaskConfig`). Start from `mgecl_task_default_options()` and
/// change fields; a zero-initialised struct is not valid.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mgecl_task_options {
    /// An `mgecl_classifier` value (default `MGECL_CLASSIFIER_LOGISTIC`).
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
    /// Augmented copies embedded with each support image (default 0, at most 8); applies to
    /// examples added after it is set.
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
}

/// What `mgecl_task_fit` did.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mgecl_fit_report {
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

/// The answer for one image.
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

// ---------------------------------------------------------------------------------------------
// Errors, panics and the last-error message.

/// Why a call failed, before it becomes a status and a message.
enum Failure {
    Api(Error),
    Null(&'static str),
    Utf8(&'static str),
    Argument(String),
    BufferTooSmall {
        what: &'static str,
        needed: usize,
        given: usize,
    },
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Api(e)
    }
}

type Res<T> = std::result::Result<T, Failure>;

/// The status code of each Rust error: an exhaustive match, so that a new variant cannot be
/// added without giving it a code.
fn status_of(error: &Error) -> mgecl_status {
    match error {
        Error::InvalidArgument(_) => mgecl_status::InvalidArgument,
        Error::Io { .. } => mgecl_status::Io,
        Error::InvalidModel { .. } => mgecl_status::InvalidModel,
        Error::InvalidImage(_) => mgecl_status::InvalidImage,
        Error::LimitExceeded(_) => mgecl_status::LimitExceeded,
        Error::DeviceUnavailable(_) => mgecl_status::DeviceUnavailable,
        Error::NotFitted => mgecl_status::NotFitted,
        Error::InvalidTask(_) => mgecl_status::InvalidTask,
        Error::DuplicateLabel(_) => mgecl_status::DuplicateLabel,
        Error::UnknownLabel(_) => mgecl_status::UnknownLabel,
        Error::UnknownExample(_) => mgecl_status::UnknownExample,
        Error::InvalidTaskFile(_) => mgecl_status::InvalidTaskFile,
        Error::ModelMismatch { .. } => mgecl_status::ModelMismatch,
        Error::Backend(_) => mgecl_status::Backend,
    }
}

impl Failure {
    fn status_and_message(self) -> (mgecl_status, String) {
        match self {
            Failure::Api(e) => (status_of(&e), e.to_string()),
            Failure::Null(name) => (
                mgecl_status::NullArgument,
                format!("argument {name} must not be NULL"),
            ),
            Failure::Utf8(name) => (
                mgecl_status::InvalidArgument,
                format!("argument {name} is not valid UTF-8"),
            ),
            Failure::Argument(message) => (mgecl_status::InvalidArgument, message),
            Failure::BufferTooSmall {
                what,
                needed,
                given,
            } => (
                mgecl_status::BufferTooSmall,
                format!("{what} needs room for {needed} elements, the buffer holds {given}"),
            ),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = message);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".to_string());
    format!("internal error (panic): {text}")
}

/// Runs the body of an entry point: catches panics, turns failures into a status and the
/// thread's last error message.
fn guard(body: impl FnOnce() -> Res<()>) -> mgecl_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => mgecl_status::Ok,
        Ok(Err(failure)) => {
            let (status, message) = failure.status_and_message();
            set_last_error(message);
            status
        }
        Err(payload) => {
            set_last_error(panic_message(payload.as_ref()));
            mgecl_status::Panic
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pointer and string checks.

unsafe fn str_arg<'a>(p: *const c_char, name: &'static str) -> Res<&'a str> {
    if p.is_null() {
        return Err(Failure::Null(name));
    }
    CStr::from_ptr(p).to_str().map_err(|_| Failure::Utf8(name))
}

unsafe fn ref_arg<'a, T>(p: *const T, name: &'static str) -> Res<&'a T> {
    p.as_ref().ok_or(Failure::Null(name))
}

unsafe fn mut_arg<'a, T>(p: *mut T, name: &'static str) -> Res<&'a mut T> {
    p.as_mut().ok_or(Failure::Null(name))
}

fn check_out<T>(p: *mut T, name: &'static str) -> Res<()> {
    if p.is_null() {
        Err(Failure::Null(name))
    } else {
        Ok(())
    }
}

fn check_len<T>(len: usize, name: &'static str) -> Res<()> {
    match len.checked_mul(std::mem::size_of::<T>().max(1)) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(()),
        _ => Err(Failure::Argument(format!("length of {name} is too large"))),
    }
}

/// A caller's input array; NULL is accepted only with length 0.
unsafe fn slice_arg<'a, T>(p: *const T, len: usize, name: &'static str) -> Res<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::Null(name));
    }
    check_len::<T>(len, name)?;
    Ok(std::slice::from_raw_parts(p, len))
}

/// A caller's output array of `len` elements that must hold `needed`: writes `needed` to
/// `needed_out` (when not NULL) whether or not the buffer is large enough.
unsafe fn out_buffer<'a, T>(
    p: *mut T,
    len: usize,
    needed: usize,
    needed_out: *mut usize,
    what: &'static str,
) -> Res<&'a mut [T]> {
    if !needed_out.is_null() {
        needed_out.write(needed);
    }
    if len < needed {
        return Err(Failure::BufferTooSmall {
            what,
            needed,
            given: len,
        });
    }
    if needed == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Failure::Null(what));
    }
    check_len::<T>(len, what)?;
    Ok(std::slice::from_raw_parts_mut(p, needed))
}

fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

unsafe fn image_arg<'a>(image: &mgecl_image, name: &'static str) -> Res<ImageSource<'a>> {
    match image.kind {
        k if k == mgecl_image_kind::File as u32 => {
            Ok(ImageSource::Path(Path::new(str_arg(image.path, name)?)))
        }
        k if k == mgecl_image_kind::Encoded as u32 => {
            if image.data.is_null() {
                return Err(Failure::Null(name));
            }
            Ok(ImageSource::Encoded(slice_arg(
                image.data, image.len, name,
            )?))
        }
        k if k == mgecl_image_kind::Pixels as u32 => {
            if image.data.is_null() {
                return Err(Failure::Null(name));
            }
            let format = match image.format {
                f if f == mgecl_pixel_format::Rgb8 as u32 => PixelFormat::Rgb8,
                f if f == mgecl_pixel_format::Rgba8 as u32 => PixelFormat::Rgba8,
                f if f == mgecl_pixel_format::Gray8 as u32 => PixelFormat::Gray8,
                other => {
                    return Err(Failure::Argument(format!(
                        "{name}: unknown pixel format {other}"
                    )))
                }
            };
            Ok(ImageSource::Pixels(PixelBuffer {
                data: slice_arg(image.data, image.len, name)?,
                width: image.width,
                height: image.height,
                stride: image.stride,
                format,
            }))
        }
        other => Err(Failure::Argument(format!(
            "{name}: unknown image kind {other}"
        ))),
    }
}

fn classifier_code(kind: ClassifierKind) -> u32 {
    match kind {
        ClassifierKind::Logistic => mgecl_classifier::Logistic as u32,
        ClassifierKind::Prototype => mgecl_classifier::Prototype as u32,
    }
}

fn options_to_config(options: &mgecl_task_options) -> Res<TaskConfig> {
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
    Ok(TaskConfig {
        classifier,
        alpha: options.alpha,
        max_iterations: options.max_iterations,
        gradient_tolerance: options.gradient_tolerance,
        temperature: options.temperature,
        augmented_copies: options.augmented_copies,
        threshold: options.use_threshold.then_some(options.threshold),
        calibrated: !options.raw_probabilities,
        max_classes: options.max_classes,
        max_rows: options.max_rows,
    })
}

fn config_to_options(config: &TaskConfig) -> mgecl_task_options {
    mgecl_task_options {
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
    }
}

fn fit_report(report: &FitReport) -> mgecl_fit_report {
    mgecl_fit_report {
        classifier: classifier_code(report.classifier),
        converged: report.converged,
        gradient_max_abs: report.gradient_max_abs,
        rows: report.rows,
        classes: report.classes,
    }
}

impl mgecl_model {
    fn new(model: Model) -> Box<Self> {
        let info = model.info();
        Box::new(mgecl_model {
            arch: c_string(&info.arch),
            device: c_string(&info.device),
            fingerprint: c_string(&info.fingerprint),
            model: Arc::new(model),
        })
    }
}

impl mgecl_task {
    fn new(task: Task) -> Box<Self> {
        let mut handle = Box::new(mgecl_task {
            task,
            labels: Vec::new(),
        });
        handle.refresh_labels();
        handle
    }

    /// Rebuilds the label copies after the classes changed.
    fn refresh_labels(&mut self) {
        self.labels = self
            .task
            .classes()
            .iter()
            .map(|c| c.label.as_str())
            .map(c_string)
            .collect();
    }

    fn prediction(&self, p: &Prediction) -> mgecl_prediction {
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

unsafe fn load_options(options: *const mgecl_load_options) -> Res<LoadOptions> {
    let mut out = LoadOptions::default();
    let Some(options) = options.as_ref() else {
        return Ok(out);
    };
    if !options.device.is_null() {
        out.device = str_arg(options.device, "options->device")?.parse()?;
    }
    let entries = slice_arg(options.metadata, options.metadata_len, "options->metadata")?;
    let mut overrides = BTreeMap::new();
    for entry in entries {
        overrides.insert(
            str_arg(entry.key, "options->metadata[i].key")?.to_string(),
            str_arg(entry.value, "options->metadata[i].value")?.to_string(),
        );
    }
    out.metadata_overrides = overrides;
    if options.max_image_side != 0 {
        out.image_limits.max_width = options.max_image_side;
        out.image_limits.max_height = options.max_image_side;
    }
    if options.max_image_bytes != 0 {
        out.image_limits.max_decoded_bytes = options.max_image_bytes;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Library.

/// The library's version, e.g. `"0.2.0"` (static storage; never NULL). Compare with the
/// `MGECL_VERSION_*` macros to detect a header/library mismatch. Thread-safe.
#[no_mangle]
pub extern "C" fn mgecl_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on the calling thread (UTF-8, NUL-terminated; `""`
/// when no call has failed on this thread). Successful calls leave it unchanged. Owned by
/// the library: valid until the next failing call on this thread; copy it to keep it.
/// Never NULL. Thread-safe (each thread has its own message).
#[no_mangle]
pub extern "C" fn mgecl_last_error_message() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// A constant name for a status code, e.g. `"MGECL_STATUS_NOT_FITTED"` (static storage;
/// `"MGECL_STATUS_UNKNOWN"` for a value that is no status). Thread-safe.
#[no_mangle]
pub extern "C" fn mgecl_status_name(status: i32) -> *const c_char {
    let name: &'static str = match status {
        0 => "MGECL_STATUS_OK\0",
        1 => "MGECL_STATUS_INVALID_ARGUMENT\0",
        2 => "MGECL_STATUS_NULL_ARGUMENT\0",
        3 => "MGECL_STATUS_BUFFER_TOO_SMALL\0",
        4 => "MGECL_STATUS_IO\0",
        5 => "MGECL_STATUS_INVALID_MODEL\0",
        6 => "MGECL_STATUS_INVALID_IMAGE\0",
        7 => "MGECL_STATUS_LIMIT_EXCEEDED\0",
        8 => "MGECL_STATUS_DEVICE_UNAVAILABLE\0",
        9 => "MGECL_STATUS_NOT_FITTED\0",
        10 => "MGECL_STATUS_INVALID_TASK\0",
        11 => "MGECL_STATUS_DUPLICATE_LABEL\0",
        12 => "MGECL_STATUS_UNKNOWN_LABEL\0",
        13 => "MGECL_STATUS_UNKNOWN_EXAMPLE\0",
        14 => "MGECL_STATUS_INVALID_TASK_FILE\0",
        15 => "MGECL_STATUS_MODEL_MISMATCH\0",
        16 => "MGECL_STATUS_BACKEND\0",
        17 => "MGECL_STATUS_PANIC\0",
        _ => "MGECL_STATUS_UNKNOWN\0",
    };
    name.as_ptr().cast()
}

// ---------------------------------------------------------------------------------------------
// Images.

/// An image file (PNG or JPEG) at `path` (UTF-8, NUL-terminated; borrowed, must stay valid
/// while the image is used). Cannot fail: the path is checked when the image is used.
#[no_mangle]
pub extern "C" fn mgecl_image_file(path: *const c_char) -> mgecl_image {
    mgecl_image {
        kind: mgecl_image_kind::File as u32,
        path,
        data: std::ptr::null(),
        len: 0,
        width: 0,
        height: 0,
        stride: 0,
        format: 0,
    }
}

/// An encoded image (PNG or JPEG) in memory: `len` bytes at `data` (borrowed). Cannot fail:
/// the bytes are checked when the image is used.
#[no_mangle]
pub extern "C" fn mgecl_image_encoded(data: *const u8, len: usize) -> mgecl_image {
    mgecl_image {
        kind: mgecl_image_kind::Encoded as u32,
        data,
        len,
        ..mgecl_image_file(std::ptr::null())
    }
}

/// Raw pixels (e.g. a camera frame): `height` rows of `stride` bytes, each starting with
/// `width` pixels in `format` (an `mgecl_pixel_format`); `len` bytes at `data` (borrowed, at
/// least `stride * (height - 1) + width * bytes_per_pixel`). Cannot fail: checked when used.
#[no_mangle]
pub extern "C" fn mgecl_image_pixels(
    data: *const u8,
    len: usize,
    width: u32,
    height: u32,
    stride: usize,
    format: u32,
) -> mgecl_image {
    mgecl_image {
        kind: mgecl_image_kind::Pixels as u32,
        data,
        len,
        width,
        height,
        stride,
        format,
        path: std::ptr::null(),
    }
}

// ---------------------------------------------------------------------------------------------
// Models.

/// Loads a model file (safetensors) into a new handle written to `*out_model`.
///
/// `path`: UTF-8, NUL-terminated. `options`: NULL for the defaults (CPU, no metadata
/// overrides). On success the caller owns `*out_model` and releases it with
/// `mgecl_model_free`.
///
/// Errors: `NULL_ARGUMENT` (path, out_model, an override key/value), `INVALID_ARGUMENT`
/// (UTF-8, unknown device name), `IO` (unreadable file), `LIMIT_EXCEEDED` (file over 2 GiB),
/// `INVALID_MODEL` (not safetensors, truncated, missing tensor, wrong shape or dtype,
/// non-finite weight, bad metadata), `DEVICE_UNAVAILABLE`, `PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_load(
    path: *const c_char,
    options: *const mgecl_load_options,
    out_model: *mut *mut mgecl_model,
) -> mgecl_status {
    guard(|| {
        let path = str_arg(path, "path")?;
        check_out(out_model, "out_model")?;
        let options = load_options(options)?;
        let model = Model::load(path, &options)?;
        out_model.write(Box::into_raw(mgecl_model::new(model)));
        Ok(())
    })
}

/// Loads a model from the `len` bytes of a safetensors file at `data` (borrowed for the call)
/// into a new handle written to `*out_model`; otherwise as `mgecl_model_load`.
///
/// Errors: `NULL_ARGUMENT` (data, out_model), otherwise as `mgecl_model_load` without `IO`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_load_bytes(
    data: *const u8,
    len: usize,
    options: *const mgecl_load_options,
    out_model: *mut *mut mgecl_model,
) -> mgecl_status {
    guard(|| {
        if data.is_null() {
            return Err(Failure::Null("data"));
        }
        let bytes = slice_arg(data, len, "data")?;
        check_out(out_model, "out_model")?;
        let options = load_options(options)?;
        let model = Model::from_bytes(bytes, &options)?;
        out_model.write(Box::into_raw(mgecl_model::new(model)));
        Ok(())
    })
}

/// Releases a model handle. `NULL` is a no-op. Tasks created from the model keep working (they
/// hold their own reference). Do not use the handle afterwards, nor free it while another
/// thread uses it.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_free(model: *mut mgecl_model) {
    if !model.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(model))));
    }
}

/// Describes the model into `*out_info`; its strings belong to the model handle (valid until
/// it is freed).
///
/// Errors: `NULL_ARGUMENT`. Thread-safe (the model is not changed).
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_describe(
    model: *const mgecl_model,
    out_info: *mut mgecl_model_info,
) -> mgecl_status {
    guard(|| {
        let handle = ref_arg(model, "model")?;
        check_out(out_info, "out_info")?;
        let info = handle.model.info();
        out_info.write(mgecl_model_info {
            arch: handle.arch.as_ptr(),
            device: handle.device.as_ptr(),
            fingerprint: handle.fingerprint.as_ptr(),
            feature_dim: info.feature_dim,
            in_channels: info.in_channels,
            image_height: info.image_size.0,
            image_width: info.image_size.1,
            invert: info.invert,
        });
        Ok(())
    })
}

/// The full description of the model as a JSON object (arch, widths, in_channels,
/// image_size, feature_dim, mean, std, invert, device, fingerprint, metadata), NUL-terminated,
/// copied into the caller's `buffer` of `buffer_len` bytes.
///
/// `needed` (may be NULL) receives the bytes required including the NUL, on success and on
/// `BUFFER_TOO_SMALL`; call with `buffer_len` 0 (buffer may then be NULL) to ask the size.
///
/// Errors: `NULL_ARGUMENT` (model, or buffer when buffer_len > 0), `BUFFER_TOO_SMALL`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_info_json(
    model: *const mgecl_model,
    buffer: *mut c_char,
    buffer_len: usize,
    needed: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = ref_arg(model, "model")?;
        let json = serde_json::to_string(handle.model.info())
            .map_err(|e| Error::Backend(format!("cannot serialise the model info: {e}")))?;
        let text = c_string(&json);
        let bytes = text.as_bytes_with_nul();
        let out = out_buffer(buffer, buffer_len, bytes.len(), needed, "buffer")?;
        for (o, &b) in out.iter_mut().zip(bytes) {
            *o = b as c_char;
        }
        Ok(())
    })
}

/// Embeds `count` images: writes `count x feature_dim` floats (row-major, one row per image,
/// in input order; the encoder's output, not L2-normalised) into the caller's `out` buffer of
/// `out_len` floats.
///
/// `needed` (may be NULL) receives `count x feature_dim`, on success and on
/// `BUFFER_TOO_SMALL` (which is checked before any work). `out` is written only on success.
///
/// Errors: `NULL_ARGUMENT` (model, images, out, an image's path/data), `INVALID_ARGUMENT`
/// (count 0, bad UTF-8 path, bad pixel buffer, unknown image kind or pixel format),
/// `BUFFER_TOO_SMALL`, `IO`, `INVALID_IMAGE`, `LIMIT_EXCEEDED`, `BACKEND`, `PANIC`.
/// Thread-safe: many threads may embed with one model at once.
#[no_mangle]
pub unsafe extern "C" fn mgecl_model_embed(
    model: *const mgecl_model,
    images: *const mgecl_image,
    count: usize,
    out: *mut f32,
    out_len: usize,
    needed: *mut usize,
) -> mgecl_status {
    guard(|| {
        let handle = ref_arg(model, "model")?;
        if images.is_null() {
            return Err(Failure::Null("images"));
        }
        let images = slice_arg(images, count, "images")?;
        let sources = images
            .iter()
            .map(|image| image_arg(image, "images[i]"))
            .collect::<Res<Vec<_>>>()?;
        let dim = handle.model.feature_dim();
        let total = count
            .checked_mul(dim)
            .ok_or_else(|| Failure::Argument("count x feature_dim overflows".into()))?;
        let out = out_buffer(out, out_len, total, needed, "out")?;
        let features = handle.model.embed(&sources)?;
        for (o, &v) in out.iter_mut().zip(features.iter()) {
            *o = v;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Tasks.

/// The default task options: logistic regression, alpha 1, 1000 iterations, gradient
/// tolerance 1e-6, temperature 0.1, no augmentation, no threshold, at most 1000 classes and
/// 10000 feature rows. Thread-safe.
#[no_mangle]
pub extern "C" fn mgecl_task_default_options() -> mgecl_task_options {
    config_to_options(&TaskConfig::default())
}

/// Creates an empty task bound to `model`, written to `*out_task`. `options`: NULL for the
/// defaults. The task holds its own reference to the model. The caller owns `*out_task` and
/// releases it with `mgecl_task_free`.
///
/// Errors: `NULL_ARGUMENT` (model, out_task), `INVALID_ARGUMENT` (an option out of range,
/// unknown classifier). Thread-safe with respect to the model.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_new(
    model: *const mgecl_model,
    options: *const mgecl_task_options,
    out_task: *mut *mut mgecl_task,
) -> mgecl_status {
    guard(|| {
        let handle = ref_arg(model, "model")?;
        check_out(out_task, "out_task")?;
        let config = match options.as_ref() {
            Some(o) => options_to_config(o)?,
            None => TaskConfig::default(),
        };
        let task = Task::new(Arc::clone(&handle.model), config)?;
        out_task.write(Box::into_raw(mgecl_task::new(task)));
        Ok(())
    })
}

/// Releases a task handle. `NULL` is a no-op. Label pointers handed out by the task become
/// invalid.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_free(task: *mut mgecl_task) {
    if !task.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(task))));
    }
}

/// The task's current options, written to `*out_options`.
///
/// Errors: `NULL_ARGUMENT`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_get_options(
    task: *const mgecl_task,
    out_options: *mut mgecl_task_options,
) -> mgecl_status {
    guard(|| {
        let handle = ref_arg(task, "task")?;
        check_out(out_options, "out_options")?;
        out_options.write(config_to_options(handle.task.config()));
        Ok(())
    })
}

/// Replaces the task's options; the task must be fitted again. On error the old options stay.
///
/// Errors: `NULL_ARGUMENT`, `INVALID_ARGUMENT` (an option out of range, unknown classifier),
/// `LIMIT_EXCEEDED` (the task already holds more classes or rows than the new limits). One
/// thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_set_options(
    task: *mut mgecl_task,
    options: *const mgecl_task_options,
) -> mgecl_status {
    guard(|| {
        let handle = mut_arg(task, "task")?;
        let options = ref_arg(options, "options")?;
        handle.task.set_config(options_to_config(options)?)?;
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
        let handle = mut_arg(task, "task")?;
        let label = str_arg(label, "label")?;
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
        let handle = mut_arg(task, "task")?;
        let label = str_arg(label, "label")?;
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
        let handle = mut_arg(task, "task")?;
        let label = str_arg(label, "label")?;
        let source = image_arg(ref_arg(image, "image")?, "image")?;
        let id = handle.task.add_example(label, &source)?;
        if !out_id.is_null() {
            out_id.write(id);
        }
        Ok(())
    })
}

/// Adds an already computed feature (`len` floats, the model's `feature_dim`, e.g. a row from
/// `mgecl_model_embed`) to class `label`. The id is written to `*out_id` (may be NULL).
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
        let handle = mut_arg(task, "task")?;
        let label = str_arg(label, "label")?;
        if feature.is_null() {
            return Err(Failure::Null("feature"));
        }
        let feature = slice_arg(feature, len, "feature")?;
        let id = handle.task.add_example_feature(label, feature)?;
        if !out_id.is_null() {
            out_id.write(id);
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
        let handle = mut_arg(task, "task")?;
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
        let handle = ref_arg(task, "task")?;
        check_out(out_count, "out_count")?;
        out_count.write(handle.labels.len());
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
        let handle = ref_arg(task, "task")?;
        check_out(out_label, "out_label")?;
        let label = handle.labels.get(index).ok_or_else(|| {
            Failure::Argument(format!(
                "class index {index} is out of range (the task has {} classes)",
                handle.labels.len()
            ))
        })?;
        out_label.write(label.as_ptr());
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
        let handle = ref_arg(task, "task")?;
        let classes = handle.task.classes();
        let class = classes.get(index).ok_or_else(|| {
            Failure::Argument(format!(
                "class index {index} is out of range (the task has {} classes)",
                classes.len()
            ))
        })?;
        let out = out_buffer(ids, ids_len, class.example_ids.len(), needed, "ids")?;
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
        let handle = ref_arg(task, "task")?;
        check_out(out_fitted, "out_fitted")?;
        out_fitted.write(handle.task.is_fitted());
        Ok(())
    })
}

/// Fits the task's classifier (set by its options) on the L2-normalised support features.
/// What the fit did is written to `*out_report` (may be NULL). A logistic fit that stops at
/// the iteration cap still succeeds, with `converged` false. On error the task is unfitted.
///
/// Errors: `NULL_ARGUMENT` (task), `INVALID_TASK` (fewer than two classes, an empty class),
/// `INVALID_ARGUMENT`, `BACKEND`, `PANIC`. One thread at a time per task.
#[no_mangle]
pub unsafe extern "C" fn mgecl_task_fit(
    task: *mut mgecl_task,
    out_report: *mut mgecl_fit_report,
) -> mgecl_status {
    guard(|| {
        let handle = mut_arg(task, "task")?;
        let report = handle.task.fit()?;
        if !out_report.is_null() {
            out_report.write(fit_report(&report));
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
        let handle = ref_arg(task, "task")?;
        let source = image_arg(ref_arg(image, "image")?, "image")?;
        check_out(out_prediction, "out_prediction")?;
        let predictions = handle.task.classify(&[source])?;
        let first = predictions
            .first()
            .ok_or_else(|| Error::Backend("no prediction for the image".into()))?;
        out_prediction.write(handle.prediction(first));
        Ok(())
    })
}

/// Embeds and classifies `count` images in one batch: one prediction per image, in input
/// order, written to the caller's `out_predictions` array of `out_len` elements.
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
        let handle = ref_arg(task, "task")?;
        if images.is_null() {
            return Err(Failure::Null("images"));
        }
        let images = slice_arg(images, count, "images")?;
        let sources = images
            .iter()
            .map(|image| image_arg(image, "images[i]"))
            .collect::<Res<Vec<_>>>()?;
        let out = out_buffer(
            out_predictions,
            out_len,
            count,
            std::ptr::null_mut(),
            "out_predictions",
        )?;
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
        let handle = ref_arg(task, "task")?;
        let source = image_arg(ref_arg(image, "image")?, "image")?;
        if k == 0 {
            return Err(Failure::Argument("k must be at least 1".into()));
        }
        check_out(out_indices, "out_indices")?;
        check_out(out_probabilities, "out_probabilities")?;
        check_out(out_count, "out_count")?;
        let predictions = handle.task.classify(&[source])?;
        let top = predictions
            .first()
            .ok_or_else(|| Error::Backend("no prediction for the image".into()))?
            .top_k(k);
        for (i, &(index, probability)) in top.iter().enumerate() {
            out_indices.add(i).write(index);
            out_probabilities.add(i).write(probability);
        }
        out_count.write(top.len());
        Ok(())
    })
}

/// Classifies an already computed feature (`len` floats = the model's `feature_dim`, e.g. a
/// row from `mgecl_model_embed`), written to `*out_prediction`.
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
        let handle = ref_arg(task, "task")?;
        if feature.is_null() {
            return Err(Failure::Null("feature"));
        }
        let feature = slice_arg(feature, len, "feature")?;
        check_out(out_prediction, "out_prediction")?;
        let row = ArrayView2::from_shape((1, len), feature)
            .map_err(|e| Failure::Argument(format!("feature: {e}")))?;
        let predictions = handle.task.classify_features(row)?;
        let first = predictions
            .first()
            .ok_or_else(|| Error::Backend("no prediction for the feature".into()))?;
        out_prediction.write(handle.prediction(first));
        Ok(())
    })
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
        let handle = ref_arg(task, "task")?;
        let path = str_arg(path, "path")?;
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
        let path = str_arg(path, "path")?;
        let handle = ref_arg(model, "model")?;
        check_out(out_task, "out_task")?;
        let task = Task::load(path, Arc::clone(&handle.model))?;
        out_task.write(Box::into_raw(mgecl_task::new(task)));
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
        let bytes = slice_arg(data, len, "data")?;
        let handle = ref_arg(model, "model")?;
        check_out(out_task, "out_task")?;
        let task = Task::from_bytes(bytes, Arc::clone(&handle.model))?;
        out_task.write(Box::into_raw(mgecl_task::new(task)));
        Ok(())
    })
}

/// Test hook (only in builds with the `test-hooks` cargo feature, never in release
/// artefacts): panics inside an entry point with `message` (may be NULL), to check that the
/// panic comes back as `MGECL_STATUS_PANIC` with the message in `mgecl_last_error_message()`.
#[cfg(feature = "test-hooks")]
#[no_mangle]
pub unsafe extern "C" fn mgecl_test_panic(message: *const c_char) -> mgecl_status {
    guard(|| {
        let message = if message.is_null() {
            "test panic"
        } else {
            str_arg(message, "message")?
        };
        panic!("{message}");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_macros_match_the_crate_version() {
        let expected = format!("{MGECL_VERSION_MAJOR}.{MGECL_VERSION_MINOR}.{MGECL_VERSION_PATCH}");
        assert_eq!(expected, env!("CARGO_PKG_VERSION"));
        let version = unsafe { CStr::from_ptr(mgecl_version()) };
        assert_eq!(version.to_str().unwrap(), expected);
    }

    #[test]
    fn status_names_follow_the_enum() {
        for (status, name) in [
            (mgecl_status::Ok, "MGECL_STATUS_OK"),
            (
                mgecl_status::InvalidArgument,
                "MGECL_STATUS_INVALID_ARGUMENT",
            ),
            (mgecl_status::Panic, "MGECL_STATUS_PANIC"),
            (mgecl_status::Backend, "MGECL_STATUS_BACKEND"),
        ] {
            let got = unsafe { CStr::from_ptr(mgecl_status_name(status as i32)) };
            assert_eq!(got.to_str().unwrap(), name);
        }
        let unknown = unsafe { CStr::from_ptr(mgecl_status_name(1000)) };
        assert_eq!(unknown.to_str().unwrap(), "MGECL_STATUS_UNKNOWN");
    }

    #[test]
    fn default_options_round_trip() {
        let options = mgecl_task_default_options();
        let config = options_to_config(&options).ok().unwrap();
        assert_eq!(config, TaskConfig::default());
    }

    #[test]
    fn a_panic_in_a_guard_becomes_a_status_and_message() {
        let status = guard(|| panic!("boom"));
        assert_eq!(status, mgecl_status::Panic);
        let message = unsafe { CStr::from_ptr(mgecl_last_error_message()) };
        assert!(message.to_str().unwrap().contains("boom"));
    }
}
