//! Buffers kept between calls: one process-wide pool of activation buffers (f32 values, and
//! the int8 engine's codes), and each thread's im2col / Winograd scratch, so that a forward
//! pass allocates nothing in the steady state.
//!
//! What the pool keeps is bounded ([`pool_limit`], default [`DEFAULT_POOL_LIMIT`]): a buffer
//! given back beyond it is freed. [`release_all`] frees the pool, the calling thread's scratch
//! and that of rayon's threads, and hands the memory back to the system; it also runs by
//! itself once no buffer has been used for [`idle_release`] (default
//! [`DEFAULT_IDLE_RELEASE`]), on a thread started by the first use.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// Default of [`pool_limit`]: 256 MiB, room for the activation buffers of a few threads
/// embedding batches of 32 photos.
pub const DEFAULT_POOL_LIMIT: usize = 256 << 20;

/// Default of [`idle_release`]: the kept buffers are released after 30 s without a forward
/// pass, long enough that a steady stream of requests never pays for it.
pub const DEFAULT_IDLE_RELEASE: Duration = Duration::from_secs(30);

/// Most buffers the pool keeps (the smallest is freed past it): enough for the handful of
/// buffers each of a few concurrent passes gives back.
const POOL_BUFFERS: usize = 32;

/// Bytes the pool may keep.
static POOL_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_POOL_LIMIT);
/// Bytes the pool keeps now (also read without the lock).
static POOLED: AtomicUsize = AtomicUsize::new(0);
/// The kept activation buffers (f32 values, and int8 activation codes). Locked only for an
/// instant, never across other work.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
static CODE_POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// [`idle_release`] in milliseconds; 0: never.
static IDLE_RELEASE_MS: AtomicU64 = AtomicU64::new(DEFAULT_IDLE_RELEASE.as_millis() as u64);
/// When a buffer was last taken, in milliseconds since [`clock`]'s start.
static LAST_USE_MS: AtomicU64 = AtomicU64::new(0);
/// Whether buffers were used since the last release (so that an idle process is not woken
/// to release nothing, again and again).
static USED_SINCE_RELEASE: AtomicBool = AtomicBool::new(false);
static IDLE_THREAD: Once = Once::new();
/// The idle-release thread, to wake when the idle time changes.
static IDLE_THREAD_HANDLE: OnceLock<std::thread::Thread> = OnceLock::new();

thread_local! {
    /// This thread's im2col / Winograd scratch (at most one chunk's worth).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The int8 engine's: im2col rows of activation codes.
    static CODE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn bytes<T>(buffer: &Vec<T>) -> usize {
    buffer.capacity() * std::mem::size_of::<T>()
}

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What a pooled buffer holds: f32 values or int8 activation codes, each type in a pool of
/// its own under the one [`pool_limit`].
pub trait Pooled: Copy + Default + Send + 'static {
    /// The pool of this type, also after a panic elsewhere while it was locked (it holds
    /// only buffers).
    #[doc(hidden)]
    fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<Self>>>;
}

impl Pooled for f32 {
    fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<f32>>> {
        POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Pooled for u8 {
    fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
        CODE_POOL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Bytes the activation pool may keep.
pub fn pool_limit() -> usize {
    POOL_LIMIT.load(Ordering::Relaxed)
}

/// Sets [`pool_limit`] (0: keep nothing between calls). Buffers already kept stay until used
/// or released.
pub fn set_pool_limit(bytes: usize) {
    POOL_LIMIT.store(bytes, Ordering::Relaxed);
}

/// Bytes the activation pool keeps now.
pub fn pooled_bytes() -> usize {
    POOLED.load(Ordering::Relaxed)
}

/// How long buffers may go unused before they are released ([`release_all`]); `None`: never.
pub fn idle_release() -> Option<Duration> {
    match IDLE_RELEASE_MS.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// Sets [`idle_release`] (`None`, or zero: never). Process-wide; takes effect at once (the
/// release thread, asleep for the old time, is woken).
pub fn set_idle_release(after: Option<Duration>) {
    let ms = after.map_or(0, |d| d.as_millis().clamp(1, u64::MAX as u128) as u64);
    IDLE_RELEASE_MS.store(ms, Ordering::Relaxed);
    if let Some(thread) = IDLE_THREAD_HANDLE.get() {
        thread.unpark();
    }
}

/// Notes a use of the buffers, for the idle release; starts its thread on the first use.
fn note_use() {
    LAST_USE_MS.store(clock(), Ordering::Relaxed);
    USED_SINCE_RELEASE.store(true, Ordering::Relaxed);
    IDLE_THREAD.call_once(|| {
        // Without the thread nothing is released by itself; release_all still works.
        let spawned = std::thread::Builder::new()
            .name("mgecl-idle-release".into())
            .spawn(release_when_idle);
        if let Ok(handle) = spawned {
            let _ = IDLE_THREAD_HANDLE.set(handle.thread().clone());
        }
    });
}

/// The idle-release thread: wakes when the buffers could have become idle (or the idle time
/// changes), releases them if they have; sleeps while the release is off.
fn release_when_idle() {
    loop {
        let Some(idle) = idle_release() else {
            std::thread::park_timeout(Duration::from_secs(1));
            continue;
        };
        let idle_ms = idle.as_millis() as u64;
        let since = clock().saturating_sub(LAST_USE_MS.load(Ordering::Relaxed));
        if since >= idle_ms && USED_SINCE_RELEASE.load(Ordering::Relaxed) {
            release_all();
        }
        let wait = if since >= idle_ms {
            idle_ms
        } else {
            idle_ms - since
        };
        std::thread::park_timeout(Duration::from_millis(wait.max(1)));
    }
}

/// A buffer of exactly `len` values with unspecified contents, reusing the pool's.
pub fn take_buffer<T: Pooled>(len: usize) -> Vec<T> {
    note_use();
    let reused = {
        let mut kept = T::pool();
        // The smallest buffer that fits, else the largest (grown below).
        let fits = (0..kept.len())
            .filter(|&i| kept[i].capacity() >= len)
            .min_by_key(|&i| kept[i].capacity());
        let pick = fits.or_else(|| (0..kept.len()).max_by_key(|&i| kept[i].capacity()));
        pick.map(|i| {
            let buffer = kept.swap_remove(i);
            POOLED.fetch_sub(bytes(&buffer), Ordering::Relaxed);
            buffer
        })
    };
    let mut buffer = reused.unwrap_or_default();
    if buffer.capacity() < len {
        // Too small: free it before allocating, rather than reallocating (which would hold
        // both and copy the old contents).
        buffer = Vec::new();
    }
    buffer.resize(len, T::default());
    buffer
}

/// Returns a buffer to the pool: freed instead when the pool would pass [`pool_limit`]; the
/// smallest is freed past 32 buffers (`POOL_BUFFERS`).
pub fn give_buffer<T: Pooled>(buffer: Vec<T>) {
    let size = bytes(&buffer);
    let mut kept = T::pool();
    if POOLED.load(Ordering::Relaxed).saturating_add(size) > pool_limit() {
        return;
    }
    POOLED.fetch_add(size, Ordering::Relaxed);
    kept.push(buffer);
    if kept.len() > POOL_BUFFERS {
        if let Some(i) = (0..kept.len()).min_by_key(|&i| kept[i].capacity()) {
            let smallest = kept.swap_remove(i);
            POOLED.fetch_sub(bytes(&smallest), Ordering::Relaxed);
        }
    }
}

/// Runs `f` on a scratch slice of `len` values (unspecified contents), reusing this thread's
/// scratch buffer. Re-entrant: a nested call (rayon may run another chunk on this thread while
/// gemm waits) gets a fresh buffer, and the larger of the two is kept.
pub fn with_scratch(len: usize, f: impl FnOnce(&mut [f32])) {
    with_thread_buffer(&SCRATCH, len, f);
}

/// [`with_scratch`] for the int8 engine: `len` bytes (im2col rows of activation codes) of
/// unspecified contents.
pub fn with_code_scratch(len: usize, f: impl FnOnce(&mut [u8])) {
    with_thread_buffer(&CODE_SCRATCH, len, f);
}

fn with_thread_buffer<T: Copy + Default + 'static>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]),
) {
    note_use();
    let mut buffer = key.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buffer.capacity() < len {
        buffer = Vec::new();
    }
    buffer.resize(len, T::default());
    f(&mut buffer);
    key.with(|s| {
        let mut kept = s.borrow_mut();
        if buffer.capacity() > kept.capacity() {
            *kept = buffer;
        }
    });
}

/// Frees the calling thread's scratch.
pub fn release_scratch() {
    SCRATCH.with(|s| *s.borrow_mut() = Vec::new());
    CODE_SCRATCH.with(|s| *s.borrow_mut() = Vec::new());
}

/// Frees what is kept between calls: the activation pool, the calling thread's scratch and
/// that of rayon's global pool, whose threads run the convolutions; then hands the freed
/// memory back to the system. The next pass allocates again. Scratch of other threads that
/// ran convolutions themselves stays until they exit.
pub fn release_all() {
    USED_SINCE_RELEASE.store(false, Ordering::Relaxed);
    fn empty<T: Pooled>() {
        let freed = {
            let mut kept = T::pool();
            POOLED.fetch_sub(kept.iter().map(bytes).sum(), Ordering::Relaxed);
            std::mem::take(&mut *kept)
        };
        drop(freed);
    }
    empty::<f32>();
    empty::<u8>();
    release_scratch();
    rayon::broadcast(|_| release_scratch());
    return_freed_memory();
}

/// Hands memory the allocator keeps after frees back to the system. glibc raises its mmap
/// threshold after large frees, so buffers of tens of MB end up in per-thread arenas that
/// `free` does not shrink; `malloc_trim` does. Other allocators return such memory themselves.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim takes a byte count and only releases free memory.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test for the process-wide pool, its limit and its release, so that no other test
    /// runs beside it.
    #[test]
    fn the_pool_stays_within_its_limit_and_is_released_on_call_and_when_idle() {
        set_idle_release(None);
        release_all();
        assert_eq!(pooled_bytes(), 0);
        let a = take_buffer::<f32>(1000);
        give_buffer(a);
        assert_eq!(pooled_bytes(), 4000);
        // Codes have a pool of their own under the same limit, counted in bytes.
        give_buffer(take_buffer::<u8>(1000));
        assert_eq!(pooled_bytes(), 5000);
        assert_eq!(take_buffer::<u8>(10).capacity(), 1000);
        assert_eq!(pooled_bytes(), 4000);
        // A buffer that would pass the limit is freed, not kept: capacity counts, so these
        // need not be touched (never resident).
        set_pool_limit(1 << 20);
        give_buffer(Vec::<f32>::with_capacity(1 << 20));
        assert_eq!(pooled_bytes(), 4000);
        give_buffer(Vec::<f32>::with_capacity(1000));
        assert_eq!(pooled_bytes(), 8000);
        // Taking reuses (and uncounts) the smallest fit.
        let b = take_buffer::<f32>(900);
        assert_eq!((b.capacity(), pooled_bytes()), (1000, 4000));
        // One pool for every thread: a buffer given back on one is taken on another.
        std::thread::spawn(move || give_buffer(b)).join().unwrap();
        assert_eq!(pooled_bytes(), 8000);
        let c = std::thread::spawn(|| take_buffer::<f32>(1000).capacity())
            .join()
            .unwrap();
        assert_eq!((c, pooled_bytes()), (1000, 4000));
        with_scratch(10, |s| s.fill(1.0));
        release_all();
        assert_eq!(pooled_bytes(), 0);
        // Released by itself once unused for the idle time.
        set_idle_release(Some(Duration::from_millis(50)));
        give_buffer(take_buffer::<f32>(1000));
        give_buffer(take_buffer::<u8>(1000));
        assert_eq!(pooled_bytes(), 5000);
        let start = Instant::now();
        while pooled_bytes() != 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pooled_bytes(), 0, "not released within 5 s of idling");
        set_idle_release(Some(DEFAULT_IDLE_RELEASE));
        set_pool_limit(DEFAULT_POOL_LIMIT);
    }
}
