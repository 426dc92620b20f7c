//! What a model file says about itself beyond its weights: the `__metadata__` map of a
//! safetensors file (all values are strings, lists are JSON), merged with caller overrides.
//!
//! Keys read here (docs/models.md, "Model files"): `arch` (`resnet12` | `conv4`),
//! `image_size` (`"84"` or `"[84, 84]"` as height, width), `mean`, `std` (JSON lists, one
//! value per input channel), `in_channels` (checked against the weights), `bn_eps`
//! (default 1e-5), `leaky_relu_slope` (ResNet-12, default 0.1), `invert` (`"true"` maps each
//! u8 pixel v to 255 - v), `feature_power` (optional: the features are the encoder's outputs
//! raised to it), `feature_mean` (optional: a JSON list, one value per feature, subtracted
//! from the features after `feature_power`). Every other key is kept verbatim in [`Metadata::raw`]; `calibration` and
//! `task_defaults` are read from there by the model (classifier calibration, task settings).

use std::collections::BTreeMap;

use super::layout::{Architecture, DEFAULT_BN_EPS, DEFAULT_LEAKY_RELU_SLOPE};
use crate::error::{Error, ModelProblem, Result};
use crate::preprocess::InputSpec;

/// Parsed metadata of a model: everything preprocessing and the forward pass need that the
/// weight shapes cannot tell.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metadata {
    /// The architecture (from `arch`, or guessed from the tensor names when absent).
    pub arch: Architecture,
    /// What the model takes as input.
    pub input: InputSpec,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// Negative slope of ResNet-12's LeakyReLU.
    pub leaky_relu_slope: f64,
    /// The power the model's features are: each encoder output v becomes sign(v) |v|^p
    /// (`feature_power`, > 0; absent = the outputs as they are). 0.5 on a ReLU encoder makes
    /// the non-negative, skewed features more Gaussian-like before the classifier's L2
    /// normalisation (Hu et al. 2021, "Leveraging the Feature Distribution in Transfer-based
    /// Few-Shot Learning").
    pub feature_power: Option<f64>,
    /// A vector subtracted from every feature vector (after [`Metadata::feature_power`]):
    /// the mean feature of the model's training classes, so that a task's L2-normalised
    /// features are directions from the centre of the training data rather than from the
    /// origin, which ReLU features all lie far from (`feature_mean`, one finite value per
    /// feature; its length is checked against the weights when the model loads).
    pub feature_mean: Option<Vec<f32>>,
    /// The merged key/value map (file metadata with overrides applied), kept verbatim.
    pub raw: BTreeMap<String, String>,
}

fn bad(detail: String) -> Error {
    Error::model(ModelProblem::BadMetadata, detail)
}

fn parse_f64(raw: &BTreeMap<String, String>, key: &str, default: f64) -> Result<f64> {
    match raw.get(key) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                bad(format!(
                    "metadata {key:?} = {text:?} is not a finite number"
                ))
            }),
    }
}

fn parse_list(raw: &BTreeMap<String, String>, key: &str) -> Result<Vec<f32>> {
    let text = raw.get(key).ok_or_else(|| {
        bad(format!(
            "metadata key {key:?} is missing (supply it as an override when loading)"
        ))
    })?;
    let values: Vec<f64> = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "metadata {key:?} = {text:?} is not a JSON number list: {e}"
        ))
    })?;
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return Err(bad(format!(
            "metadata {key:?} must be a non-empty list of finite numbers"
        )));
    }
    Ok(values.into_iter().map(|v| v as f32).collect())
}

fn parse_image_size(text: &str) -> Result<(usize, usize)> {
    let trimmed = text.trim();
    let size = if let Ok(side) = trimmed.parse::<usize>() {
        (side, side)
    } else {
        match serde_json::from_str::<Vec<usize>>(trimmed) {
            Ok(v) if v.len() == 2 => (v[0], v[1]),
            _ => {
                return Err(bad(format!(
                    "metadata \"image_size\" = {text:?}: expected \"N\" or \"[H, W]\""
                )))
            }
        }
    };
    // 4096 px is far above any few-shot encoder input; it also bounds the work a hostile file
    // can ask for.
    if size.0 == 0 || size.1 == 0 || size.0 > 4096 || size.1 > 4096 {
        return Err(bad(format!(
            "metadata \"image_size\" = {text:?} out of range 1..=4096"
        )));
    }
    Ok(size)
}

impl Metadata {
    /// Parses the merged map. `guessed_arch` is used when `arch` is absent; `in_channels` is
    /// the channel count read from the first convolution's weight.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] with [`ModelProblem::BadMetadata`] for a missing or malformed
    /// key, or a `mean`/`std`/`in_channels` that disagrees with the weights.
    pub fn parse(
        raw: BTreeMap<String, String>,
        guessed_arch: Option<Architecture>,
        in_channels: usize,
    ) -> Result<Self> {
        let arch = match raw.get("arch") {
            Some(name) => name.parse()?,
            None => guessed_arch.ok_or_else(|| bad("metadata key \"arch\" is missing".into()))?,
        };
        let image_size = parse_image_size(raw.get("image_size").ok_or_else(|| {
            bad("metadata key \"image_size\" is missing (supply it as an override)".into())
        })?)?;
        if let Some(text) = raw.get("in_channels") {
            if text.trim().parse::<usize>().ok() != Some(in_channels) {
                return Err(bad(format!(
                    "metadata in_channels = {text:?} but the first convolution takes {in_channels} channels"
                )));
            }
        }
        let mean = parse_list(&raw, "mean")?;
        let std = parse_list(&raw, "std")?;
        for (key, values) in [("mean", &mean), ("std", &std)] {
            if values.len() != in_channels {
                return Err(bad(format!(
                    "metadata {key:?} has {} values but the model takes {in_channels} channels",
                    values.len()
                )));
            }
        }
        if std.iter().any(|&s| s <= 0.0) {
            return Err(bad("metadata \"std\" values must be positive".into()));
        }
        let invert = match raw.get("invert").map(|s| s.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                return Err(bad(format!(
                    "metadata \"invert\" = {v:?}: expected true or false"
                )))
            }
        };
        let bn_eps = parse_f64(&raw, "bn_eps", DEFAULT_BN_EPS)?;
        if bn_eps <= 0.0 {
            return Err(bad("metadata \"bn_eps\" must be positive".into()));
        }
        let leaky_relu_slope = parse_f64(&raw, "leaky_relu_slope", DEFAULT_LEAKY_RELU_SLOPE)?;
        let feature_power = match raw.get("feature_power") {
            None => None,
            Some(_) => Some(parse_f64(&raw, "feature_power", 1.0)?)
                .filter(|p| *p > 0.0)
                .map(Some)
                .ok_or_else(|| bad("metadata \"feature_power\" must be positive".into()))?,
        };
        let feature_mean = match raw.contains_key("feature_mean") {
            true => Some(parse_list(&raw, "feature_mean")?),
            false => None,
        };
        Ok(Metadata {
            arch,
            input: InputSpec {
                image_size,
                in_channels,
                mean,
                std,
                invert,
            },
            bn_eps,
            leaky_relu_slope,
            feature_power,
            feature_mean,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_reference_metadata() {
        let m = Metadata::parse(
            map(&[
                ("arch", "conv4"),
                ("image_size", "28"),
                ("mean", "[0.9]"),
                ("std", "[0.25]"),
                ("in_channels", "1"),
            ]),
            None,
            1,
        )
        .unwrap();
        assert_eq!(m.arch, Architecture::Conv4);
        assert_eq!(m.input.image_size, (28, 28));
        assert_eq!(m.bn_eps, 1e-5);
        assert!(!m.input.invert);
    }

    #[test]
    fn rejects_bad_values() {
        let base = [("image_size", "28"), ("mean", "[0.9]"), ("std", "[0.25]")];
        let with = |k: &'static str, v: &'static str| {
            let mut m = map(&base);
            m.insert(k.into(), v.into());
            Metadata::parse(m, Some(Architecture::Conv4), 1)
        };
        assert!(with("arch", "vit").is_err());
        assert!(with("image_size", "0").is_err());
        assert!(with("image_size", "[28]").is_err());
        assert!(with("mean", "[0.1, 0.2]").is_err());
        assert!(with("std", "[0]").is_err());
        assert!(with("in_channels", "3").is_err());
        assert!(with("invert", "maybe").is_err());
        assert!(with("bn_eps", "nan").is_err());
        assert_eq!(
            with("image_size", "[32, 48]").unwrap().input.image_size,
            (32, 48)
        );
        assert!(
            Metadata::parse(map(&base), None, 1).is_err(),
            "no arch, no guess"
        );
    }
}
