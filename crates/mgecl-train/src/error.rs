//! Training's error type: the core's errors (files, images, model files, devices) wrapped
//! whole, candle's kept with their source, and training's own failures named.

use std::path::PathBuf;

use mgecl::ModelProblem;

/// Every failure training reports. Messages are complete sentences for end users.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A failure of the core SDK: a file, an image, a model file, a device.
    #[error(transparent)]
    Core(#[from] mgecl::Error),
    /// A tensor operation failed in candle (the reference and GPU paths).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Settings, data or an episodes file that training cannot use.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Training itself failed: a loss that is not finite, a loader thread that died.
    #[error("training failed: {0}")]
    Failed(String),
    /// An internal invariant broke (a tensor missing from the network, a gradient of the
    /// wrong size): a bug, reported rather than panicking.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A core [`mgecl::Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Core(mgecl::Error::io(path, source))
    }

    /// A core [`mgecl::Error::InvalidModel`] (a checkpoint or an initial model that does not
    /// fit the network).
    pub fn model(problem: ModelProblem, detail: impl Into<String>) -> Self {
        Error::Core(mgecl::Error::model(problem, detail))
    }
}
