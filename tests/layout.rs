//! The workspace's Rust code keeps the shape ARCHITECTURE.md draws: in every crate, the modules
//! of each folder depend on one another one way only (no import circle: a change to one never
//! needs the other to be read first), and no file of the core or training crates grows past
//! `MAX_LINES` without saying at its top why; and the CPU kernels live in `mgecl-kernels`
//! alone: inference and training call them instead of keeping their own (candle-tensor
//! layers such as training's differentiable `max_pool2x2`, and the NCHW, f32-or-f64 `im2col`
//! custom op behind them, are the reference path, not kernels).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates' source roots, relative to the repository.
const CRATE_SOURCES: &[&str] = &[
    "src",
    "crates/mgecl-kernels/src",
    "crates/mgecl-train/src",
    "crates/mgecl-cli/src",
    "bindings/c/src",
];

/// Crates whose files are held to `MAX_LINES`.
const SIZE_CHECKED: &[&str] = &["src", "crates/mgecl-kernels/src", "crates/mgecl-train/src"];
/// About 700 lines: a file a reader holds in mind at once.
const MAX_LINES: usize = 720;
/// What a longer file's first lines say, followed by the reason.
const LONG_FILE_REASON: &str = "Longer than 700 lines because";

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The module path of a file below a crate's source root: `task/file.rs` -> `[task, file]`;
/// `lib.rs`, `main.rs` -> `[]`; `task/mod.rs` -> `[task]`.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments (doc links are not dependencies).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a file names through `crate::` and `super::`, as absolute module paths, with
/// `use` groups (`super::{a, b::c}`) expanded.
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let starts = rest.starts_with("crate::") || rest.starts_with("super::");
        if !starts || (i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        // The directory the path starts from.
        let mut base: Vec<String> = Vec::new();
        let mut j = i;
        if rest.starts_with("crate::") {
            j += "crate::".len();
        } else {
            // `module` names a facade (mod.rs) by its folder, so `super` is one level up for
            // either kind of file.
            base = module.to_vec();
            base.pop();
            j += "super::".len();
            while code[j..].starts_with("super::") {
                base.pop();
                j += "super::".len();
            }
        }
        let start = j;
        while j < code.len() && (ident(bytes[j]) || code[j..].starts_with("::")) {
            j += if bytes[j] == b':' { 2 } else { 1 };
        }
        let prefix: Vec<String> = code[start..j]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let mut path = base.clone();
        path.extend(prefix.iter().cloned());
        if code[j..].starts_with('{') {
            let end = code[j..].find('}').map_or(code.len(), |e| j + e);
            for item in code[j + 1..end].split(',') {
                let mut p = path.clone();
                p.extend(
                    item.split("::")
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty() && s != "self"),
                );
                found.push(p);
            }
            i = end;
        } else {
            found.push(path);
            i = j.max(i + 1);
        }
    }
    found
}

/// The modules of one crate (paths of every file) and, per folder, the edges between its
/// entries: `(folder, from, to)`.
type Edges = BTreeSet<(Vec<String>, String, String)>;

fn folder_edges(root: &Path) -> Edges {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(root, f)).collect();
    let mut edges = Edges::new();
    for file in &files {
        let module = module_of(root, file);
        let text = std::fs::read_to_string(file).unwrap();
        for target in references(&module, &code(&text)) {
            // The longest prefix of the path that is a module of the crate.
            let Some(target) = (0..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            // The folder both sit in, and the entries of that folder they belong to. A
            // facade (mod.rs) belongs to its folder, not to an entry of it.
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < module.len() && common < target.len() {
                edges.insert((
                    module[..common].to_vec(),
                    module[common].clone(),
                    target[common].clone(),
                ));
            }
        }
    }
    edges
}

/// A circle among the entries of one folder, if any.
fn find_circle(edges: &Edges) -> Option<Vec<String>> {
    let mut folders: BTreeMap<&Vec<String>, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for (folder, from, to) in edges {
        folders
            .entry(folder)
            .or_default()
            .entry(from)
            .or_default()
            .push(to);
    }
    for (folder, graph) in folders {
        // Depth-first search with colours: 1 = on the stack, 2 = done.
        fn visit<'a>(
            node: &'a str,
            graph: &BTreeMap<&'a str, Vec<&'a str>>,
            colour: &mut BTreeMap<&'a str, u8>,
            stack: &mut Vec<&'a str>,
        ) -> Option<Vec<String>> {
            colour.insert(node, 1);
            stack.push(node);
            for &next in graph.get(node).into_iter().flatten() {
                match colour.get(next) {
                    Some(1) => {
                        let at = stack.iter().position(|&n| n == next).unwrap();
                        let mut circle: Vec<String> =
                            stack[at..].iter().map(|s| s.to_string()).collect();
                        circle.push(next.to_string());
                        return Some(circle);
                    }
                    Some(_) => {}
                    None => {
                        if let Some(c) = visit(next, graph, colour, stack) {
                            return Some(c);
                        }
                    }
                }
            }
            stack.pop();
            colour.insert(node, 2);
            None
        }
        let mut colour = BTreeMap::new();
        for &node in graph.keys() {
            if !colour.contains_key(node) {
                if let Some(circle) = visit(node, &graph, &mut colour, &mut Vec::new()) {
                    let prefix = ["crate".to_string()]
                        .iter()
                        .chain(folder.iter())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("::");
                    return Some(
                        circle
                            .into_iter()
                            .map(|n| format!("{prefix}::{n}"))
                            .collect(),
                    );
                }
            }
        }
    }
    None
}

#[test]
fn the_checker_sees_circles_and_resolves_super() {
    let task_file = vec!["task".to_string(), "file".to_string()];
    let refs = references(
        &task_file,
        "use super::{Task, label::Row};\ncrate::model::X",
    );
    assert_eq!(
        refs,
        vec![
            vec!["task".to_string(), "Task".into()],
            vec!["task".into(), "label".into(), "Row".into()],
            vec!["model".into(), "X".into()],
        ]
    );
    let mut edges = Edges::new();
    edges.insert((vec![], "a".into(), "b".into()));
    edges.insert((vec![], "b".into(), "c".into()));
    assert_eq!(find_circle(&edges), None);
    edges.insert((vec![], "c".into(), "a".into()));
    assert!(find_circle(&edges).is_some());
}

#[test]
fn no_import_circle_in_any_crate() {
    let mut circles = Vec::new();
    for source in CRATE_SOURCES {
        let root = repository().join(source);
        let edges = folder_edges(&root);
        if *source == "src" {
            assert!(
                edges.len() > 20,
                "the core's module references were not found"
            );
        }
        if let Some(circle) = find_circle(&edges) {
            circles.push(format!("{source}: {}", circle.join(" -> ")));
        }
    }
    assert!(
        circles.is_empty(),
        "modules import each other: {circles:#?}"
    );
}

#[test]
fn long_files_say_why() {
    let mut offences = Vec::new();
    for source in SIZE_CHECKED {
        let mut files = Vec::new();
        rust_files(&repository().join(source), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines = text.lines().count();
            let said = text.lines().take(12).any(|l| l.contains(LONG_FILE_REASON));
            if lines > MAX_LINES && !said {
                let name = file.strip_prefix(repository()).unwrap_or(&file).display();
                offences.push(format!("{name} ({lines} lines)"));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "files over {MAX_LINES} lines without \"{LONG_FILE_REASON} ...\" in their first lines: \
         {offences:#?}"
    );
}

/// Code that belongs to `mgecl-kernels` alone, anywhere on a line.
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
    "fn convolve_tile_rows",
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

/// Functions `mgecl-kernels` provides, when defined again on a line that takes `&[f32]`.
const SLICE_KERNELS: &[&str] = &[
    "fn max_pool",
    "fn nchw_to_nhwc",
    "fn nhwc_to_nchw",
    "fn global_avg_pool(",
    "fn add_signed",
    "fn add3_signed",
];

fn workspace_rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "mgecl-kernels" | "fuzz") {
                workspace_rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

#[test]
fn no_other_crate_keeps_its_own_kernels() {
    let root = repository();
    let mut files = Vec::new();
    for dir in ["src", "crates", "bindings", "benches", "examples", "tests"] {
        workspace_rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.iter().any(|f| f.ends_with("src/model/cpu_fast.rs")),
        "the inference kernels' caller was not found under {root:?}"
    );
    let mut offences = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("tests/layout.rs")) {
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
/// files imports and calls the shared functions (so neither drifts into a copy of its own).
#[test]
fn inference_and_training_call_the_same_kernels() {
    let root = repository();
    let uses: &[(&str, &[(&str, &str)])] = &[
        (
            "src/model/cpu_fast.rs",
            &[
                ("conv", "im2col"),
                ("winograd", "convolve_tile_rows"),
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
                ("winograd", "convolve_tile_rows"),
                ("winograd", "input_transform"),
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
