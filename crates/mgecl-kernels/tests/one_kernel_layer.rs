//! Inference and training share this crate's kernels instead of keeping their own: no Rust
//! file elsewhere in the workspace calls the `gemm` crate or defines, on plain `f32` slices, a
//! kernel this crate provides (candle-tensor layers such as training's differentiable
//! `max_pool2x2` are the reference path, not kernels).

use std::path::{Path, PathBuf};

/// Code that belongs to this crate alone, anywhere on a line.
const KERNEL_ONLY: &[&str] = &[
    "gemm::gemm(",
    "fn with_scratch",
    "fn take_buffer",
    "BT_PAIRS: [",
    "AT_TRIPLES: [",
    "struct Mat",
];

/// Functions this crate provides, when defined again on a line that takes `&[f32]`.
const SLICE_KERNELS: &[&str] = &[
    "fn max_pool",
    "fn nchw_to_nhwc",
    "fn nhwc_to_nchw",
    "fn global_avg_pool(",
    "fn add_signed",
    "fn add3_signed",
];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "mgecl-kernels" | "fuzz") {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

#[test]
fn no_other_crate_keeps_its_own_kernels() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["src", "crates", "bindings", "benches", "examples", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.iter().any(|f| f.ends_with("src/model/cpu_fast.rs")),
        "the inference kernels' caller was not found under {root:?}"
    );
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            let own = KERNEL_ONLY.iter().any(|p| line.contains(p));
            let again = line.contains("&[f32]") && SLICE_KERNELS.iter().any(|p| line.contains(p));
            if own || again {
                offences.push(format!("{}: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "kernels outside mgecl-kernels: {offences:#?}"
    );
}
