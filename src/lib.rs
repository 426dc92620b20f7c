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

mod atomic;
pub mod classifier;
pub mod convert;
pub mod device;
pub mod error;
mod hash;
pub mod model;
pub mod preprocess;
pub mod task;

pub use device::DeviceChoice;
pub use error::{Error, ModelProblem, Result};
pub use model::{
    Architecture, Engine, EngineKind, LoadOptions, Metadata, Model, ModelInfo, MAX_MODEL_FILE_BYTES,
};
pub use preprocess::{
    ImageLimits, ImageSource, InputSpec, ModelPixels, PixelBuffer, PixelFormat, Preprocessor,
};
pub use task::{
    Augmentation, ClassSummary, ClassifierKind, FitReport, LabelOptions, LabelRow, Labelling,
    Prediction, Proposal, Scores, Suggestion, Task, TaskConfig,
};

/// For the workspace's other crates (training, the command-line tool, the C ABI): helpers
/// they share with the core and handles that carry candle types. Not part of the API: no
/// semver promise, hidden from the docs.
#[doc(hidden)]
pub mod __private {
    use candle_core::{Device, Tensor};

    pub use crate::atomic::{read_file_limited, write_file};
    pub use crate::hash::{fnv1a, FNV_OFFSET};
    pub use crate::preprocess::decode_upright;
    use crate::{DeviceChoice, Model, Result};

    /// Opens the candle device of a choice.
    pub fn open_device(choice: DeviceChoice) -> Result<Device> {
        choice.open()
    }

    /// Human-readable name of an opened device (`cpu`, `cuda:0`, `metal:0`).
    pub fn device_name(device: &Device) -> String {
        crate::device::device_name(device)
    }

    /// The candle device a model runs on.
    pub fn model_device(model: &Model) -> &Device {
        model.device()
    }

    /// Features `(N, D)` of a normalised NCHW batch on the model's device.
    pub fn embed_tensor(model: &Model, input: &Tensor) -> Result<Tensor> {
        model.embed_tensor(input)
    }

    /// The four block outputs of a normalised NCHW batch (parity checks).
    pub fn forward_blocks(model: &Model, input: &Tensor) -> Result<Vec<Tensor>> {
        model.forward_blocks(input)
    }
}
