//! `mgecl quantize`: an int8 model from a float32 one ([`mgecl::quantize_model`]), its
//! activation ranges calibrated on images of the model's training data, then its confidence
//! calibration refitted on the quantised features.

use std::collections::BTreeMap;
use std::path::Path;

use mgecl::classifier::calibration::Calibration;
use mgecl::internals::normalize_hwc;

use std::sync::Arc;

use crate::calibrate::{fit_calibration, load_model, with_calibration, CalibrateConfig};
use crate::data::{scan_classes, ClassFiles, Dataset};
use crate::error::Result;
use crate::rng::Rng;

/// How `mgecl quantize` chooses its calibration images.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuantizeConfig {
    /// Images calibrating the activation ranges (fewer when the data has fewer).
    pub images: usize,
    /// Seed of the choice.
    pub seed: u64,
}

impl Default for QuantizeConfig {
    fn default() -> Self {
        QuantizeConfig {
            images: 512,
            seed: 0,
        }
    }
}

/// What [`quantize_file`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QuantizeReport {
    /// Images that calibrated the activation ranges.
    pub images: usize,
    /// Classes they came from.
    pub classes: usize,
    /// The confidence calibration refitted on the quantised features (when the source model
    /// had one).
    pub calibration: Option<Calibration>,
}

/// `images` files spread evenly over `classes`: each class's files in a seeded random order,
/// taken one per class in turn (classes in name order) until there are enough.
pub fn choose_calibration_images(
    classes: &[ClassFiles],
    images: usize,
    seed: u64,
) -> Vec<ClassFiles> {
    let mut rng = Rng::new(seed, 0x7175_616e_7469_7a65);
    let mut orders: Vec<Vec<usize>> = classes
        .iter()
        .map(|c| {
            let mut order: Vec<usize> = (0..c.files.len()).collect();
            rng.shuffle(&mut order);
            order
        })
        .collect();
    let mut chosen: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
    let mut taken = 0;
    let mut round = 0;
    while taken < images && orders.iter().any(|o| round < o.len()) {
        for (k, order) in orders.iter_mut().enumerate() {
            if taken < images && round < order.len() {
                chosen[k].push(order[round]);
                taken += 1;
            }
        }
        round += 1;
    }
    classes
        .iter()
        .zip(chosen)
        .filter(|(_, picks)| !picks.is_empty())
        .map(|(class, picks)| ClassFiles {
            name: class.name.clone(),
            files: picks.iter().map(|&i| class.files[i].clone()).collect(),
        })
        .collect()
}

/// Quantises the model at `model_path` (with `metadata_overrides`) on images of `data`
/// (optionally only the top-level folders `include`), refits its confidence calibration on
/// all of that data when the source had one (`mgecl calibrate`'s fit), and writes it to
/// `out` once. `data_description` goes into the output's `quantization` metadata with the count
/// and the way the images were chosen.
///
/// # Errors
/// As [`mgecl::quantize_model`], the data loading and [`fit_calibration`];
/// [`mgecl::Error::Io`] when `out` cannot be written (nothing is left at `out` then).
pub fn quantize_file(
    model_path: &Path,
    metadata_overrides: &BTreeMap<String, String>,
    data: &Path,
    include: Option<&[String]>,
    data_description: &str,
    out: &Path,
    config: &QuantizeConfig,
) -> Result<QuantizeReport> {
    let (bytes, model) = load_model(model_path, metadata_overrides)?;
    let classes = scan_classes(data, include)?;
    let chosen = choose_calibration_images(&classes, config.images, config.seed);
    let calibration_set = Dataset::load(&chosen, model.preprocessor())?;
    let input = &model.info().input;
    let (h, w) = calibration_set.size;
    let mut images = Vec::new();
    for pixels in &calibration_set.pixels {
        let shape = (h, w, calibration_set.channels);
        normalize_hwc(pixels, shape, &input.mean, &input.std, &mut images);
    }
    let description = format!(
        "{} images of {} classes of {data_description}: one per class in turn, each class's \
         images in a random order (seed {})",
        calibration_set.len(),
        chosen.len(),
        config.seed
    );
    let mut options = mgecl::LoadOptions::default();
    options.metadata_overrides = metadata_overrides.clone();
    let mut quantized = mgecl::quantize_model(&bytes, &options, &images, &description)?;
    // A calibrated model's int8 version is calibrated anew (its scores differ a little), in
    // memory: the file is written once, whole, or not at all.
    let calibration = match model.calibration() {
        Some(_) => {
            let int8 = Arc::new(mgecl::Model::from_bytes(&quantized, &options)?);
            let all = Dataset::load(&classes, model.preprocessor())?;
            let calibration = fit_calibration(&int8, &all, &CalibrateConfig::default())?;
            quantized = with_calibration(&quantized, &calibration)?;
            Some(calibration)
        }
        None => None,
    };
    mgecl::internals::write_file(out, &quantized)?;
    Ok(QuantizeReport {
        images: calibration_set.len(),
        classes: chosen.len(),
        calibration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn class(name: &str, files: usize) -> ClassFiles {
        ClassFiles {
            name: name.into(),
            files: (0..files)
                .map(|i| PathBuf::from(format!("{name}/{i}.png")))
                .collect(),
        }
    }

    #[test]
    fn calibration_images_spread_over_the_classes() {
        let classes = [class("a", 5), class("b", 1), class("c", 3)];
        // 7 images: rounds of one per class; b runs out after the first.
        let chosen = choose_calibration_images(&classes, 7, 1);
        let counts: Vec<(String, usize)> = chosen
            .iter()
            .map(|c| (c.name.clone(), c.files.len()))
            .collect();
        assert_eq!(counts, [("a".into(), 3), ("b".into(), 1), ("c".into(), 3)]);
        for c in &chosen {
            let mut files = c.files.clone();
            files.dedup();
            assert_eq!(files.len(), c.files.len(), "no file twice");
        }
        // Fewer images than classes: the first classes by name, one each.
        let chosen = choose_calibration_images(&classes, 2, 1);
        assert_eq!(chosen.iter().map(|c| c.files.len()).sum::<usize>(), 2);
        assert_eq!(chosen[0].name, "a");
        // More than there are: all of them.
        let all = choose_calibration_images(&classes, 100, 1);
        assert_eq!(all.iter().map(|c| c.files.len()).sum::<usize>(), 9);
        // The seed changes the choice, not the counts.
        let firsts: std::collections::HashSet<Vec<PathBuf>> = (0..8)
            .map(|seed| {
                choose_calibration_images(&classes, 3, seed)[0]
                    .files
                    .clone()
            })
            .collect();
        assert!(firsts.len() > 1);
    }
}
