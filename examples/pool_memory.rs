//! What an app's threads keep after embedding: 16 threads each embed one batch of 32
//! (preprocessed, random) images, then stay alive and idle while this process reads its
//! resident memory: at once, after 2 s idle (the idle release set to 1 s), and after an
//! explicit `mgecl::release_buffers()`. Prints one JSON line. `unbounded` lifts the limit on
//! the pool and turns the idle release off (the behaviour before either existed), for
//! comparison; `scripts/bench/pool_memory.sh` runs both.
//!
//!     cargo run --release --example pool_memory -- MODEL [bounded|unbounded]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use mgecl::{LoadOptions, Model};

const THREADS: usize = 16;
const BATCH: usize = 32;

/// A field of /proc/self/status in MiB (VmRSS: resident now, VmHWM: peak).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .map_or(f64::NAN, |kb: f64| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        return Err("usage: pool_memory MODEL [bounded|unbounded]".into());
    };
    let bounded = match args.get(1).map(String::as_str) {
        None | Some("bounded") => true,
        Some("unbounded") => false,
        Some(other) => return Err(format!("unknown mode {other:?}").into()),
    };
    if bounded {
        mgecl::set_buffer_idle_release(Some(Duration::from_secs(1)));
    } else {
        mgecl::set_buffer_pool_limit(usize::MAX);
        mgecl::set_buffer_idle_release(None);
    }
    let model = Arc::new(Model::load(path, &LoadOptions::default())?);
    let (c, h, w) = model.preprocessor().input_shape();
    let loaded = status_mib("VmRSS:");
    // Two rendezvous: all embedded; all measured (the threads stay alive until then).
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (model, barrier) = (model.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut state = 0x9e37_79b9_u32.wrapping_mul(t as u32 + 1);
                let values: Vec<f32> = (0..BATCH * c * h * w)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        (state as f32 / u32::MAX as f32 - 0.5) * 3.4
                    })
                    .collect();
                let features = model.embed_preprocessed(&values).expect("embeds");
                drop((values, features));
                barrier.wait();
                barrier.wait();
            })
        })
        .collect();
    barrier.wait();
    let idle = status_mib("VmRSS:");
    let pooled = mgecl::pooled_buffer_bytes() as f64 / (1 << 20) as f64;
    std::thread::sleep(Duration::from_secs(2));
    let idle_2s = status_mib("VmRSS:");
    let pooled_2s = mgecl::pooled_buffer_bytes() as f64 / (1 << 20) as f64;
    mgecl::release_buffers();
    let released = status_mib("VmRSS:");
    barrier.wait();
    for t in threads {
        t.join().map_err(|_| "a thread panicked")?;
    }
    println!(
        "{{\"mode\": \"{}\", \"threads\": {THREADS}, \"batch\": {BATCH}, \"rss_mib_loaded\": {loaded:.0}, \"rss_mib_peak\": {:.0}, \"rss_mib_idle\": {idle:.0}, \"pooled_mib_idle\": {pooled:.0}, \"rss_mib_idle_2s\": {idle_2s:.0}, \"pooled_mib_idle_2s\": {pooled_2s:.0}, \"rss_mib_after_release\": {released:.0}}}",
        if bounded { "bounded" } else { "unbounded" },
        status_mib("VmHWM:"),
    );
    Ok(())
}
