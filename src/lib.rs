//! # mgecl — few-shot image recognition on the device
//!
//! Recognise new image classes from one to five examples each. An encoder trained with
//! MGECL (multi-granularity episodic contrastive learning, Pattern Recognition 2022) maps
//! images to feature vectors; a per-task classifier fitted on a few labelled examples
//! classifies new images.
//!
//! ```no_run
//! use mgecl::{LoadOptions, Model};
//! let model = Model::load("models/omniglot_conv4.safetensors", &LoadOptions::default())?;
//! let features = model.embed_paths(&["a.png", "b.png"])?; // (2, feature_dim)
//! # Ok::<(), mgecl::Error>(())
//! ```

pub mod atomic;
pub mod capi;
pub mod classifier;
pub mod device;
pub mod error;
mod hash;
pub mod model;
pub mod preprocess;
pub mod task;
pub mod train;

pub use device::DeviceChoice;
pub use error::{Error, ModelProblem, Result};
pub use model::{
    Architecture, Engine, LoadOptions, Metadata, Model, ModelInfo, MAX_MODEL_FILE_BYTES,
};
pub use preprocess::{
    ImageLimits, ImageSource, ModelPixels, PixelBuffer, PixelFormat, Preprocessor,
};
pub use task::{ClassSummary, ClassifierKind, FitReport, Prediction, Scores, Task, TaskConfig};
