//! PyTorch checkpoints to mgecl model files.
//!
//! Reads what `torch.save` writes (the zip format of PyTorch >= 1.6): a bare state dict, or a
//! dict that holds one (`{'opt': Namespace, 'model': state_dict}` as RFS and MGECL save), with
//! `module.` (DataParallel) or other prefixes, classifier heads and `num_batches_tracked`
//! counters beside the encoder. The pickle is parsed by candle's reader
//! (`candle_core::pickle`), run one opcode at a time under the bounds a hostile file needs (see
//! `archive`); tensor data is read from the archive with every size checked before
//! anything is allocated. The encoder's tensors are written in this crate's layout (RFS key
//! names, float32) with the metadata the caller gives, and the result is loaded as a [`Model`]
//! before it is returned, so a conversion that succeeds yields a file that loads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use candle_core::pickle::Object;

mod archive;

use crate::error::{Error, ModelProblem, Result};
use crate::model::{
    Architecture, EncoderSpec, LoadOptions, Model, ModelInfo, MAX_MODEL_FILE_BYTES,
};
use archive::{bad, tensor_ref, Archive, TensorRef};

/// Longest dotted key path searched for a state dict.
const MAX_SEARCH_DEPTH: usize = 8;
/// Metadata a converted model must carry (the weights give the rest).
const REQUIRED_METADATA: [&str; 3] = ["image_size", "mean", "std"];

/// What to write beside the weights.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConvertOptions {
    /// `__metadata__` of the output: at least `image_size`, `mean` and `std` (model file
    /// format of docs/models.md; `arch` is inferred when absent).
    pub metadata: BTreeMap<String, String>,
    /// Dotted key path of the state dict inside the checkpoint (`model`, `state_dict`,
    /// `checkpoint.model`), for checkpoints holding several encoders. Found by itself when
    /// `None`.
    pub state_dict_key: Option<String>,
}

impl ConvertOptions {
    /// Options writing `metadata`, finding the state dict by itself.
    pub fn new(metadata: BTreeMap<String, String>) -> Self {
        ConvertOptions {
            metadata,
            state_dict_key: None,
        }
    }

    /// These options taking the state dict at `key` (see
    /// [`ConvertOptions::state_dict_key`]).
    pub fn with_state_dict_key(mut self, key: impl Into<String>) -> Self {
        self.state_dict_key = Some(key.into());
        self
    }
}

/// A finished conversion.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Conversion {
    /// The safetensors file.
    pub bytes: Vec<u8>,
    /// The model as it loads from `bytes`.
    pub info: ModelInfo,
    /// Where the state dict was in the checkpoint (`""`: the checkpoint is the state dict).
    pub state_dict_key: String,
    /// The prefix stripped from the encoder's keys (`module.` for DataParallel; `""` if none).
    pub prefix: String,
    /// Keys written (after the prefix was stripped), sorted.
    pub kept: Vec<String>,
    /// Keys of the state dict left out (heads, counters, other modules), sorted.
    pub dropped: Vec<String>,
}

/// Converts the bytes of a PyTorch checkpoint.
///
/// # Errors
/// [`Error::InvalidModel`] with [`ModelProblem::BadCheckpoint`] when the bytes are not a
/// `torch.save` zip archive (the legacy pre-1.6 format is refused with how to re-save it), the
/// pickle is malformed or exceeds the parser's bounds, no (or more than one) ResNet-12 /
/// Conv-4 encoder is found, or a tensor's data is missing, short or not floating point;
/// [`ModelProblem::BadMetadata`] naming every required key missing from `options.metadata`;
/// any error of [`Model::from_bytes`] on the converted weights (e.g. a wrong shape).
pub fn convert_checkpoint(bytes: &[u8], options: &ConvertOptions) -> Result<Conversion> {
    let missing: Vec<&str> = REQUIRED_METADATA
        .iter()
        .copied()
        .filter(|k| !options.metadata.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(Error::model(
            ModelProblem::BadMetadata,
            format!(
                "the checkpoint does not say how to preprocess images: missing metadata {}; \
                 give them (mgecl convert --meta KEY=VALUE), e.g. image_size=84 \
                 mean=[0.485,0.456,0.406] std=[0.229,0.224,0.225]",
                missing.join(", ")
            ),
        ));
    }
    let archive = Archive::open(bytes)?;
    let root = archive.pickle()?;

    let mut dicts = Vec::new();
    collect_tensor_dicts(&root, String::new(), 0, &mut dicts);
    let (state_dict_key, entries) = choose_state_dict(dicts, options.state_dict_key.as_deref())?;
    let (prefix, arch) = encoder_prefix(&entries)?;

    // The tensors the architecture's description names, at the shapes the checkpoint gives.
    let shape_of = |name: &str| {
        let key = format!("{prefix}{name}");
        entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| t.shape.clone())
    };
    let described: BTreeSet<String> = EncoderSpec::from_shapes(arch, shape_of)?
        .tensors()
        .into_iter()
        .map(|t| t.name)
        .collect();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let mut budget = MAX_MODEL_FILE_BYTES;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, tensor) in entries {
        let name = key.strip_prefix(&prefix).unwrap_or_default();
        let is_encoder = key.starts_with(&prefix) && described.contains(name);
        if !is_encoder {
            dropped.push(key.to_string());
            continue;
        }
        let values = archive.read_tensor(key, &tensor, &mut budget)?;
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name.to_string(), tensor.shape.clone(), data));
        kept.push(name.to_string());
    }
    kept.sort();
    dropped.sort();

    let mut metadata = options.metadata.clone();
    metadata
        .entry("arch".to_string())
        .or_insert_with(|| arch.to_string());
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| bad(format!("tensor {name:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata.into_iter().collect()))
        .map_err(|e| Error::backend_caused_by("cannot serialise the converted weights", e))?;
    let info = Model::from_bytes(&bytes, &LoadOptions::default())?
        .info()
        .clone();
    Ok(Conversion {
        bytes,
        info,
        state_dict_key,
        prefix,
        kept,
        dropped,
    })
}

/// Converts the checkpoint file `input` and writes the model to `output` atomically (nothing
/// is written when the conversion fails). Adds `converted_from` (the input's file name) to
/// the metadata unless given.
///
/// # Errors
/// [`Error::Io`] when `input` cannot be read or `output` written; [`Error::LimitExceeded`] for
/// an input over [`MAX_MODEL_FILE_BYTES`]; otherwise as [`convert_checkpoint`].
pub fn convert_checkpoint_file(
    input: &Path,
    output: &Path,
    options: &ConvertOptions,
) -> Result<Conversion> {
    let bytes = crate::files::read_file_limited(input, MAX_MODEL_FILE_BYTES, "checkpoint")?;
    let mut options = options.clone();
    if let Some(name) = input.file_name() {
        options
            .metadata
            .entry("converted_from".to_string())
            .or_insert_with(|| name.to_string_lossy().into_owned());
    }
    let conversion = convert_checkpoint(&bytes, &options)?;
    crate::files::write_file(output, &conversion.bytes)?;
    Ok(conversion)
}

/// A dict of the pickle holding tensors under string keys, with its dotted key path.
struct TensorDict<'o> {
    path: String,
    entries: Vec<(&'o str, &'o Object)>,
}

/// Every dict holding tensors, depth first, descending into dict values, lists, tuples and
/// the state of pickled objects (an argparse `Namespace`, a module).
fn collect_tensor_dicts<'o>(
    obj: &'o Object,
    path: String,
    depth: usize,
    out: &mut Vec<TensorDict<'o>>,
) {
    if depth > MAX_SEARCH_DEPTH {
        return;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match obj {
        Object::Dict(items) => {
            let entries: Vec<(&str, &Object)> = items
                .iter()
                .filter_map(|(k, v)| match k {
                    Object::Unicode(k) if tensor_ref(v).is_some() => Some((k.as_str(), v)),
                    _ => None,
                })
                .collect();
            if !entries.is_empty() {
                out.push(TensorDict {
                    path: path.clone(),
                    entries,
                });
            }
            for (k, v) in items {
                if let Object::Unicode(k) = k {
                    if tensor_ref(v).is_none() {
                        collect_tensor_dicts(v, join(k), depth + 1, out);
                    }
                }
            }
        }
        Object::List(items) | Object::Tuple(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_tensor_dicts(v, join(&i.to_string()), depth + 1, out);
            }
        }
        Object::Build { args, .. } => collect_tensor_dicts(args, path, depth + 1, out),
        _ => {}
    }
}

/// The encoders the keys name: each first-convolution key's prefix and architecture.
fn anchors<'k>(keys: impl Iterator<Item = &'k str>) -> Vec<(String, Architecture)> {
    let first_convs: Vec<(String, Architecture)> = Architecture::ALL
        .into_iter()
        .map(|arch| (arch.block_conv_weight(1), arch))
        .collect();
    keys.filter_map(|key| {
        first_convs.iter().find_map(|(suffix, arch)| {
            key.strip_suffix(suffix.as_str())
                .filter(|p| p.is_empty() || p.ends_with('.'))
                .map(|prefix| (prefix.to_string(), *arch))
        })
    })
    .collect()
}

type Entries<'o> = Vec<(&'o str, TensorRef)>;

fn choose_state_dict<'o>(
    dicts: Vec<TensorDict<'o>>,
    wanted: Option<&str>,
) -> Result<(String, Entries<'o>)> {
    let describe = |dicts: &[TensorDict<'_>]| {
        dicts
            .iter()
            .map(|d| {
                let name = if d.path.is_empty() {
                    "(top level)"
                } else {
                    d.path.as_str()
                };
                format!("{name} ({} tensors)", d.entries.len())
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match wanted {
        Some(key) => {
            let listing = describe(&dicts);
            dicts.into_iter().find(|d| d.path == key).ok_or_else(|| {
                bad(format!(
                    "no tensors under key {key:?}; the checkpoint's tensor dicts: {listing}"
                ))
            })?
        }
        None => {
            let listing = describe(&dicts);
            let mut encoders: Vec<TensorDict<'o>> = dicts
                .into_iter()
                .filter(|d| !anchors(d.entries.iter().map(|(k, _)| *k)).is_empty())
                .collect();
            match encoders.len() {
                1 => encoders.remove(0),
                0 if listing.is_empty() => {
                    return Err(bad("the checkpoint holds no tensors"));
                }
                0 => {
                    return Err(bad(format!(
                        "no ResNet-12 (layer1.0.conv1.weight) or Conv-4 (layer1.0.weight) \
                         encoder in the checkpoint; its tensor dicts: {listing}"
                    )))
                }
                _ => {
                    return Err(bad(format!(
                        "several encoders in the checkpoint: {}; choose one by its key",
                        describe(&encoders)
                    )))
                }
            }
        }
    };
    // A key set twice keeps its last value, as Python's dict does.
    let mut entries: Entries<'o> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (key, obj) in &chosen.entries {
        let tensor = match tensor_ref(obj) {
            Some(tensor) => tensor?,
            None => return Err(bad(format!("{key:?} is not a tensor"))),
        };
        match position.get(key) {
            Some(&i) => entries[i].1 = tensor,
            None => {
                position.insert(key, entries.len());
                entries.push((key, tensor));
            }
        }
    }
    Ok((chosen.path, entries))
}

/// The prefix in front of the encoder's keys and its architecture.
fn encoder_prefix(entries: &Entries<'_>) -> Result<(String, Architecture)> {
    let mut found = anchors(entries.iter().map(|(k, _)| *k));
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.dedup_by(|a, b| a.0 == b.0);
    match found.as_slice() {
        [(prefix, arch)] => Ok((prefix.clone(), *arch)),
        [] => Err(bad(
            "no ResNet-12 (layer1.0.conv1.weight) or Conv-4 (layer1.0.weight) encoder in the chosen tensors",
        )),
        several => Err(bad(format!(
            "several encoders in one state dict, under the prefixes {:?}",
            several.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>()
        ))),
    }
}
