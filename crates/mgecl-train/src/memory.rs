//! The memory of a training step, checked against a limit before training starts: a step
//! keeps every activation of its batch for the backward pass, so a batch size, input size or
//! width that a machine cannot hold is refused with the need and the limit, not found out by
//! the kernel's out-of-memory killer an hour later.

use mgecl::internals::EncoderSpec;

use crate::error::{Error, Result};

/// Default of [`RunConfig::max_step_bytes`](crate::RunConfig::max_step_bytes): 16 GiB, room
/// for every recipe in `research/` (the photo model's pretraining step of 64 images at 84x84
/// needs about 1.5 GiB, its 5-way 1-shot episodes with 4 views 2.3 GiB; RFS's full-width
/// ResNet-12 in a 5-way 5-shot episode with 4 views, about 9.3 GiB).
pub const DEFAULT_MAX_STEP_BYTES: u64 = 16 << 30;

/// The f32 values one image of a CPU training step holds: the input twice; per block, each
/// unit's convolution output, BatchNorm output and activation, the shortcut's two and the
/// residual sum, and the pooled output (all kept for the backward pass); and two gradients
/// of the largest block output alive at once during the backward pass. Measured peaks, per
/// image (the growth of the peak resident memory from batch 8 to batch 32, `mgecl pretrain`
/// at 84x84 RGB), are 3-8% below it: ResNet-12 64-640 11.8 M values (estimate 12.4 M),
/// ResNet-12 16-64 2.61 M (2.68 M), Conv-4 2.67 M (2.89 M). Saturates rather than overflows.
pub fn step_values(spec: &EncoderSpec, (h, w): (usize, usize)) -> u64 {
    let input = (spec.in_channels as u64).saturating_mul((h as u64).saturating_mul(w as u64));
    let (mut h, mut w) = (h as u64, w as u64);
    let mut kept = input.saturating_mul(2);
    let mut largest = 0u64;
    for (block, &c_out) in spec.blocks().iter().zip(&spec.widths) {
        let out = h.saturating_mul(w).saturating_mul(c_out as u64);
        let mut tensors = 3 * block.units.len() as u64;
        if block.shortcut.is_some() {
            tensors += 3;
        }
        kept = kept.saturating_add(out.saturating_mul(tensors));
        if block.pool {
            kept = kept.saturating_add(out / 4);
            (h, w) = (h / 2, w / 2);
        }
        largest = largest.max(out);
    }
    kept.saturating_add(largest.saturating_mul(2))
}

/// Checks that a step of `images` images of `image_size` fits in `limit` bytes.
///
/// # Errors
/// [`mgecl::Error::LimitExceeded`] naming the need, the limit and the largest step that fits.
pub fn check_step(
    spec: &EncoderSpec,
    image_size: (usize, usize),
    images: usize,
    limit: u64,
    what: &str,
) -> Result<()> {
    let per_image = step_values(spec, image_size).saturating_mul(4);
    let need = per_image.saturating_mul(images as u64);
    if need <= limit {
        return Ok(());
    }
    let mib = |b: u64| b.div_ceil(1 << 20);
    Err(Error::Core(mgecl::Error::LimitExceeded(format!(
        "{what} of {images} images at {}x{} with this {} (widths {:?}) needs about {} MiB \
         ({} MiB per image), over the limit of {} MiB (--max-memory, \
         RunConfig::max_step_bytes); {} images per step fit",
        image_size.0,
        image_size.1,
        spec.arch,
        spec.widths,
        mib(need),
        mib(per_image),
        mib(limit),
        limit / per_image.max(1),
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgecl::model::Architecture;

    fn conv4() -> EncoderSpec {
        EncoderSpec {
            arch: Architecture::Conv4,
            widths: vec![2; 4],
            in_channels: 1,
        }
    }

    #[test]
    fn step_values_by_hand() {
        // Conv-4, 1 channel, 8x8, width 2: blocks at 8x8, 4x4, 2x2, 1x1 of 2 channels, each
        // 3 tensors plus a pooled quarter; input 64 twice; two gradients of the first block.
        let spec = conv4();
        // Conv-4 pools after its first three blocks only.
        let blocks: u64 = [128u64, 32, 8].iter().map(|&o| 3 * o + o / 4).sum::<u64>() + 3 * 2;
        assert_eq!(step_values(&spec, (8, 8)), 2 * 64 + blocks + 2 * 128);
        // ResNet-12, 3 channels, 16x16, widths 1..4: 3 units and a shortcut, 12 tensors per
        // block (the sum included) plus the pooled quarter.
        let spec = EncoderSpec {
            arch: Architecture::ResNet12,
            widths: vec![1, 2, 3, 4],
            in_channels: 3,
        };
        let outs = [256u64, 2 * 64, 3 * 16, 4 * 4];
        let blocks: u64 = outs.iter().map(|&o| 12 * o + o / 4).sum();
        assert_eq!(step_values(&spec, (16, 16)), 2 * 768 + blocks + 2 * 256);
    }

    #[test]
    fn a_step_over_the_limit_is_refused_naming_what_fits() {
        let spec = conv4();
        let per_image = step_values(&spec, (8, 8)) * 4;
        assert!(check_step(&spec, (8, 8), 10, 10 * per_image, "a step").is_ok());
        let err = check_step(&spec, (8, 8), 11, 10 * per_image, "a step").unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::Core(mgecl::Error::LimitExceeded(_))),
            "{text}"
        );
        assert!(text.contains("a step of 11 images at 8x8"), "{text}");
        assert!(text.contains("10 images per step fit"), "{text}");
    }
}
