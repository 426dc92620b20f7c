//! cargo-fuzz target: `bodies::model_from_bytes` (fuzz/bodies.rs) on each input.
#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::model_from_bytes(data));
