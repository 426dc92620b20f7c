//! What this workspace's training crate and command-line tool share with the core beyond the
//! SDK's API: the architecture layout and the checked weight reader, the normalisation step,
//! test-time copies at the feature level, atomic file writes and the content hash. No
//! stability promise: compiled in with the `internals` feature, for `mgecl-train` and
//! `mgecl-cli`.

pub use crate::augment::{extend_with_copies, merge_copies};
pub use crate::files::{read_file_limited, write_file};
pub use crate::hash::{fnv1a, FNV_OFFSET};
pub use crate::model::layout::{BlockSpec, ConvBn, EncoderSpec, TensorRole, TensorSpec};
pub use crate::model::weights::WeightFile;

/// The preprocessing's normalisation step: HWC u8 pixels of `(h, w, c)` -> CHW
/// `(v / 255 - mean[c]) / std[c]`, appended to `out`.
pub fn normalize_hwc(
    img: &[u8],
    hwc: (usize, usize, usize),
    mean: &[f32],
    std: &[f32],
    out: &mut Vec<f32>,
) {
    crate::preprocess::normalize_hwc(img, hwc, mean, std, out);
}
