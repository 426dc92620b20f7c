//! The encoder: load a safetensors model onto a device, describe it, embed images.
//!
//! The forward pass lives in one place ([`Network::forward_blocks`]) so a faster path can
//! replace it without touching loading or preprocessing.

mod conv4;
mod metadata;
mod resnet12;
mod weights;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use ndarray::Array2;

pub use metadata::{Architecture, Metadata};

use crate::device::{device_name, DeviceChoice};
use crate::error::{Error, ModelProblem, Result};
use crate::hash::fnv1a;
use crate::preprocess::{ImageSource, Preprocessor};
use conv4::Conv4;
use resnet12::ResNet12;
use weights::Weights;

/// Largest model file accepted (the full-width ResNet-12 is ~50 MB).
pub const MAX_MODEL_FILE_BYTES: u64 = 2 << 30;

/// Images per forward pass when embedding a long list: bounds peak memory.
const EMBED_CHUNK: usize = 32;

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Where the encoder runs.
    pub device: DeviceChoice,
    /// Metadata entries that replace (or supply) the file's `__metadata__` values, e.g.
    /// `image_size`, `mean`, `std`, `arch`, `invert`. Needed for files without metadata.
    pub metadata_overrides: BTreeMap<String, String>,
}

/// A description of a loaded model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    /// `resnet12` or `conv4`.
    pub arch: String,
    /// Channel width of each of the four blocks.
    pub widths: Vec<usize>,
    /// Input channels (1 or 3).
    pub in_channels: usize,
    /// Input height and width in pixels.
    pub image_size: (usize, usize),
    /// Length of a feature vector.
    pub feature_dim: usize,
    /// Per-channel normalisation mean.
    pub mean: Vec<f32>,
    /// Per-channel normalisation standard deviation.
    pub std: Vec<f32>,
    /// Whether pixels are inverted (255 - v) before normalisation.
    pub invert: bool,
    /// The device the encoder runs on (`cpu`, `cuda:0`, ...).
    pub device: String,
    /// A stable 64-bit hash (hex) of the weights (names, shapes, values) and the effective
    /// metadata: two models with the same fingerprint produce the same features.
    pub fingerprint: String,
    /// The effective metadata (file values with overrides applied).
    pub metadata: BTreeMap<String, String>,
}

enum Network {
    ResNet12(ResNet12),
    Conv4(Conv4),
}

impl Network {
    fn forward_blocks(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Network::ResNet12(n) => n.forward_blocks(input),
            Network::Conv4(n) => n.forward_blocks(input),
        }
    }
}

/// A loaded encoder. Immutable after loading: share it between threads freely
/// (`Model: Send + Sync`).
pub struct Model {
    network: Network,
    info: ModelInfo,
    preprocessor: Preprocessor,
    device: Device,
}

impl Model {
    /// Loads a model file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read (missing, permissions);
    /// [`Error::LimitExceeded`] for a file over [`MAX_MODEL_FILE_BYTES`]; otherwise as
    /// [`Model::from_bytes`].
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if size > MAX_MODEL_FILE_BYTES {
            return Err(Error::LimitExceeded(format!(
                "{}: model file of {size} bytes exceeds {MAX_MODEL_FILE_BYTES}",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, options)
    }

    /// Loads a model from the bytes of a safetensors file.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] naming the [`ModelProblem`] (not safetensors, truncated,
    /// inconsistent header, missing tensor, wrong shape or dtype, non-finite weight, bad
    /// metadata); [`Error::DeviceUnavailable`] when the device cannot be opened.
    pub fn from_bytes(bytes: &[u8], options: &LoadOptions) -> Result<Self> {
        let weights = Weights::parse(bytes)?;
        let mut raw = weights.metadata().clone();
        raw.extend(options.metadata_overrides.clone());
        let guessed = if weights.contains("layer1.0.conv1.weight") {
            Some(Architecture::ResNet12)
        } else if weights.contains("layer1.0.weight") {
            Some(Architecture::Conv4)
        } else {
            None
        };
        let arch = match raw.get("arch") {
            Some(name) => name.parse()?,
            None => guessed.ok_or_else(|| {
                Error::model(
                    ModelProblem::MissingTensor,
                    "neither layer1.0.conv1.weight (resnet12) nor layer1.0.weight (conv4) is present",
                )
            })?,
        };
        let first_conv = match arch {
            Architecture::ResNet12 => "layer1.0.conv1.weight",
            Architecture::Conv4 => "layer1.0.weight",
        };
        let (_, in_channels) = weights::conv_shape(&weights, first_conv, 3)?;
        let metadata = Metadata::parse(raw, Some(arch), in_channels)?;
        let device = options.device.open()?;
        let (network, widths) = match arch {
            Architecture::ResNet12 => {
                let net = ResNet12::load(
                    &weights,
                    metadata.bn_eps,
                    metadata.leaky_relu_slope,
                    &device,
                )?;
                let widths = net.widths().to_vec();
                debug_assert_eq!(net.in_channels(), in_channels);
                (Network::ResNet12(net), widths)
            }
            Architecture::Conv4 => {
                let net = Conv4::load(&weights, metadata.bn_eps, &device)?;
                debug_assert_eq!(net.in_channels(), in_channels);
                let widths = vec![net.width(); 4];
                (Network::Conv4(net), widths)
            }
        };
        let preprocessor = Preprocessor::new(&metadata, in_channels)?;
        let mut hash = weights.content_hash();
        for (k, v) in &metadata.raw {
            hash = fnv1a(fnv1a(hash, k.as_bytes()), v.as_bytes());
        }
        let info = ModelInfo {
            arch: arch.name().to_string(),
            feature_dim: *widths.last().unwrap_or(&0),
            widths,
            in_channels,
            image_size: metadata.image_size,
            mean: metadata.mean.clone(),
            std: metadata.std.clone(),
            invert: metadata.invert,
            device: device_name(&device),
            fingerprint: format!("{hash:016x}"),
            metadata: metadata.raw.clone(),
        };
        Ok(Model {
            network,
            info,
            preprocessor,
            device,
        })
    }

    /// What the model is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The model's preprocessing (input size, channels, normalisation, decoding limits).
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The candle device the encoder runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Length of a feature vector.
    pub fn feature_dim(&self) -> usize {
        self.info.feature_dim
    }

    /// Embeds images: one row of `feature_dim` f32 values per image, in input order. The
    /// features are the encoder's output (not L2-normalised).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty list; any preprocessing error of
    /// [`Preprocessor::decode`] (naming the image's index); [`Error::Backend`] if the forward
    /// pass fails.
    pub fn embed(&self, images: &[ImageSource<'_>]) -> Result<Array2<f32>> {
        if images.is_empty() {
            return Err(Error::InvalidArgument("no images to embed".into()));
        }
        let mut inputs = Vec::with_capacity(images.len() * self.preprocessor.input_len());
        for (index, image) in images.iter().enumerate() {
            let values = self.preprocessor.preprocess(image).map_err(|e| match e {
                Error::InvalidImage(m) => Error::InvalidImage(format!("image {index}: {m}")),
                Error::LimitExceeded(m) => Error::LimitExceeded(format!("image {index}: {m}")),
                other => other,
            })?;
            inputs.extend_from_slice(&values);
        }
        self.embed_preprocessed(&inputs)
    }

    /// Embeds images already preprocessed: `inputs` holds N images of
    /// [`Preprocessor::input_len`] values each (CHW, normalised), back to back.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `inputs` is empty or not a whole number of images;
    /// [`Error::Backend`] if the forward pass fails.
    pub fn embed_preprocessed(&self, inputs: &[f32]) -> Result<Array2<f32>> {
        let per_image = self.preprocessor.input_len();
        if inputs.is_empty() || inputs.len() % per_image != 0 {
            return Err(Error::InvalidArgument(format!(
                "{} input values are not a whole number of {per_image}-value images",
                inputs.len()
            )));
        }
        let n = inputs.len() / per_image;
        let (c, h, w) = self.preprocessor.input_shape();
        let dim = self.feature_dim();
        let mut out = Vec::with_capacity(n * dim);
        for chunk in inputs.chunks(EMBED_CHUNK * per_image) {
            let batch =
                Tensor::from_slice(chunk, (chunk.len() / per_image, c, h, w), &self.device)?;
            let features = self.embed_tensor(&batch)?;
            out.extend(features.flatten_all()?.to_vec1::<f32>()?);
        }
        Array2::from_shape_vec((n, dim), out)
            .map_err(|e| Error::Backend(format!("feature buffer has the wrong size: {e}")))
    }

    /// Embeds image files (see [`Model::embed`]).
    ///
    /// # Errors
    /// As [`Model::embed`]; [`Error::Io`] for an unreadable file.
    pub fn embed_paths<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Array2<f32>> {
        let sources: Vec<ImageSource<'_>> = paths
            .iter()
            .map(|p| ImageSource::Path(p.as_ref()))
            .collect();
        self.embed(&sources)
    }

    /// Features of an already normalised NCHW f32 batch on the model's device: `(N, D)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a wrong channel count or a batch too small for four
    /// poolings; [`Error::Backend`] if the forward pass fails.
    pub fn embed_tensor(&self, input: &Tensor) -> Result<Tensor> {
        let blocks = self.forward_blocks(input)?;
        let last = blocks
            .last()
            .ok_or_else(|| Error::Backend("network has no blocks".into()))?;
        Ok(last.mean((2, 3))?)
    }

    /// The four block outputs for a normalised NCHW batch (for parity checks and analysis).
    ///
    /// # Errors
    /// As [`Model::embed_tensor`].
    pub fn forward_blocks(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        let dims = input.dims();
        let poolings = if self.info.arch == "conv4" { 3 } else { 4 };
        let min_side = 1usize << poolings;
        if dims.len() != 4
            || dims[1] != self.info.in_channels
            || dims[2] < min_side
            || dims[3] < min_side
        {
            return Err(Error::InvalidArgument(format!(
                "expected an (N, {}, H, W) input with H, W >= {min_side}, got {dims:?}",
                self.info.in_channels
            )));
        }
        self.network.forward_blocks(input)
    }
}
