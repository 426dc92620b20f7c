//! Checkpoints: the model-file metadata of a trained network, a checkpoint's bytes (weights,
//! optimiser momentum, metadata) and reading them back. A checkpoint is a model file the SDK
//! loads unchanged.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;
use safetensors::tensor::TensorView;

use crate::error::{Error, Result};
use crate::net::{EncoderSpec, NamedValues, TrainNet};
use crate::optim::Sgd;
use mgecl::{Architecture, InputSpec};

/// Model-file metadata for a network and its inputs (the keys `Model` reads), plus
/// `training` (free-form JSON describing how it was made).
pub fn model_metadata(
    spec: &EncoderSpec,
    input: &InputSpec,
    training: &serde_json::Value,
) -> BTreeMap<String, String> {
    let mut m = input.to_metadata();
    m.insert("format".into(), "pt".into());
    m.insert("layout".into(), "rfs".into());
    m.insert("arch".into(), spec.arch.name().into());
    m.insert(
        "bn_eps".into(),
        format!("{:e}", mgecl::model::DEFAULT_BN_EPS),
    );
    m.insert("feature_dim".into(), spec.feature_dim().to_string());
    m.insert(
        "channel_order".into(),
        if spec.in_channels == 1 { "L" } else { "RGB" }.into(),
    );
    if spec.arch == Architecture::ResNet12 {
        m.insert("widths".into(), to_json(&spec.widths));
        m.insert(
            "leaky_relu_slope".into(),
            mgecl::model::DEFAULT_LEAKY_RELU_SLOPE.to_string(),
        );
    } else {
        m.insert("width".into(), spec.widths[0].to_string());
        m.insert("activation".into(), "relu".into());
    }
    m.insert("training".into(), portable(training).to_string());
    m
}

/// `value` with every absolute path reduced to `.../` and its last two components
/// (`/home/me/data/omniglot/images_background` -> `.../omniglot/images_background`): a model
/// file names what it was trained on without the folder layout of the training machine.
pub fn portable(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) if Path::new(text).is_absolute() => {
            let tail: Vec<_> = Path::new(text)
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(part) => Some(part.to_string_lossy()),
                    _ => None,
                })
                .collect();
            let keep = tail.len().saturating_sub(2);
            Value::String(format!(".../{}", tail[keep..].join("/")))
        }
        Value::Array(items) => Value::Array(items.iter().map(portable).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), portable(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Compact JSON of a plain serde value.
fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Serialises the network (and optionally the optimiser's momentum buffers as
/// `optimizer.momentum.<name>`) with `metadata` into safetensors bytes.
///
/// # Errors
/// [`Error::Internal`] if a device copy or serialisation fails.
pub fn checkpoint_bytes(
    net: &TrainNet,
    sgd: Option<&Sgd>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let momentum = match sgd {
        Some(sgd) => sgd.buffer_values()?,
        None => Vec::new(),
    };
    serialize_checkpoint(&net.export()?, &momentum, metadata)
}

/// Safetensors bytes of named tensors, momentum buffers (`optimizer.momentum.<name>`) and
/// metadata.
pub(crate) fn serialize_checkpoint(
    tensors: &[NamedValues],
    momentum: &[NamedValues],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let entries: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), v))
        .chain(
            momentum
                .iter()
                .map(|(n, s, v)| (format!("optimizer.momentum.{n}"), s.clone(), v)),
        )
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(safetensors::Dtype::F32, s.clone(), b).map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Internal(format!("checkpoint tensor: {e}")))?;
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Internal(format!("checkpoint: {e}")))
}

/// Restores momentum buffers saved by [`checkpoint_bytes`].
///
/// # Errors
/// [`mgecl::Error::InvalidModel`] for an unreadable checkpoint.
pub fn momentum_from_checkpoint(bytes: &[u8], net: &TrainNet) -> Result<BTreeMap<String, Tensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        Error::model(
            mgecl::ModelProblem::NotSafetensors,
            format!("checkpoint: {e}"),
        )
    })?;
    let mut out = BTreeMap::new();
    for (name, _, _) in net.vars() {
        if let Ok(view) = st.tensor(&format!("optimizer.momentum.{name}")) {
            let v: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            out.insert(
                name.clone(),
                Tensor::from_vec(v, view.shape(), net.device())?,
            );
        }
    }
    Ok(out)
}

/// Reads a checkpoint's `__metadata__`.
///
/// # Errors
/// [`mgecl::Error::InvalidModel`] for an unreadable file.
pub fn checkpoint_metadata(bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        Error::model(
            mgecl::ModelProblem::NotSafetensors,
            format!("checkpoint: {e}"),
        )
    })?;
    Ok(header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect())
}
