//! # mgecl — few-shot image recognition on the device
//!
//! Recognise new image classes from one to five examples each. An encoder trained with
//! MGECL (multi-granularity episodic contrastive learning, Pattern Recognition 2022) maps
//! images to feature vectors; a per-task classifier fitted on a few labelled examples
//! classifies new images.
//!
//! ```no_run
//! use mgecl::{LoadOptions, Model};
//! let model = Model::load("models/omniglot-conv4.safetensors", &LoadOptions::default())?;
//! let features = model.embed_paths(&["a.png", "b.png"])?; // (2, feature_dim)
//! # Ok::<(), mgecl::Error>(())
//! ```

mod augment;
#[cfg(feature = "candle-interop")]
pub mod candle_interop;
pub mod classifier;
mod config;
pub mod convert;
pub mod device;
pub mod error;
mod files;
mod hash;
#[cfg(feature = "internals")]
pub mod internals;
pub mod model;
pub mod preprocess;
pub mod task;

pub use device::DeviceChoice;
pub use error::{Error, ModelProblem, Result};
pub use model::{
    pooled_buffer_bytes, quantize_model, release_buffers, set_buffer_idle_release,
    set_buffer_pool_limit, Architecture, Engine, EngineKind, LoadOptions, Metadata, Model,
    ModelInfo, QuantizationInfo, DEFAULT_MAX_EMBED_BYTES, MAX_MODEL_FILE_BYTES, QUANTIZATION_KEY,
};
pub use preprocess::{
    ImageLimits, ImageSource, InputSpec, PixelBuffer, PixelFormat, Pixels, Preprocessor,
};
pub use task::{
    Augmentation, ClassSummary, ClassifierKind, FitReport, LabelOptions, LabelRow, Labelling,
    Prediction, Proposal, Scores, Suggestion, SupportClass, Task, TaskConfig,
};
