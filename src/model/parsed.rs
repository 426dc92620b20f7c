//! Reading a model file's header before any weight is copied: the checked weights, the
//! architecture and its shape, the metadata (with the caller's overrides), the memory a
//! forward pass needs against [`LoadOptions::max_embed_bytes`], and the fingerprint.

use super::layout::{Architecture, EncoderSpec};
use super::metadata::Metadata;
use super::weights::WeightFile;
use super::{LoadOptions, EMBED_CHUNK};
use crate::classifier::calibration;
use crate::config::TASK_DEFAULTS_KEY;
use crate::error::{Error, ModelProblem, Result};
use crate::hash::fnv1a;

/// A model file's header read and checked: its weights, architecture, shape and metadata
/// (overrides applied), and the memory a pass needs, before any weight is copied.
pub(super) struct ParsedFile<'b> {
    pub(super) weights: WeightFile<'b>,
    pub(super) arch: Architecture,
    pub(super) spec: EncoderSpec,
    pub(super) metadata: Metadata,
    pub(super) pass: PassMemory,
}

/// The model's fingerprint: a hash of the weights and of the metadata that changes features.
pub(super) fn fingerprint(weights: &WeightFile<'_>, metadata: &Metadata) -> String {
    let mut hash = weights.content_hash();
    // Calibration changes probabilities and the task defaults how tasks are set up, not
    // features: tasks stay valid across them.
    for (k, v) in metadata
        .raw
        .iter()
        .filter(|(k, _)| *k != calibration::METADATA_KEY && *k != TASK_DEFAULTS_KEY)
    {
        hash = fnv1a(fnv1a(hash, k.as_bytes()), v.as_bytes());
    }
    format!("{hash:016x}")
}

impl<'b> ParsedFile<'b> {
    /// # Errors
    /// As [`Model::from_bytes`], less the device's.
    pub(super) fn parse(bytes: &'b [u8], options: &LoadOptions) -> Result<Self> {
        let weights = WeightFile::parse(bytes)?;
        let mut raw = weights.metadata().clone();
        raw.extend(options.metadata_overrides.clone());
        let arch = match raw.get("arch") {
            Some(name) => name.parse()?,
            None => Architecture::detect(|name| weights.contains(name)).ok_or_else(|| {
                Error::model(
                    ModelProblem::MissingTensor,
                    "neither layer1.0.conv1.weight (resnet12) nor layer1.0.weight (conv4) is present",
                )
            })?,
        };
        let spec = weights.encoder_spec(arch)?;
        let in_channels = spec.in_channels;
        let metadata = Metadata::parse(raw, Some(arch), in_channels)?;
        // Before any weight is copied or device opened: a hostile image_size stops here.
        let pass = PassMemory::within(&spec, metadata.input.image_size, options.max_embed_bytes)?;
        Ok(ParsedFile {
            weights,
            arch,
            spec,
            metadata,
            pass,
        })
    }
}

/// What a forward pass holds, against [`LoadOptions::max_embed_bytes`].
#[derive(Debug, Clone, Copy)]
pub(super) struct PassMemory {
    /// Bytes of one image's activations.
    pub(super) per_image: u64,
    /// Most images per pass within the bound, at most [`EMBED_CHUNK`].
    pub(super) images: usize,
}

impl PassMemory {
    /// The memory of `spec`'s passes at `image_size` within `limit`.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] when not even one image fits, naming the need and the limit.
    fn within(spec: &EncoderSpec, image_size: (usize, usize), limit: u64) -> Result<Self> {
        let per_image = spec.forward_values(image_size).saturating_mul(4);
        if per_image > limit {
            let mib = |b: u64| b.div_ceil(1 << 20);
            return Err(Error::LimitExceeded(format!(
                "embedding one {}x{} image with this {} (widths {:?}) needs {} MiB of \
                 activations, over the limit of {} MiB (LoadOptions::max_embed_bytes)",
                image_size.0,
                image_size.1,
                spec.arch,
                spec.widths,
                mib(per_image),
                mib(limit),
            )));
        }
        let images = ((limit / per_image.max(1)).min(EMBED_CHUNK as u64) as usize).max(1);
        Ok(PassMemory { per_image, images })
    }
}
