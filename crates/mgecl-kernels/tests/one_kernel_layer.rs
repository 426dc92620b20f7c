//! Inference and training share this crate's kernels instead of keeping their own: no Rust
//! file elsewhere in the workspace calls the `gemm` crate or defines, on plain `f32` slices, a
//! kernel this crate provides (candle-tensor layers such as training's differentiable
//! `max_pool2x2`, and the NCHW, f32-or-f64 `im2col` custom op behind them, are the reference
//! path, not kernels). Both the inference and the training path call this crate's im2col and
//! Winograd transforms.

use std::path::{Path, PathBuf};

/// Code that belongs to this crate alone, anywhere on a line.
const KERNEL_ONLY: &[&str] = &[
    "gemm::gemm(",
    "fn with_scratch",
    "fn take_buffer",
    "BT_PAIRS: [",
    "AT_TRIPLES: [",
    "struct Mat",
    "fn im2col(",
    "fn transform_kernels",
    "fn input_transform",
    "fn output_transform",
    "fn winograd_input",
    "fn winograd_output",
    "fn winograd_weights",
    "G: [[",
    "WINOGRAD_MIN",
    "WINOGRAD_MAX",
    "fn gemm_u8s8",
    "_dpbusd_",
    "fn quantize_activations",
    "fn im2col_codes",
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

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn no_other_crate_keeps_its_own_kernels() {
    let root = workspace_root();
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

/// Whether `text` calls `mgecl_kernels::{module}::{name}`, by its full path or imported
/// (alone or in a brace group).
fn imports_and_calls(text: &str, module: &str, name: &str) -> bool {
    if text.contains(&format!("mgecl_kernels::{module}::{name}(")) {
        return true;
    }
    let prefix = format!("use mgecl_kernels::{module}::");
    let imported = text.match_indices(&prefix).any(|(at, _)| {
        let statement = &text[at + prefix.len()..];
        let statement = &statement[..statement.find(';').unwrap_or(statement.len())];
        statement
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| word == name)
    });
    imported && text.contains(&format!("{name}("))
}

/// Inference and training run the same im2col and Winograd code: each of their convolution
/// files imports and calls the shared functions.
#[test]
fn inference_and_training_call_the_same_kernels() {
    let root = workspace_root();
    let uses: &[(&str, &[(&str, &str)])] = &[
        (
            "src/model/cpu_fast.rs",
            &[
                ("conv", "im2col"),
                ("winograd", "input_transform"),
                ("winograd", "output_transform"),
                ("winograd", "transform_kernels"),
                ("winograd", "contiguous_planes"),
                ("winograd", "applies"),
            ],
        ),
        (
            "crates/mgecl-train/src/cpu_net/unit.rs",
            &[("conv", "im2col"), ("winograd", "applies")],
        ),
        (
            "crates/mgecl-train/src/cpu_net/winograd.rs",
            &[
                ("winograd", "input_transform"),
                ("winograd", "output_transform"),
                ("winograd", "transform_kernels"),
                ("winograd", "plane"),
            ],
        ),
    ];
    let mut missing = Vec::new();
    for (file, calls) in uses {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (module, name) in *calls {
            if !imports_and_calls(&text, module, name) {
                missing.push(format!("{file}: mgecl_kernels::{module}::{name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not called from mgecl-kernels: {missing:#?}"
    );
}
