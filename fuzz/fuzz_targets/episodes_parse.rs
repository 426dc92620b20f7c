//! cargo-fuzz target: `bodies::episodes_parse` (fuzz/bodies.rs) on each input.
#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::episodes_parse(data));
