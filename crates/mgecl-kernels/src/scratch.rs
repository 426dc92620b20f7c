//! Per-thread buffers: activation buffers kept between calls and the im2col / Winograd
//! scratch, so that a forward pass allocates nothing in the steady state.

use std::cell::RefCell;

thread_local! {
    /// Activation buffers kept by the calling thread between calls. Borrowed only for an
    /// instant, never across other work.
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    /// This thread's im2col / Winograd scratch (at most one chunk's worth).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Most buffers a thread keeps.
const POOL_SIZE: usize = 6;

/// A buffer of exactly `len` values with unspecified contents, reusing this thread's pool.
pub fn take_buffer(len: usize) -> Vec<f32> {
    let reused = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        // The smallest buffer that fits, else the largest (grown below).
        let fits = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity());
        let pick = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
        pick.map(|i| pool.swap_remove(i))
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

/// Returns a buffer to this thread's pool (the smallest is dropped past [`POOL_SIZE`]).
pub fn give_buffer(buffer: Vec<f32>) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.push(buffer);
        if pool.len() > POOL_SIZE {
            let smallest = (0..pool.len()).min_by_key(|&i| pool[i].capacity());
            if let Some(i) = smallest {
                pool.swap_remove(i);
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
