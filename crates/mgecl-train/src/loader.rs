//! The background batch loader: batches decoded and augmented on another thread while the
//! network steps.

use crate::error::{Error, Result};

/// A batch ready for the network: normalised NCHW values and labels.
pub struct Batch {
    /// `n * C * H * W` values.
    pub input: Vec<f32>,
    /// Number of images.
    pub n: usize,
    /// Per image: a label (class, or instance group for views).
    pub labels: Vec<usize>,
    /// Per image: the quarter turns it was given, for the rotation head (empty: none).
    pub rotations: Vec<usize>,
    /// Per image: a teacher's class logits, `n * K` values, for distillation (empty: none).
    pub teacher_logits: Vec<f32>,
}

/// Runs `produce(i)` for `i in 0..count` on a background thread, two batches ahead, and
/// `consume` on the calling thread: decoding and augmentation overlap the training step.
///
/// # Errors
/// The first error of `consume`, or of a producer.
pub fn pipelined<T: Send>(
    count: usize,
    produce: impl Fn(usize) -> Result<T> + Sync,
    mut consume: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<T>>(2);
        let produce = &produce;
        s.spawn(move || {
            for i in 0..count {
                if tx.send(produce(i)).is_err() {
                    break;
                }
            }
        });
        for i in 0..count {
            let item = rx
                .recv()
                .map_err(|_| Error::Failed("the batch loader stopped".into()))??;
            consume(i, item)?;
        }
        Ok(())
    })
}
