//! cargo-fuzz target: `bodies::task_from_bytes` (fuzz/bodies.rs) on each input.
#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::task_from_bytes(data));
