//! The task file: one safetensors file holding every example's features (`features`, f32,
//! rows in class and example order) and, in its metadata, the format name and version, the
//! classes and examples (JSON), the settings, the model's fingerprint, whether the task was
//! fitted, and a checksum over all of it. Written atomically; read back with every field
//! checked, so a truncated, modified or foreign file is an error, never a wrong task.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{check_label, check_limits, Class, Task, TaskConfig};
use crate::error::{Error, Result};
use crate::hash::{fnv1a, FNV_OFFSET};
use crate::model::Model;

/// Largest task file accepted by [`Task::load`].
pub const MAX_TASK_FILE_BYTES: u64 = 1 << 30;
const TASK_FORMAT: &str = "mgecl-task";
const TASK_VERSION: &str = "1";

/// Checksum over the feature bytes and every metadata entry but the checksum itself.
fn task_checksum(features: &[u8], metadata: &HashMap<String, String>) -> String {
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != "checksum").collect();
    keys.sort();
    let mut h = fnv1a(FNV_OFFSET, features);
    for k in keys {
        h = fnv1a(fnv1a(fnv1a(h, k.as_bytes()), &[0]), metadata[k].as_bytes());
    }
    format!("{h:016x}")
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::backend_caused_by("cannot serialise", e))
}

fn bad_file(detail: impl Into<String>) -> Error {
    Error::InvalidTaskFile(detail.into())
}

impl Task {
    /// Writes the task (labels, features, settings, model fingerprint, whether it was fitted)
    /// to one safetensors file, atomically: a crash leaves the old file or the new one.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written (the old file is then untouched).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let (features, metadata) = self.file_parts()?;
        let dim = self.model.feature_dim();
        let total_rows = features.len() / 4 / dim;
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![total_rows, dim],
            &features,
        )
        .map_err(|e| Error::backend_caused_by("task features", e))?;
        let bytes = safetensors::serialize([("features", view)], Some(metadata))
            .map_err(|e| Error::backend_caused_by("cannot serialise the task", e))?;
        crate::files::write_file(path.as_ref(), &bytes)
    }

    /// A hash of everything [`Task::save`] writes (model fingerprint, settings, classes and
    /// their features): equal for tasks that label images alike. What `mgecl label --resume`
    /// checks that a progress file was written by the same job.
    ///
    /// # Errors
    /// [`Error::Backend`] if the settings cannot be serialised.
    pub fn fingerprint(&self) -> Result<String> {
        let (_, metadata) = self.file_parts()?;
        Ok(metadata["checksum"].clone())
    }

    /// The features (little-endian f32 bytes) and metadata (with its checksum) of a task file.
    fn file_parts(&self) -> Result<(Vec<u8>, HashMap<String, String>)> {
        let dim = self.model.feature_dim();
        // A plain loop: the nested `flat_map` over `to_le_bytes()` arrays it replaces made
        // valgrind report (spurious) branches on uninitialised stack memory in C-API tests.
        let mut features = Vec::new();
        for example in self.classes.iter().flat_map(|c| &c.examples) {
            for value in &example.features {
                features.extend_from_slice(&value.to_le_bytes());
            }
        }
        let mut metadata = HashMap::from([
            ("format".to_string(), TASK_FORMAT.to_string()),
            ("version".to_string(), TASK_VERSION.to_string()),
            (
                "model_fingerprint".to_string(),
                self.model.info().fingerprint.clone(),
            ),
            ("feature_dim".to_string(), dim.to_string()),
            ("config".to_string(), to_json(&self.config)?),
            ("classes".to_string(), to_json(&self.classes)?),
            ("next_id".to_string(), self.next_id.to_string()),
            ("fitted".to_string(), self.is_fitted().to_string()),
        ]);
        metadata.insert("checksum".to_string(), task_checksum(&features, &metadata));
        Ok((features, metadata))
    }

    /// Loads a task saved by [`Task::save`] against `model`, refitting it if it was fitted.
    ///
    /// # Errors
    /// [`Error::Io`] when unreadable; [`Error::InvalidTaskFile`] when it is not a task file, is
    /// truncated or was modified (checksum); [`Error::ModelMismatch`] when it was made with a
    /// different model; [`Error::LimitExceeded`] when it holds more classes or rows than its
    /// own limits; errors of [`Task::fit`] when refitting fails.
    pub fn load(path: impl AsRef<Path>, model: Arc<Model>) -> Result<Self> {
        let bytes =
            crate::files::read_file_limited(path.as_ref(), MAX_TASK_FILE_BYTES, "task file")?;
        Self::from_bytes(&bytes, model)
    }

    /// [`Task::load`] from the bytes of a task file.
    ///
    /// # Errors
    /// As [`Task::load`].
    pub fn from_bytes(bytes: &[u8], model: Arc<Model>) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad_file(format!("not a complete safetensors file ({e})")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad_file(format!("unreadable header ({e})")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let get = |key: &str| {
            metadata
                .get(key)
                .ok_or_else(|| bad_file(format!("metadata {key:?} is missing")))
        };
        if get("format")? != TASK_FORMAT {
            return Err(bad_file("not an mgecl task file"));
        }
        if get("version")? != TASK_VERSION {
            return Err(bad_file(format!(
                "unsupported task file version {:?}",
                get("version")?
            )));
        }
        let view = st
            .tensor("features")
            .map_err(|_| bad_file("tensor \"features\" is missing"))?;
        if view.dtype() != safetensors::Dtype::F32 || view.shape().len() != 2 {
            return Err(bad_file("tensor \"features\" must be a 2-d F32 tensor"));
        }
        // Fuzzing skips the checksum: a mutation would almost never pass it, and the parser
        // behind it must be safe on any bytes anyway.
        if !cfg!(fuzzing) && get("checksum")? != &task_checksum(view.data(), &metadata) {
            return Err(bad_file(
                "checksum mismatch: the file was modified or damaged",
            ));
        }
        let found = &model.info().fingerprint;
        let expected = get("model_fingerprint")?;
        if expected != found {
            return Err(Error::ModelMismatch {
                expected: expected.clone(),
                found: found.clone(),
            });
        }
        let dim = model.feature_dim();
        if view.shape()[1] != dim || get("feature_dim")? != &dim.to_string() {
            return Err(bad_file(format!("features are not {dim}-dimensional")));
        }
        let config: TaskConfig =
            serde_json::from_str(get("config")?).map_err(|e| bad_file(format!("config: {e}")))?;
        config.validate()?;
        let mut classes: Vec<Class> =
            serde_json::from_str(get("classes")?).map_err(|e| bad_file(format!("classes: {e}")))?;
        // Before copying any features: a header may declare far more than the limits.
        let declared_rows = classes
            .iter()
            .flat_map(|c| &c.examples)
            .fold(0usize, |n, e| n.saturating_add(e.rows));
        check_limits(&config, classes.len(), declared_rows)?;
        let next_id: u64 = get("next_id")?
            .parse()
            .map_err(|_| bad_file("bad next_id"))?;
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(bad_file("features contain NaN or infinite values"));
        }
        let mut offset = 0usize;
        let mut seen_labels = std::collections::HashSet::new();
        let mut seen_ids = std::collections::HashSet::new();
        for class in &mut classes {
            check_label(&class.label).map_err(|e| bad_file(e.to_string()))?;
            if !seen_labels.insert(class.label.clone()) {
                return Err(bad_file(format!("duplicate label {:?}", class.label)));
            }
            for e in &mut class.examples {
                let end = e
                    .rows
                    .checked_mul(dim)
                    .and_then(|n| n.checked_add(offset))
                    .filter(|&end| e.rows >= 1 && end <= values.len())
                    .ok_or_else(|| bad_file("example rows do not match the features tensor"))?;
                if e.id >= next_id || !seen_ids.insert(e.id) {
                    return Err(bad_file(format!("bad example id {}", e.id)));
                }
                e.features = values[offset..end].to_vec();
                offset = end;
            }
        }
        if offset != values.len() {
            return Err(bad_file("the features tensor has rows no example claims"));
        }
        let mut task = Task {
            model,
            config,
            classes,
            next_id,
            fitted: None,
        };
        if get("fitted")? == "true" {
            task.fit()?;
        }
        Ok(task)
    }
}
