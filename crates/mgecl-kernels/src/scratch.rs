//! Per-thread buffers: activation buffers kept between calls and the im2col / Winograd
//! scratch, so that a forward pass allocates nothing in the steady state.
//!
//! What the pools keep is bounded in total, across threads ([`pool_limit`], default
//! [`DEFAULT_POOL_LIMIT`]): a buffer given back beyond it is freed. [`release_thread`] frees a
//! thread's buffers at once; a thread's buffers are also freed when it exits.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Default of [`pool_limit`]: 256 MiB, room for the activation buffers of a few threads
/// embedding batches of 32 photos.
pub const DEFAULT_POOL_LIMIT: usize = 256 << 20;

/// Bytes the activation pools of all threads may keep.
static POOL_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_POOL_LIMIT);
/// Bytes the activation pools of all threads keep now.
static POOLED: AtomicUsize = AtomicUsize::new(0);

/// One thread's kept activation buffers; what it holds is counted in [`POOLED`], and given back
/// to the count when the thread exits.
struct Pool(Vec<Vec<f32>>);

impl Pool {
    fn remove(&mut self, i: usize) -> Vec<f32> {
        let buffer = self.0.swap_remove(i);
        POOLED.fetch_sub(bytes(&buffer), Ordering::Relaxed);
        buffer
    }

    fn clear(&mut self) {
        while !self.0.is_empty() {
            drop(self.remove(0));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.clear();
    }
}

thread_local! {
    /// Activation buffers kept by the calling thread between calls. Borrowed only for an
    /// instant, never across other work.
    static POOL: RefCell<Pool> = const { RefCell::new(Pool(Vec::new())) };
    /// This thread's im2col / Winograd scratch (at most one chunk's worth).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Most buffers a thread keeps.
const POOL_SIZE: usize = 6;

fn bytes(buffer: &Vec<f32>) -> usize {
    buffer.capacity() * std::mem::size_of::<f32>()
}

/// Bytes the activation pools of all threads may keep.
pub fn pool_limit() -> usize {
    POOL_LIMIT.load(Ordering::Relaxed)
}

/// Sets [`pool_limit`] (0: keep nothing between calls). Buffers already kept stay until used
/// or released.
pub fn set_pool_limit(bytes: usize) {
    POOL_LIMIT.store(bytes, Ordering::Relaxed);
}

/// Bytes the activation pools of all threads keep now.
pub fn pooled_bytes() -> usize {
    POOLED.load(Ordering::Relaxed)
}

/// A buffer of exactly `len` values with unspecified contents, reusing this thread's pool.
pub fn take_buffer(len: usize) -> Vec<f32> {
    let reused = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        // The smallest buffer that fits, else the largest (grown below).
        let kept = &pool.0;
        let fits = (0..kept.len())
            .filter(|&i| kept[i].capacity() >= len)
            .min_by_key(|&i| kept[i].capacity());
        let pick = fits.or_else(|| (0..kept.len()).max_by_key(|&i| kept[i].capacity()));
        pick.map(|i| pool.remove(i))
    });
    let mut buffer = reused.unwrap_or_default();
    if buffer.capacity() < len {
        // Too small: free it before allocating, rather than reallocating (which would hold
        // both and copy the old contents).
        buffer = Vec::new();
    }
    buffer.resize(len, 0.0);
    buffer
}

/// Returns a buffer to this thread's pool: freed instead when the pools would pass
/// [`pool_limit`]; the smallest is freed past [`POOL_SIZE`] buffers.
pub fn give_buffer(buffer: Vec<f32>) {
    let size = bytes(&buffer);
    let admitted = POOLED
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |kept| {
            kept.checked_add(size)
                .filter(|&total| total <= pool_limit())
        })
        .is_ok();
    if !admitted {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.0.push(buffer);
        if pool.0.len() > POOL_SIZE {
            let kept = &pool.0;
            let smallest = (0..kept.len()).min_by_key(|&i| kept[i].capacity());
            if let Some(i) = smallest {
                drop(pool.remove(i));
            }
        }
    });
}

/// Runs `f` on a scratch slice of `len` values (unspecified contents), reusing this thread's
/// scratch buffer. Re-entrant: a nested call (rayon may run another chunk on this thread while
/// gemm waits) gets a fresh buffer, and the larger of the two is kept.
pub fn with_scratch(len: usize, f: impl FnOnce(&mut [f32])) {
    let mut buffer = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buffer.capacity() < len {
        buffer = Vec::new();
    }
    buffer.resize(len, 0.0);
    f(&mut buffer);
    SCRATCH.with(|s| {
        let mut kept = s.borrow_mut();
        if buffer.capacity() > kept.capacity() {
            *kept = buffer;
        }
    });
}

/// Frees the calling thread's kept buffers (activations and scratch).
pub fn release_thread() {
    POOL.with(|pool| pool.borrow_mut().clear());
    SCRATCH.with(|s| *s.borrow_mut() = Vec::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test for the process-wide count and limit, so no other test runs beside it.
    #[test]
    fn pools_stay_within_the_limit_and_release_frees_them() {
        let start = pooled_bytes();
        let a = take_buffer(1000);
        give_buffer(a);
        assert_eq!(pooled_bytes(), start + 4000);
        // A buffer that would pass the limit is freed, not kept: capacity counts, so these
        // need not be touched (never resident).
        set_pool_limit(start + (1 << 20));
        give_buffer(Vec::with_capacity(1 << 20));
        assert_eq!(pooled_bytes(), start + 4000);
        give_buffer(Vec::with_capacity(1000));
        assert_eq!(pooled_bytes(), start + 8000);
        // Taking reuses (and uncounts) the smallest fit.
        let b = take_buffer(900);
        assert_eq!((b.capacity(), pooled_bytes()), (1000, start + 4000));
        give_buffer(b);
        with_scratch(10, |s| s.fill(1.0));
        release_thread();
        assert_eq!(pooled_bytes(), start);
        // A thread's pool is uncounted when it exits.
        std::thread::spawn(|| give_buffer(vec![0.0; 10]))
            .join()
            .unwrap();
        assert_eq!(pooled_bytes(), start);
        set_pool_limit(DEFAULT_POOL_LIMIT);
    }
}
