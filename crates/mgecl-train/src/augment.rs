//! Training augmentation on u8 images at the model's input size (HWC), seeded, then the same
//! normalisation as inference (`(v / 255 - mean) / std`, CHW).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Which augmentations to apply and how strongly. All off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AugmentConfig {
    /// Random crop after zero-padding each side by this many pixels (0 = off).
    pub crop_padding: usize,
    /// Random horizontal flip with probability 0.5 (changes handwritten characters: off for
    /// Omniglot).
    pub hflip: bool,
    /// Colour jitter: brightness factor drawn from [1 - b, 1 + b].
    pub brightness: f32,
    /// Colour jitter: contrast factor drawn from [1 - c, 1 + c] around the image mean.
    pub contrast: f32,
    /// Colour jitter: saturation factor drawn from [1 - s, 1 + s] (RGB only).
    pub saturation: f32,
    /// Probability of converting an RGB image to grey.
    pub grayscale_prob: f32,
    /// Random rotation in [-r, r] degrees.
    pub rotation_deg: f32,
    /// Random shift in [-s, s] of the side length, per axis.
    pub shift: f32,
    /// Random isotropic scale in [lo, hi] (`[1, 1]` = off).
    pub scale: [f32; 2],
}

impl AugmentConfig {
    /// A named preset: `none`; `omniglot` (rotation 10 deg, shift 0.1, scale 0.9-1.1);
    /// `imagenet` (RFS: random crop with padding 8, colour jitter 0.4, horizontal flip).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for another name.
    pub fn preset(name: &str) -> Result<Self> {
        let none = AugmentConfig {
            scale: [1.0, 1.0],
            ..Default::default()
        };
        match name {
            "none" => Ok(none),
            "omniglot" => Ok(AugmentConfig {
                rotation_deg: 10.0,
                shift: 0.1,
                scale: [0.9, 1.1],
                ..none
            }),
            "imagenet" => Ok(AugmentConfig {
                crop_padding: 8,
                hflip: true,
                brightness: 0.4,
                contrast: 0.4,
                saturation: 0.4,
                ..none
            }),
            other => Err(Error::InvalidArgument(format!(
                "unknown augmentation preset {other:?} (none, omniglot, imagenet)"
            ))),
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a negative strength, probability outside [0, 1] or a
    /// non-positive scale.
    pub fn validate(&self) -> Result<()> {
        let ok = [
            self.brightness,
            self.contrast,
            self.saturation,
            self.rotation_deg,
            self.shift,
        ]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0)
            && (0.0..=1.0).contains(&self.grayscale_prob)
            && self.scale[0] > 0.0
            && self.scale[0] <= self.scale[1];
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "invalid augmentation settings {self:?}"
            )))
        }
    }

    fn affine(&self) -> bool {
        self.rotation_deg > 0.0 || self.shift > 0.0 || self.scale != [1.0, 1.0]
    }
}

/// Applies `config` to one HWC u8 image of `(h, w)` with `c` channels, in place.
pub fn augment(
    img: &mut Vec<u8>,
    (h, w, c): (usize, usize, usize),
    config: &AugmentConfig,
    rng: &mut Rng,
) {
    if config.affine() {
        let angle = rng
            .range(
                -f64::from(config.rotation_deg),
                f64::from(config.rotation_deg),
            )
            .to_radians();
        let scale = rng.range(
            f64::from(config.scale[0]),
            f64::from(config.scale[1]).max(f64::from(config.scale[0])),
        );
        let tx = rng.range(-f64::from(config.shift), f64::from(config.shift)) * w as f64;
        let ty = rng.range(-f64::from(config.shift), f64::from(config.shift)) * h as f64;
        *img = affine(img, (h, w, c), angle, scale, (tx, ty));
    }
    if config.crop_padding > 0 {
        let p = config.crop_padding;
        let dy = rng.below(2 * p + 1) as isize - p as isize;
        let dx = rng.below(2 * p + 1) as isize - p as isize;
        let src = img.clone();
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y as isize + dy, x as isize + dx);
                let inside = sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w;
                for k in 0..c {
                    img[(y * w + x) * c + k] = if inside {
                        src[(sy as usize * w + sx as usize) * c + k]
                    } else {
                        0
                    };
                }
            }
        }
    }
    if config.hflip && rng.uniform() < 0.5 {
        for row in img.chunks_exact_mut(w * c) {
            for x in 0..w / 2 {
                for k in 0..c {
                    row.swap(x * c + k, (w - 1 - x) * c + k);
                }
            }
        }
    }
    if config.brightness > 0.0 || config.contrast > 0.0 || config.saturation > 0.0 {
        jitter(img, c, config, rng);
    }
    if c == 3 && config.grayscale_prob > 0.0 && rng.uniform() < f64::from(config.grayscale_prob) {
        for px in img.chunks_exact_mut(3) {
            let l = luma(px);
            px.fill(l.round().clamp(0.0, 255.0) as u8);
        }
    }
}

/// A square HWC image of side `h == w` with `c` channels turned clockwise by 90 degrees
/// `quarter` times (0 to 3; any other count modulo 4).
///
/// # Panics
/// When the image is not square or `src` is not `h * w * c` values.
pub fn rotate_clockwise<T: Copy + Default>(
    src: &[T],
    (h, w, c): (usize, usize, usize),
    quarter: usize,
) -> Vec<T> {
    assert!(
        h == w && src.len() == h * w * c,
        "rotate_clockwise: a square HWC image"
    );
    let mut out = vec![T::default(); src.len()];
    // (y, x) <- source pixel.
    for y in 0..h {
        for x in 0..w {
            let (sy, sx) = match quarter % 4 {
                0 => (y, x),
                1 => (w - 1 - x, y),
                2 => (h - 1 - y, w - 1 - x),
                _ => (x, h - 1 - y),
            };
            let (d, s) = ((y * w + x) * c, (sy * w + sx) * c);
            out[d..d + c].copy_from_slice(&src[s..s + c]);
        }
    }
    out
}

fn luma(px: &[u8]) -> f32 {
    0.299 * f32::from(px[0]) + 0.587 * f32::from(px[1]) + 0.114 * f32::from(px[2])
}

fn jitter(img: &mut [u8], c: usize, config: &AugmentConfig, rng: &mut Rng) {
    let factor =
        |s: f32, rng: &mut Rng| rng.range(f64::from(1.0 - s).max(0.0), f64::from(1.0 + s)) as f32;
    let b = factor(config.brightness, rng);
    let ct = factor(config.contrast, rng);
    let sat = factor(config.saturation, rng);
    let mut values: Vec<f32> = img.iter().map(|&v| f32::from(v) * b).collect();
    let mean = if c == 3 {
        values
            .chunks_exact(3)
            .map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
            .sum::<f32>()
            / (values.len() / 3) as f32
    } else {
        values.iter().sum::<f32>() / values.len() as f32
    };
    values.iter_mut().for_each(|v| *v = mean + (*v - mean) * ct);
    if c == 3 {
        for p in values.chunks_exact_mut(3) {
            let l = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
            p.iter_mut().for_each(|v| *v = l + (*v - l) * sat);
        }
    }
    for (o, v) in img.iter_mut().zip(values) {
        *o = v.round().clamp(0.0, 255.0) as u8;
    }
}

/// Rotation by `angle` and scaling by `scale` about the centre, then a shift; bilinear
/// sampling, zero outside.
fn affine(
    src: &[u8],
    (h, w, c): (usize, usize, usize),
    angle: f64,
    scale: f64,
    (tx, ty): (f64, f64),
) -> Vec<u8> {
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let (sin, cos) = angle.sin_cos();
    let mut out = vec![0u8; src.len()];
    let at = |y: isize, x: isize, k: usize| -> f64 {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0.0
        } else {
            f64::from(src[(y as usize * w + x as usize) * c + k])
        }
    };
    for y in 0..h {
        for x in 0..w {
            // Inverse map: output -> source.
            let (dx, dy) = (x as f64 - cx - tx, y as f64 - cy - ty);
            let sx = (cos * dx + sin * dy) / scale + cx;
            let sy = (-sin * dx + cos * dy) / scale + cy;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            for k in 0..c {
                let v = at(y0, x0, k) * (1.0 - fx) * (1.0 - fy)
                    + at(y0, x0 + 1, k) * fx * (1.0 - fy)
                    + at(y0 + 1, x0, k) * (1.0 - fx) * fy
                    + at(y0 + 1, x0 + 1, k) * fx * fy;
                out[(y * w + x) * c + k] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarter_turns_go_clockwise() {
        // 2x2, two channels: a b / c d  ->  c a / d b  (clockwise), each pixel (v, v + 10).
        let px = |v: u8| [v, v + 10];
        let img: Vec<u8> = [1, 2, 3, 4].into_iter().flat_map(px).collect();
        let turned = |q| rotate_clockwise(&img, (2, 2, 2), q);
        let want = |order: [u8; 4]| -> Vec<u8> { order.into_iter().flat_map(px).collect() };
        assert_eq!(turned(0), img);
        assert_eq!(turned(1), want([3, 1, 4, 2]));
        assert_eq!(turned(2), want([4, 3, 2, 1]));
        assert_eq!(turned(3), want([2, 4, 1, 3]));
        assert_eq!(rotate_clockwise(&turned(1), (2, 2, 2), 3), img);
    }

    #[test]
    fn identity_settings_change_nothing() {
        let img: Vec<u8> = (0..3 * 6 * 5).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = img.clone();
        augment(
            &mut out,
            (6, 5, 3),
            &AugmentConfig::preset("none").unwrap(),
            &mut Rng::new(1, 1),
        );
        assert_eq!(out, img);
        // A zero-angle, unit-scale, zero-shift affine map is the identity.
        assert_eq!(affine(&img, (6, 5, 3), 0.0, 1.0, (0.0, 0.0)), img);
    }

    #[test]
    fn shifts_and_flips_move_pixels_as_expected() {
        // One bright pixel at (1, 1) in a 4x4 grey image.
        let mut img = vec![0u8; 16];
        img[5] = 200;
        let shifted = affine(&img, (4, 4, 1), 0.0, 1.0, (1.0, 0.0));
        assert_eq!(shifted[6], 200, "moved one pixel right");
        let rotated = affine(&img, (4, 4, 1), std::f64::consts::PI, 1.0, (0.0, 0.0));
        assert_eq!(
            rotated[10], 200,
            "180 degrees about the centre: (1,1) -> (2,2)"
        );
        let mut flipped = img.clone();
        let config = AugmentConfig {
            hflip: true,
            scale: [1.0, 1.0],
            ..Default::default()
        };
        // Find a seed whose first draw flips.
        let mut seed = 0;
        while Rng::new(seed, 0).uniform() >= 0.5 {
            seed += 1;
        }
        augment(&mut flipped, (4, 4, 1), &config, &mut Rng::new(seed, 0));
        assert_eq!(flipped[6], 200, "(1,1) -> (1,2) in a 4-wide row");
    }
    /// A 9x7 RGB image of varied colours, HWC.
    fn photo() -> Vec<u8> {
        (0..9 * 7)
            .flat_map(|i| {
                [
                    (i * 37 % 200 + 20) as u8,
                    (i * 11 % 180 + 40) as u8,
                    (i * 5 % 150) as u8,
                ]
            })
            .collect()
    }

    #[test]
    fn padded_crop_is_a_shift_with_zero_fill() {
        // RFS's RandomCrop(84, padding=8): the output is the input moved by (dy, dx), each in
        // [-p, p], with zeros where the window leaves the image.
        let (h, w, c, p) = (9, 7, 3, 2);
        let img = photo();
        let config = AugmentConfig {
            crop_padding: p,
            scale: [1.0, 1.0],
            ..Default::default()
        };
        let shifted = |dy: isize, dx: isize| -> Vec<u8> {
            let mut out = vec![0u8; img.len()];
            for y in 0..h as isize {
                for x in 0..w as isize {
                    let (sy, sx) = (y + dy, x + dx);
                    if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                        for k in 0..c {
                            out[(y as usize * w + x as usize) * c + k] =
                                img[(sy as usize * w + sx as usize) * c + k];
                        }
                    }
                }
            }
            out
        };
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..60 {
            let mut out = img.clone();
            augment(&mut out, (h, w, c), &config, &mut Rng::new(seed, 0));
            let offset = (-(p as isize)..=p as isize)
                .flat_map(|dy| (-(p as isize)..=p as isize).map(move |dx| (dy, dx)))
                .find(|&(dy, dx)| shifted(dy, dx) == out);
            seen.insert(offset.expect("every output is a shift of the input"));
        }
        // All 25 offsets are possible; 60 draws see most of them.
        assert!(seen.len() > 15, "offsets drawn: {seen:?}");
    }

    /// The least-squares `f` of `out - centre = f * (img - centre)` over unclipped values.
    fn fit_factor(img: &[u8], out: &[u8], centre: f32) -> f32 {
        let (mut num, mut den) = (0.0, 0.0);
        for (&o, &i) in out.iter().zip(img) {
            if o > 0 && o < 255 {
                let (o, i) = (f32::from(o) - centre, f32::from(i) - centre);
                num += o * i;
                den += i * i;
            }
        }
        num / den
    }

    #[test]
    fn colour_jitter_follows_torchvision_definitions() {
        let img = photo();
        let only = |brightness, contrast, saturation| AugmentConfig {
            brightness,
            contrast,
            saturation,
            scale: [1.0, 1.0],
            ..Default::default()
        };
        for seed in 0..10 {
            // Brightness: every value times one factor in [0.6, 1.4] (a blend with black).
            let mut out = img.clone();
            augment(
                &mut out,
                (9, 7, 3),
                &only(0.4, 0.0, 0.0),
                &mut Rng::new(seed, 0),
            );
            let factor = fit_factor(&img, &out, 0.0);
            assert!((0.55..=1.45).contains(&factor), "factor {factor}");
            for (o, i) in out.iter().zip(&img) {
                let want = (f32::from(*i) * factor).clamp(0.0, 255.0);
                assert!(
                    (f32::from(*o) - want).abs() <= 1.0 + 0.01 * want,
                    "{o} vs {want}"
                );
            }
            // Contrast: a blend with the image's mean luma, the same factor for every value.
            let mut out = img.clone();
            augment(
                &mut out,
                (9, 7, 3),
                &only(0.0, 0.4, 0.0),
                &mut Rng::new(seed, 0),
            );
            let mean = img.chunks_exact(3).map(luma).sum::<f32>() / 63.0;
            let factor = fit_factor(&img, &out, mean);
            assert!((0.55..=1.45).contains(&factor), "factor {factor}");
            for (o, i) in out.iter().zip(&img) {
                let want = (mean + (f32::from(*i) - mean) * factor).clamp(0.0, 255.0);
                assert!((f32::from(*o) - want).abs() <= 1.5, "{o} vs {want}");
            }
            // Saturation: a blend of each pixel with its own grey: its luma is kept.
            let mut out = img.clone();
            augment(
                &mut out,
                (9, 7, 3),
                &only(0.0, 0.0, 0.4),
                &mut Rng::new(seed, 0),
            );
            // (Pixels where a channel was clipped to 0 or 255 lose some luma.)
            for (po, pi) in out.chunks_exact(3).zip(img.chunks_exact(3)) {
                if po.iter().all(|&v| v > 0 && v < 255) {
                    let (lo, li) = (luma(po), luma(pi));
                    assert!((lo - li).abs() <= 1.0, "luma {li} -> {lo}");
                }
            }
            assert_ne!(out, img, "seed {seed}: saturation changed nothing");
        }
    }
}
