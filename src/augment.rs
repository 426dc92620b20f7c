//! Test-time augmentation: the copies of a preprocessed image a task embeds with it
//! ([`TaskConfig::augmented_copies`](crate::TaskConfig::augmented_copies)), and how the
//! features of an image and its copies become one query feature.

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which copies a task makes of an image ([`TaskConfig::augmentation`](crate::TaskConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Augmentation {
    /// Rotations about the centre, in copy order by +-15, +-7.5, +-11.25 and +-3.75 degrees;
    /// the border pixels extend outwards. A drawing stays the same character (the shipped
    /// Omniglot model trained with rotations of up to 10 degrees). The default.
    #[default]
    Rotate,
    /// The horizontal flip, then shifts by 1/8 of the side (padded with the mean pixel),
    /// alternating unflipped and flipped: RFS's support-set augmentation for photographs. A
    /// mirrored character is another character in several alphabets: not for text or symbols.
    FlipShift,
}

impl Augmentation {
    /// Every augmentation, in the order `--help` lists them.
    pub const ALL: [Augmentation; 2] = [Augmentation::Rotate, Augmentation::FlipShift];

    /// The name [`FromStr`](std::str::FromStr) reads: `rotate` or `flip-shift`.
    pub fn name(self) -> &'static str {
        match self {
            Augmentation::Rotate => "rotate",
            Augmentation::FlipShift => "flip-shift",
        }
    }
}

impl std::fmt::Display for Augmentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Augmentation {
    type Err = Error;

    /// # Errors
    /// [`Error::InvalidArgument`] for a name other than `rotate` or `flip-shift`.
    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "rotate" => Ok(Augmentation::Rotate),
            "flip-shift" => Ok(Augmentation::FlipShift),
            other => Err(Error::InvalidArgument(format!(
                "unknown augmentation {other:?} (expected rotate or flip-shift)"
            ))),
        }
    }
}

/// Rotation of each copy of [`Augmentation::Rotate`], degrees. On the Omniglot val alphabets
/// +-15 gained more than +-10 or +-20, and further angles add little (`models/README.md`).
const ROTATIONS: [f64; 8] = [15.0, -15.0, 7.5, -7.5, 11.25, -11.25, 3.75, -3.75];

/// Most augmented copies of an image.
pub const MAX_AUGMENTED_COPIES: usize = ROTATIONS.len();

/// Augmented copy number `copy` (< [`MAX_AUGMENTED_COPIES`]) of one preprocessed CHW image.
pub fn augmented_copy(
    input: &[f32],
    shape: (usize, usize, usize),
    kind: Augmentation,
    copy: usize,
) -> Vec<f32> {
    match kind {
        Augmentation::Rotate => rotate(input, shape, ROTATIONS[copy % ROTATIONS.len()]),
        Augmentation::FlipShift => flip_shift(input, shape, copy),
    }
}

/// One preprocessed CHW image followed by its first `copies` augmented copies of kind `kind`
/// (what a task embeds for an example, and for a query with augmented queries), appended to
/// `out`.
pub fn extend_with_copies(
    out: &mut Vec<f32>,
    input: &[f32],
    shape: (usize, usize, usize),
    kind: Augmentation,
    copies: usize,
) {
    out.extend_from_slice(input);
    for copy in 0..copies {
        out.extend(augmented_copy(input, shape, kind, copy));
    }
}

/// Rotation by `degrees` about the centre, bilinear, sampling outside the image at the
/// nearest border pixel (the background, for drawings: no frame appears).
fn rotate(input: &[f32], (c, h, w): (usize, usize, usize), degrees: f64) -> Vec<f32> {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let mut out = vec![0f32; input.len()];
    for y in 0..h {
        for x in 0..w {
            // Inverse map: output pixel -> source position.
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let sx = (cos * dx + sin * dy + cx).clamp(0.0, (w - 1) as f64);
            let sy = (-sin * dx + cos * dy + cy).clamp(0.0, (h - 1) as f64);
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
            for ch in 0..c {
                let at = |yy: usize, xx: usize| f64::from(input[(ch * h + yy) * w + xx]);
                let v = at(y0, x0) * (1.0 - fx) * (1.0 - fy)
                    + at(y0, x1) * fx * (1.0 - fy)
                    + at(y1, x0) * (1.0 - fx) * fy
                    + at(y1, x1) * fx * fy;
                out[(ch * h + y) * w + x] = v as f32;
            }
        }
    }
    out
}

/// Copy 0 is the horizontal flip; the others are shifts by 1/8 of the side (a padded random
/// crop, made deterministic), alternating unflipped and flipped. Padding takes the value 0
/// (the mean pixel).
fn flip_shift(input: &[f32], (c, h, w): (usize, usize, usize), copy: usize) -> Vec<f32> {
    const SHIFTS: [(isize, isize); 4] = [(1, 1), (-1, -1), (1, -1), (-1, 1)];
    let flip = copy.is_multiple_of(2);
    let (dy, dx) = if copy == 0 {
        (0, 0)
    } else {
        let (sy, sx) = SHIFTS[(copy - 1) % SHIFTS.len()];
        (sy * (h / 8).max(1) as isize, sx * (w / 8).max(1) as isize)
    };
    let mut out = vec![0f32; input.len()];
    for ch in 0..c {
        for y in 0..h {
            let sy = y as isize - dy;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            for x in 0..w {
                let sx0 = x as isize - dx;
                if sx0 < 0 || sx0 >= w as isize {
                    continue;
                }
                let sx = if flip {
                    w - 1 - sx0 as usize
                } else {
                    sx0 as usize
                };
                out[(ch * h + y) * w + x] = input[(ch * h + sy as usize) * w + sx];
            }
        }
    }
    out
}

/// One query feature per image from the features of each image followed by its `copies`
/// copies (`N * (1 + copies)` rows, image-major): the mean of each group's L2-normalised rows.
/// Averaging directions rather than raw features keeps one bright copy from outweighing the
/// others.
///
/// # Errors
/// [`Error::InvalidArgument`] when the rows are not a whole number of groups.
pub fn merge_copies(features: ArrayView2<f32>, copies: usize) -> Result<Array2<f32>> {
    let group = copies + 1;
    if !features.nrows().is_multiple_of(group) {
        return Err(Error::InvalidArgument(format!(
            "{} feature rows are not whole groups of 1 + {copies} copies",
            features.nrows()
        )));
    }
    let mut merged = Array2::<f32>::zeros((features.nrows() / group, features.ncols()));
    for (rows, mut out) in features
        .axis_chunks_iter(Axis(0), group)
        .zip(merged.rows_mut())
    {
        for row in rows.rows() {
            let norm = row.dot(&row).sqrt();
            if norm > 0.0 {
                out.scaled_add(1.0 / (group as f32 * norm), &row);
            }
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_move_pixels_where_a_hand_rotation_does() {
        // A 5x5 image with one bright pixel right of the centre: a rotation by 90 degrees
        // (not a table angle, but the same code path) moves it above or below the centre.
        let mut img = vec![0f32; 25];
        img[2 * 5 + 4] = 1.0;
        let turned = rotate(&img, (1, 5, 5), 90.0);
        let bright: Vec<usize> = (0..25).filter(|&i| turned[i] > 0.5).collect();
        assert!(bright == vec![4 * 5 + 2] || bright == vec![2], "{bright:?}");
        // The paired angles are mirror images: +a then -a gives back the original (up to
        // interpolation) for a smooth image.
        let smooth: Vec<f32> = (0..64).map(|i| ((i % 8) as f32 * 0.1).sin()).collect();
        let back = rotate(&rotate(&smooth, (1, 8, 8), 15.0), (1, 8, 8), -15.0);
        let centre = (3 * 8 + 3, 4 * 8 + 4);
        assert!((back[centre.0] - smooth[centre.0]).abs() < 0.05);
        assert!((back[centre.1] - smooth[centre.1]).abs() < 0.05);
        // A constant image stays constant: the border extends, no frame appears.
        let flat = vec![0.3f32; 36];
        for copy in 0..MAX_AUGMENTED_COPIES {
            let out = augmented_copy(&flat, (1, 6, 6), Augmentation::Rotate, copy);
            assert!(out.iter().all(|v| (v - 0.3).abs() < 1e-6), "copy {copy}");
        }
    }

    #[test]
    fn merged_copies_are_the_mean_direction() {
        let features = ndarray::array![[3.0f32, 4.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.0]];
        let merged = merge_copies(features.view(), 1).unwrap();
        // (0.6, 0.8) and (0, 1) average to (0.3, 0.9); a zero row adds nothing.
        let expected = ndarray::array![[0.3f32, 0.9], [0.5, 0.0]];
        assert!((merged - expected).iter().all(|d| d.abs() < 1e-6));
        assert!(merge_copies(features.view(), 2).is_err());
    }

    #[test]
    fn augmentation_names_read_back() {
        for kind in [Augmentation::Rotate, Augmentation::FlipShift] {
            assert_eq!(kind.to_string().parse::<Augmentation>().unwrap(), kind);
        }
        assert!("flip".parse::<Augmentation>().is_err());
    }
}
