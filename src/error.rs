//! The core's error type. Every variant maps to one C status code (`mgecl_status` in
//! `bindings/c/src/error.rs`). The training crate wraps it in its own.

use std::path::PathBuf;

/// What is wrong with a model file; carried by [`Error::InvalidModel`] so that callers (and
/// tests) can tell the failure modes apart without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelProblem {
    /// The bytes are not a safetensors file (no valid header).
    NotSafetensors,
    /// The header promises more bytes than the file holds.
    Truncated,
    /// The header's shapes, dtypes and offsets contradict each other (e.g. a declared shape
    /// larger than its data).
    InconsistentHeader,
    /// A tensor the architecture needs is absent.
    MissingTensor,
    /// A tensor has a shape the architecture cannot use.
    WrongShape,
    /// A tensor has a dtype the model cannot use (float32; int8 and uint8 where a quantised
    /// file has them).
    WrongDtype,
    /// A weight is NaN or infinite, or a quantised file's scale is not positive.
    NonFiniteWeight,
    /// `__metadata__` (or an override) is missing a required key or holds an invalid value.
    BadMetadata,
    /// A PyTorch checkpoint cannot be converted (not a `torch.save` archive, legacy format,
    /// malformed pickle, no encoder found, missing or short tensor data).
    BadCheckpoint,
}

/// Every failure the SDK reports. Messages are complete sentences for end users.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller passed an argument that cannot be used (empty batch, bad shape, bad option...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A model file could not be loaded.
    #[error("invalid model ({problem:?}): {detail}")]
    InvalidModel {
        /// Which kind of problem.
        problem: ModelProblem,
        /// What exactly, naming the tensor or key involved.
        detail: String,
    },
    /// An image could not be decoded or is unusable (corrupt, empty, unsupported format).
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// An image (or another input) exceeds a resource limit.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The requested device is not compiled in or not present.
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),
    /// A task was asked to classify before it was fitted (or after it changed since).
    #[error("the task is not fitted: call fit() after adding or removing examples")]
    NotFitted,
    /// A task cannot be fitted as it stands (fewer than two classes, a class without examples).
    #[error("task not ready: {0}")]
    InvalidTask(String),
    /// A class label is already in the task.
    #[error("duplicate label {0:?}")]
    DuplicateLabel(String),
    /// A class label is not in the task.
    #[error("unknown label {0:?}")]
    UnknownLabel(String),
    /// An example id is not in the task.
    #[error("unknown example id {0}")]
    UnknownExample(u64),
    /// A task file is not one, is truncated, or was modified after it was written.
    #[error("invalid task file: {0}")]
    InvalidTaskFile(String),
    /// A task file was made with a different model.
    #[error("the task was made with model {expected}, not with the loaded model {found}")]
    ModelMismatch {
        /// Fingerprint stored in the task file.
        expected: String,
        /// Fingerprint of the model it was loaded against.
        found: String,
    },
    /// A computation failed inside the SDK or its numeric backend (candle, a serialiser): a
    /// device fault or a bug rather than bad input. [`std::error::Error::source`] gives the
    /// underlying error where there is one.
    #[error("backend error: {0}")]
    Backend(#[source] BackendError),
}

/// What [`Error::Backend`] carries: a message and, where one caused it, the underlying error
/// (kept whole, for `source()` chains, not only as text).
#[derive(Debug)]
pub struct BackendError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::InvalidModel`].
    pub fn model(problem: ModelProblem, detail: impl Into<String>) -> Self {
        Error::InvalidModel {
            problem,
            detail: detail.into(),
        }
    }

    /// Builds an [`Error::Backend`] from a message.
    pub fn backend(message: impl Into<String>) -> Self {
        Error::Backend(BackendError {
            message: message.into(),
            source: None,
        })
    }

    /// Builds an [`Error::Backend`] that keeps the error that caused it; `context` says what
    /// was being done.
    pub fn backend_caused_by(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend(BackendError {
            message: context.into(),
            source: Some(Box::new(source)),
        })
    }

    /// A candle failure (the core's only conversion from candle: no candle type in the API).
    pub(crate) fn candle(e: candle_core::Error) -> Self {
        Error::backend_caused_by("candle", e)
    }

    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
