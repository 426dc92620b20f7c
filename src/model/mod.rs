//! The encoder: load a safetensors model onto a device, describe it, embed images.
//!
//! Two engines run the forward pass (see [`Engine`]): candle's operations (`candle_net`; any
//! device; the reference) and, on the CPU, the fast path of `cpu_fast` (BatchNorm folded,
//! im2col + gemm over NHWC, fused epilogues). Both are built from the same checked parameters
//! (`params::EncoderParams`, read by walking the layout), so loading errors do not depend on
//! the engine; a quantised file runs on the int8 engine (`cpu_int8`).

mod candle_net;
pub(crate) mod cpu_fast;
pub(crate) mod cpu_int8;
mod folded;
pub(crate) mod layout;
mod metadata;
mod params;
mod parsed;
mod quantized;
pub(crate) mod weights;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use ndarray::{Array2, ArrayD};

pub(crate) use layout::EncoderSpec;
pub use layout::{Activation, Architecture, DEFAULT_BN_EPS, DEFAULT_LEAKY_RELU_SLOPE};
pub use metadata::Metadata;

use crate::classifier::calibration::{self, Calibration};
use crate::config::{TaskConfig, TASK_DEFAULTS_KEY};
use crate::device::{device_name, DeviceChoice};
use crate::error::{Error, ModelProblem, Result};
use crate::preprocess::{ImageLimits, ImageSource, InputSpec, Preprocessor};
use candle_net::CandleNet;
use cpu_fast::{FastNet, FastOutput};
use cpu_int8::QuantNet;
use folded::FoldedNet;
use params::EncoderParams;
use parsed::{fingerprint, ParsedFile, PassMemory};
pub use quantized::{quantize_model, QuantizationInfo, QUANTIZATION_KEY};

/// Largest model file accepted (the full-width ResNet-12 is ~50 MB).
pub const MAX_MODEL_FILE_BYTES: u64 = 2 << 30;

/// Most images per forward pass when embedding a long list (fewer when
/// [`LoadOptions::max_embed_bytes`] requires).
const EMBED_CHUNK: usize = 32;

/// Which implementation runs the encoder's forward pass.
///
/// Both give the same features to within float rounding (the parity tests hold each to the
/// PyTorch reference within 1e-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Engine {
    /// The fastest engine for the device: on the CPU, mgecl's own inference kernels
    /// (BatchNorm folded into the convolutions, im2col + matrix multiply over NHWC, both
    /// cores); on CUDA and Metal, candle.
    #[default]
    Auto,
    /// candle's operations on every device (the reference implementation; slower on CPU).
    Candle,
}

impl Engine {
    /// Every engine choice.
    pub const ALL: [Engine; 2] = [Engine::Auto, Engine::Candle];

    /// The name the CLI's `--engine` takes (`auto`, `candle`).
    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Candle => "candle",
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = Error;

    /// Parses `auto` or `candle`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for any other name.
    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Engine::Auto),
            "candle" => Ok(Engine::Candle),
            other => Err(Error::InvalidArgument(format!(
                "unknown engine {other:?} (expected auto or candle)"
            ))),
        }
    }
}

/// Default of [`LoadOptions::max_embed_bytes`]: 1 GiB, some 300 times what the shipped
/// models need for one image.
pub const DEFAULT_MAX_EMBED_BYTES: u64 = 1 << 30;

/// How to load a model.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Where the encoder runs.
    pub device: DeviceChoice,
    /// Which implementation runs the forward pass ([`Engine::Auto`] unless told).
    pub engine: Engine,
    /// Metadata entries that replace (or supply) the file's `__metadata__` values, e.g.
    /// `image_size`, `mean`, `std`, `arch`, `invert`. Needed for files without metadata.
    pub metadata_overrides: BTreeMap<String, String>,
    /// Largest image the model's preprocessing decodes (default: 16384 px a side, 512 MiB
    /// decoded); raise it for very large photos, lower it for untrusted uploads.
    pub image_limits: ImageLimits,
    /// Most memory a forward pass's activations may take, computed from the model's input
    /// size and widths (the architecture's layout) before anything is allocated.
    /// Embedding cuts batches to fit; a model whose single image needs more (an `image_size`
    /// of 4096 in a file's metadata, say) is refused at load. On top of it each thread that
    /// runs convolutions keeps at most 20 MiB of scratch, which depends on the machine, not on
    /// the model, and is left out so that a model loads on every machine alike. Default
    /// [`DEFAULT_MAX_EMBED_BYTES`].
    pub max_embed_bytes: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: DeviceChoice::default(),
            engine: Engine::default(),
            metadata_overrides: BTreeMap::new(),
            image_limits: ImageLimits::default(),
            max_embed_bytes: DEFAULT_MAX_EMBED_BYTES,
        }
    }
}

impl LoadOptions {
    /// These options on `device`.
    pub fn with_device(mut self, device: DeviceChoice) -> Self {
        self.device = device;
        self
    }

    /// These options with `engine`.
    pub fn with_engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// These options with the metadata entry `key` set to `value` (see
    /// [`LoadOptions::metadata_overrides`]).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata_overrides.insert(key.into(), value.into());
        self
    }

    /// These options with another bound on a forward pass's memory (see
    /// [`LoadOptions::max_embed_bytes`]).
    pub fn with_max_embed_bytes(mut self, bytes: u64) -> Self {
        self.max_embed_bytes = bytes;
        self
    }

    /// These options with other image decoding limits.
    pub fn with_image_limits(mut self, limits: ImageLimits) -> Self {
        self.image_limits = limits;
        self
    }
}

/// The implementation running a loaded model's forward pass (in JSON: `cpu-fast`, `candle`,
/// `cpu-int8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum EngineKind {
    /// mgecl's own CPU kernels (`src/model/cpu_fast.rs`).
    #[serde(rename = "cpu-fast")]
    CpuFast,
    /// candle's operations.
    #[serde(rename = "candle")]
    Candle,
    /// mgecl's int8 CPU kernels, for quantised models (`src/model/cpu_int8.rs`).
    #[serde(rename = "cpu-int8")]
    CpuInt8,
}

impl EngineKind {
    /// `cpu-fast`, `candle` or `cpu-int8`.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::CpuFast => "cpu-fast",
            EngineKind::Candle => "candle",
            EngineKind::CpuInt8 => "cpu-int8",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A description of a loaded model. Its JSON (`mgecl info --json`, `mgecl_model_info_json`)
/// has the input's fields at the top level: `arch`, `widths`, `image_size`, `in_channels`,
/// `mean`, `std`, `invert`, `feature_dim`, `device`, `engine`, `fingerprint`, `metadata`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ModelInfo {
    /// The architecture.
    pub arch: Architecture,
    /// Channel width of each of the four blocks.
    pub widths: Vec<usize>,
    /// What the model takes as input.
    #[serde(flatten)]
    pub input: InputSpec,
    /// Length of a feature vector.
    pub feature_dim: usize,
    /// The device the encoder runs on (`cpu`, `cuda:0`, ...).
    pub device: String,
    /// The implementation running the forward pass.
    pub engine: EngineKind,
    /// A stable 64-bit hash (hex) of the weights (names, shapes, values) and the effective
    /// metadata: two models with the same fingerprint produce the same features.
    pub fingerprint: String,
    /// The effective metadata (file values with overrides applied).
    pub metadata: BTreeMap<String, String>,
}

/// The engine running the encoder (what it runs is the layout's business).
enum Network {
    Candle(CandleNet),
    Cpu(CpuNet),
}

/// mgecl's own CPU kernels: f32 (BatchNorm folded) or int8 (a quantised file).
enum CpuNet {
    Fast(FastNet),
    Int8(QuantNet),
}

impl CpuNet {
    /// The forward pass over an NCHW batch `(n, c, h, w)`; `keep` keeps every block's output.
    fn forward(&self, nchw: &[f32], (n, h, w): (usize, usize, usize), keep: bool) -> FastOutput {
        match self {
            CpuNet::Fast(net) => net.forward(nchw, n, h, w, keep),
            CpuNet::Int8(net) => net.forward(nchw, n, h, w, keep),
        }
    }
}

/// An NCHW f32 tensor's values, on the CPU.
fn cpu_values(input: &Tensor) -> candle_core::Result<Vec<f32>> {
    input
        .to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

/// The networks speak candle's errors; [`Model`] converts them once, at its API.
impl Network {
    fn forward_blocks(&self, input: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Network::Candle(n) => n.forward_blocks(input),
            Network::Cpu(net) => {
                let (b, _, h, w) = input.dims4()?;
                let out = net.forward(&cpu_values(input)?, (b, h, w), true);
                out.blocks
                    .into_iter()
                    .map(|(values, shape)| Tensor::from_vec(values, &shape, input.device()))
                    .collect()
            }
        }
    }

    /// Features `(N, D)` of a checked NCHW batch.
    fn embed_tensor(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Network::Cpu(net) => {
                let (b, _, h, w) = input.dims4()?;
                let features = net.forward(&cpu_values(input)?, (b, h, w), false).features;
                let dim = features.len() / b.max(1);
                Tensor::from_vec(features, (b, dim), input.device())
            }
            Network::Candle(_) => {
                let blocks = self.forward_blocks(input)?;
                let last = blocks
                    .last()
                    .ok_or_else(|| candle_core::Error::Msg("network has no blocks".into()))?;
                last.mean((2, 3))
            }
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
    calibration: Option<Calibration>,
    task_defaults: TaskConfig,
    feature_power: Option<f32>,
    feature_mean: Option<Vec<f32>>,
    /// The smallest input side the encoder takes (`EncoderSpec::min_input_side`).
    min_input_side: usize,
    /// What a forward pass holds, within [`LoadOptions::max_embed_bytes`].
    pass: PassMemory,
}

/// Frees the buffers the CPU engine keeps between forward passes for reuse: the activation
/// pool all threads share, and the convolution scratch of the calling thread and of rayon's
/// global pool, whose threads run the convolutions; then hands the freed memory back to the
/// system. The next pass allocates again. The same happens by itself after
/// [`set_buffer_idle_release`]'s time without a pass (default 30 s).
pub fn release_buffers() {
    mgecl_kernels::scratch::release_all();
}

/// Releases the kept buffers ([`release_buffers`]) once no forward pass has used them for
/// `after` (default 30 s); `None` never does. Process-wide.
pub fn set_buffer_idle_release(after: Option<std::time::Duration>) {
    mgecl_kernels::scratch::set_idle_release(after);
}

/// Bounds the bytes of activation buffers kept between forward passes, for all threads
/// together (default 256 MiB; 0 keeps none, so every pass allocates). Process-wide.
pub fn set_buffer_pool_limit(bytes: usize) {
    mgecl_kernels::scratch::set_pool_limit(bytes);
}

/// Bytes of activation buffers kept now.
pub fn pooled_buffer_bytes() -> usize {
    mgecl_kernels::scratch::pooled_bytes()
}

impl Model {
    /// Loads a model file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read (missing, permissions);
    /// [`Error::LimitExceeded`] for a file over [`MAX_MODEL_FILE_BYTES`]; otherwise as
    /// [`Model::from_bytes`].
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let bytes =
            crate::files::read_file_limited(path.as_ref(), MAX_MODEL_FILE_BYTES, "model file")?;
        Self::from_bytes(&bytes, options)
    }

    /// Loads a model from the bytes of a safetensors file.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] naming the [`ModelProblem`] (not
    /// safetensors, truncated, inconsistent header, missing tensor, wrong shape or dtype,
    /// non-finite weight or non-positive scale, bad metadata); [`Error::LimitExceeded`] when one
    /// image's forward pass would need more than [`LoadOptions::max_embed_bytes`];
    /// [`Error::InvalidArgument`] for a quantised model asked to run on candle or a GPU;
    /// [`Error::DeviceUnavailable`] when the device cannot be opened.
    pub fn from_bytes(bytes: &[u8], options: &LoadOptions) -> Result<Self> {
        let ParsedFile {
            weights,
            arch,
            spec,
            metadata,
            pass,
        } = ParsedFile::parse(bytes, options)?;
        let quantized = metadata
            .raw
            .get(QUANTIZATION_KEY)
            .map(|text| QuantizationInfo::from_metadata(text))
            .transpose()?;
        // A quantised model runs on the int8 CPU kernels only; `auto` means the CPU for it.
        let device_choice = match options.device {
            DeviceChoice::Auto if quantized.is_some() => DeviceChoice::Cpu,
            choice => choice,
        };
        if quantized.is_some()
            && (options.engine != Engine::Auto || device_choice != DeviceChoice::Cpu)
        {
            return Err(Error::InvalidArgument(format!(
                "a quantised (int8) model runs on the CPU's int8 engine only, not on {:?} with \
                 engine {:?}",
                options.device, options.engine
            )));
        }
        let device = device_choice.open()?;
        let fast = options.engine == Engine::Auto && device.is_cpu();
        let widths = spec.widths.clone();
        let network = if quantized.is_some() {
            Network::Cpu(CpuNet::Int8(quantized::read_quant_net(
                &weights,
                &spec,
                metadata.leaky_relu_slope,
            )?))
        } else {
            let params =
                EncoderParams::read(&weights, &spec, metadata.bn_eps, metadata.leaky_relu_slope)?;
            match fast {
                true => Network::Cpu(CpuNet::Fast(FastNet::new(FoldedNet::from_params(params)))),
                false => Network::Candle(CandleNet::new(&params, &device).map_err(Error::candle)?),
            }
        };
        let preprocessor = Preprocessor::new(&metadata.input)?.with_limits(options.image_limits);
        let calibration = metadata
            .raw
            .get(calibration::METADATA_KEY)
            .map(|text| Calibration::from_metadata(text))
            .transpose()?;
        let task_defaults = match metadata.raw.get(TASK_DEFAULTS_KEY) {
            Some(text) => TaskConfig::from_model_defaults(text)?,
            None => TaskConfig::default(),
        };
        let feature_dim = *widths.last().unwrap_or(&0);
        if let Some(centre) = &metadata.feature_mean {
            if centre.len() != feature_dim {
                return Err(Error::model(
                    ModelProblem::BadMetadata,
                    format!(
                        "metadata \"feature_mean\" has {} values but the model's features have {feature_dim}",
                        centre.len()
                    ),
                ));
            }
        }
        let info = ModelInfo {
            arch,
            feature_dim,
            widths,
            input: metadata.input.clone(),
            device: device_name(&device),
            engine: match &network {
                Network::Cpu(CpuNet::Int8(_)) => EngineKind::CpuInt8,
                Network::Cpu(CpuNet::Fast(_)) => EngineKind::CpuFast,
                Network::Candle(_) => EngineKind::Candle,
            },
            fingerprint: fingerprint(&weights, &metadata),
            metadata: metadata.raw.clone(),
        };
        Ok(Model {
            feature_power: metadata.feature_power.map(|p| p as f32),
            feature_mean: metadata.feature_mean.clone(),
            min_input_side: spec.min_input_side(),
            network,
            info,
            preprocessor,
            device,
            calibration,
            task_defaults,
            pass,
        })
    }

    /// Most images one forward pass takes (embedding cuts longer lists into passes of this
    /// many): as many as [`LoadOptions::max_embed_bytes`] holds, at most 32.
    pub fn images_per_pass(&self) -> usize {
        self.pass.images
    }

    /// What a forward pass of `images` images counts against
    /// [`LoadOptions::max_embed_bytes`]: their activations.
    pub fn pass_bytes(&self, images: usize) -> u64 {
        (images as u64).saturating_mul(self.pass.per_image)
    }

    /// The model's confidence calibration (metadata key `calibration`), if it has one: what
    /// makes [`Task`](crate::Task) probabilities calibrated and its known-probability an
    /// open-set score. `mgecl calibrate` adds one to a model trained elsewhere.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// The task settings this model recommends: [`TaskConfig::default`] with the model's
    /// `task_defaults` metadata ([`TASK_DEFAULTS_KEY`]) applied, e.g. the test-time
    /// augmentation it was measured best with. What [`Task::new`](crate::Task::new) should
    /// start from; the C API's `NULL` options, Python's `Task(model)` and the command-line
    /// tool use it.
    pub fn task_defaults(&self) -> &TaskConfig {
        &self.task_defaults
    }

    /// What the model is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The model's preprocessing (input size, channels, normalisation, decoding limits).
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The centre subtracted from every feature vector ([`Metadata::feature_mean`]), if the
    /// model has one.
    pub fn feature_mean(&self) -> Option<&[f32]> {
        self.feature_mean.as_deref()
    }

    /// Length of a feature vector.
    pub fn feature_dim(&self) -> usize {
        self.info.feature_dim
    }

    /// Embeds images: one row of `feature_dim` f32 values per image, in input order. The
    /// features are the encoder's output (not L2-normalised), raised elementwise to the
    /// model's `feature_power` when its metadata sets one ([`Metadata::feature_power`]), less
    /// its `feature_mean` when it sets one ([`Metadata::feature_mean`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty list; any preprocessing error of
    /// [`Preprocessor::decode`] (naming the image's index); [`Error::Backend`] if the forward
    /// pass fails.
    pub fn embed(&self, images: &[ImageSource<'_>]) -> Result<Array2<f32>> {
        if images.is_empty() {
            return Err(Error::InvalidArgument("no images to embed".into()));
        }
        // One pass's images preprocessed at a time, so the inputs too stay within the bound.
        let mut features = Vec::with_capacity(images.len() * self.feature_dim());
        let mut inputs = Vec::with_capacity(self.pass.images * self.preprocessor.input_len());
        for (first, chunk) in (0..)
            .step_by(self.pass.images)
            .zip(images.chunks(self.pass.images))
        {
            inputs.clear();
            for (i, image) in chunk.iter().enumerate() {
                inputs.extend(self.preprocess_one(first + i, image)?);
            }
            self.embed_into(&inputs, &mut features)?;
        }
        self.feature_rows(images.len(), features)
    }

    /// Preprocesses `images` in order, handing each one's values to `take`; stops at the
    /// first error, which names the file's path (or, for images in memory, the index).
    pub(crate) fn preprocess_each(
        &self,
        images: &[ImageSource<'_>],
        mut take: impl FnMut(Vec<f32>),
    ) -> Result<()> {
        if images.is_empty() {
            return Err(Error::InvalidArgument("no images to embed".into()));
        }
        for (index, image) in images.iter().enumerate() {
            take(self.preprocess_one(index, image)?);
        }
        Ok(())
    }

    /// Preprocesses image `index` of a batch; errors name its path or, for images in memory,
    /// its index (the preprocessor names paths itself).
    pub(crate) fn preprocess_one(&self, index: usize, image: &ImageSource<'_>) -> Result<Vec<f32>> {
        let named = |m: String| match image {
            ImageSource::Path(_) => m,
            _ => format!("image {index}: {m}"),
        };
        self.preprocessor.preprocess(image).map_err(|e| match e {
            Error::InvalidImage(m) => Error::InvalidImage(named(m)),
            Error::LimitExceeded(m) => Error::LimitExceeded(named(m)),
            other => other,
        })
    }

    /// Embeds images already preprocessed: `inputs` holds N images of
    /// [`Preprocessor::input_len`] values each (CHW, normalised), back to back.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `inputs` is empty or not a whole number of images;
    /// [`Error::Backend`] if the forward pass fails.
    pub fn embed_preprocessed(&self, inputs: &[f32]) -> Result<Array2<f32>> {
        let n = self.whole_images(inputs)?;
        let mut out = Vec::with_capacity(n * self.feature_dim());
        self.embed_into(inputs, &mut out)?;
        self.feature_rows(n, out)
    }

    /// Appends the features of whole preprocessed images to `out`, in passes of at most
    /// [`Model::images_per_pass`] images.
    fn embed_into(&self, inputs: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let per_image = self.preprocessor.input_len();
        let (c, h, w) = self.preprocessor.input_shape();
        let first = out.len();
        for chunk in inputs.chunks(self.pass.images * per_image) {
            let batch_len = chunk.len() / per_image;
            if let Network::Cpu(net) = &self.network {
                self.check_dims(&[batch_len, c, h, w])?;
                let features = net.forward(chunk, (batch_len, h, w), false);
                out.extend(features.features);
                continue;
            }
            let batch = Tensor::from_slice(chunk, (batch_len, c, h, w), &self.device)
                .map_err(Error::candle)?;
            self.check_input(&batch)?;
            let features = self.network.embed_tensor(&batch);
            out.extend(
                features
                    .and_then(|f| f.flatten_all()?.to_vec1::<f32>())
                    .map_err(Error::candle)?,
            );
        }
        if let Some(p) = self.feature_power {
            for v in &mut out[first..] {
                *v = v.signum() * v.abs().powf(p);
            }
        }
        if let Some(centre) = &self.feature_mean {
            for row in out[first..].chunks_exact_mut(centre.len()) {
                for (v, m) in row.iter_mut().zip(centre) {
                    *v -= m;
                }
            }
        }
        Ok(())
    }

    /// `n` rows of features as an array.
    fn feature_rows(&self, n: usize, values: Vec<f32>) -> Result<Array2<f32>> {
        Array2::from_shape_vec((n, self.feature_dim()), values)
            .map_err(|e| Error::backend_caused_by("feature buffer has the wrong size", e))
    }

    /// How many preprocessed images `inputs` holds.
    fn whole_images(&self, inputs: &[f32]) -> Result<usize> {
        let per_image = self.preprocessor.input_len();
        if inputs.is_empty() || !inputs.len().is_multiple_of(per_image) {
            return Err(Error::InvalidArgument(format!(
                "{} input values are not a whole number of {per_image}-value images",
                inputs.len()
            )));
        }
        Ok(inputs.len() / per_image)
    }

    /// Embeds image files (see [`Model::embed`]).
    ///
    /// # Errors
    /// As [`Model::embed`]; [`Error::Io`] for an unreadable file.
    pub fn embed_paths<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Array2<f32>> {
        self.embed(&ImageSource::paths(paths))
    }

    /// The block outputs (four for both architectures), NCHW, of images already preprocessed
    /// as for [`Model::embed_preprocessed`]: for checking a model (a converted one, say)
    /// against the network it came from, block by block.
    ///
    /// # Errors
    /// As [`Model::embed_preprocessed`].
    pub fn block_outputs(&self, inputs: &[f32]) -> Result<Vec<ArrayD<f32>>> {
        let n = self.whole_images(inputs)?;
        let (c, h, w) = self.preprocessor.input_shape();
        let batch =
            Tensor::from_slice(inputs, (n, c, h, w), &self.device).map_err(Error::candle)?;
        self.check_input(&batch)?;
        let blocks = self.network.forward_blocks(&batch).map_err(Error::candle)?;
        blocks
            .iter()
            .map(|block| {
                let values = block
                    .flatten_all()
                    .and_then(|b| b.to_vec1::<f32>())
                    .map_err(Error::candle)?;
                ArrayD::from_shape_vec(block.dims(), values)
                    .map_err(|e| Error::backend_caused_by("block buffer has the wrong size", e))
            })
            .collect()
    }

    /// Checks an input batch's shape against the model.
    fn check_input(&self, input: &Tensor) -> Result<()> {
        self.check_dims(input.dims())
    }

    /// Checks an NCHW input shape against the model.
    fn check_dims(&self, dims: &[usize]) -> Result<()> {
        let min_side = self.min_input_side;
        if dims.len() != 4
            || dims[1] != self.info.input.in_channels
            || dims[2] < min_side
            || dims[3] < min_side
        {
            return Err(Error::InvalidArgument(format!(
                "expected an (N, {}, H, W) input with H, W >= {min_side}, got {dims:?}",
                self.info.input.in_channels
            )));
        }
        Ok(())
    }
}
