//! cargo-fuzz target: `bodies::episodes_parse` (fuzz/bodies.rs) on each input.
#![no_main]

// Each target uses one body of the shared file.
#[allow(dead_code)]
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::episodes_parse(data));
