//! cargo-fuzz target: `bodies::convert_checkpoint` (fuzz/bodies.rs) on each input.
#![no_main]

// Each target uses one body of the shared file.
#[allow(dead_code)]
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::convert_checkpoint(data));
