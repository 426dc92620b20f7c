//! Replays every committed fuzz input (fuzz/corpus/<target>/ and the crash reproducers in
//! fuzz/regressions/<target>/) through the fuzz targets' own code (fuzz/bodies.rs): what
//! once crashed stays fixed, on every `cargo test`, without cargo-fuzz. Outside fuzzing the
//! task checksum is verified, so mutated task files stop there.

#[path = "../../../fuzz/bodies.rs"]
mod bodies;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{} panics", path.display());
            count += 1;
        }
    }
    println!("{target}: {count} inputs replayed");
    assert!(count > 0, "no corpus for {target}");
}

#[test]
fn convert_checkpoint_corpus() {
    replay("convert_checkpoint", bodies::convert_checkpoint);
}

#[test]
fn model_from_bytes_corpus() {
    replay("model_from_bytes", bodies::model_from_bytes);
}

#[test]
fn image_preprocess_corpus() {
    replay("image_preprocess", bodies::image_preprocess);
}

#[test]
fn task_from_bytes_corpus() {
    replay("task_from_bytes", bodies::task_from_bytes);
}

#[test]
fn episodes_parse_corpus() {
    replay("episodes_parse", bodies::episodes_parse);
}
