//! The C ABI from C and C++: compiles `tests/c/capi_test.c` (every convention of the
//! header's preamble, 8 threads on one model, resource limits), `tests/c/stress_test.c` (8 threads
//! cycling through the task life cycle) and the examples with `-Wall -Wextra -Werror` against
//! `include/mgecl.h` and the library cargo built next to this test (static and dynamic), runs
//! them on the Conv-4 fixture and checks their output. The panic test builds the library once
//! more with the `test-hooks` feature into `target/capi-hooks` (only the C library is
//! recompiled: everything else is linked in from the release build).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (C sources, fixtures and the header live there).
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `cargo build --release -p mgecl-c -p mgecl-cli` with `features` into `target_dir`. The CLI is
/// named too so that cargo resolves the dependencies' features as `cargo test` at the root
/// does (clap's derive turns on `syn/full`, indicatif `once_cell/default`): `-p mgecl-c` alone
/// resolves a different set and recompiles nearly the whole dependency tree. The CLI itself is
/// already built by then (its tests run it), so only the C library is compiled.
fn build_c_library(target_dir: &Path, features: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root())
        .args(["build", "--release", "-p", "mgecl-c", "-p", "mgecl-cli"])
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR");
    if !features.is_empty() {
        let qualified: Vec<String> = features.iter().map(|f| format!("mgecl-c/{f}")).collect();
        command.arg("--features").arg(qualified.join(","));
    }
    let result = command.output().unwrap();
    assert!(
        result.status.success(),
        "building the C library ({features:?}) failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// `target/release/deps`: this test runs from there, and that is where cargo puts
/// `libmgecl.so` and `libmgecl.a` (works with any `CARGO_TARGET_DIR`). `cargo test` does not
/// build a library that is only a cdylib and a staticlib (no test can link it), so the first
/// call builds it: `cargo build --release -p mgecl-c` into this same target folder, where
/// every dependency is already built.
fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let deps = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let target = deps.parent().unwrap().parent().unwrap();
        build_c_library(target, &[]);
        deps
    })
    .clone()
}

/// `target/release`.
fn release_dir() -> PathBuf {
    lib_dir().parent().unwrap().to_path_buf()
}

fn out_dir() -> PathBuf {
    let dir = release_dir().join("c-api-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Native libraries a static libmgecl needs on Linux (`--print native-static-libs`).
const STATIC_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

#[derive(Clone, Copy)]
enum Link<'a> {
    Dynamic(&'a Path),
    Static(&'a Path),
}

/// Compiles `sources` with `compiler` into `out_dir()/name`, warnings as errors.
fn compile(
    compiler: &str,
    std: &str,
    sources: &[&str],
    name: &str,
    link: Link<'_>,
    extra: &[&str],
) -> PathBuf {
    let output = out_dir().join(name);
    let mut cmd = Command::new(compiler);
    cmd.current_dir(root())
        .arg(std)
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g"])
        .args(["-Iinclude", "-Ibindings/cpp"])
        .args(extra)
        .args(sources)
        .arg("-o")
        .arg(&output);
    match link {
        Link::Dynamic(dir) => {
            cmd.arg(format!("-L{}", dir.display()))
                .arg("-lmgecl")
                .arg(format!("-Wl,-rpath,{}", dir.display()))
                .args(["-pthread", "-lm"]);
        }
        Link::Static(dir) => {
            cmd.arg(dir.join("libmgecl.a")).args(STATIC_LIBS);
        }
    }
    let result = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        result.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    output
}

/// Runs a compiled program; returns its stdout, failing with everything it printed.
fn run(program: &Path, args: &[PathBuf]) -> String {
    // cargo's LD_LIBRARY_PATH lists target/release before target/release/deps: a stale
    // libmgecl.so left there by an earlier `cargo build` would win over the rpath.
    let result = Command::new(program)
        .env_remove("LD_LIBRARY_PATH")
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    assert!(
        result.status.success(),
        "{} failed ({}):\n{stdout}\n{}",
        program.display(),
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    stdout
}

fn data(name: &str) -> PathBuf {
    root().join("tests/data").join(name)
}

fn capi_test_args(tag: &str) -> Vec<PathBuf> {
    let tmp = out_dir().join(format!("tmp-{tag}"));
    std::fs::create_dir_all(&tmp).unwrap();
    vec![
        data("conv4_gray.safetensors"),
        data("conv4_gray_inputs"),
        tmp,
    ]
}

fn check_capi_test_output(stdout: &str) {
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout
            .contains("threads: 8 x 10 iterations, 0 errors, 0 results differing from one thread"),
        "{stdout}"
    );
    for line in [
        "limits: image side, image bytes, embed bytes, classes, rows enforced",
        "struct versions: older layouts read with defaults, newer ones refused",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    for line in [
        "0.png -> zero",
        "1.png -> zero",
        "2.png -> two",
        "3.png -> two",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    check_transductive_output(stdout);
}

/// What the Rust API answers for capi_test's transductive batch.
struct RustTransductive {
    /// Per image: class index, probability, known-probability.
    answers: Vec<(usize, f64, f64)>,
    /// The same with `transductive: false`.
    inductive: Vec<(usize, f64, f64)>,
    /// `label_features` as CSV (review below 0.8, 2 to label next, paths `i.png`).
    csv: String,
    /// `label_next` of all four rows: row, score.
    next: Vec<(usize, f64)>,
}

/// capi_test's transductive task in Rust: default options with `transductive`, image 0 ->
/// "zero", image 2 -> "two", and the four images' features (embedded together, as capi_test
/// embeds them) classified as one batch.
fn rust_transductive() -> &'static RustTransductive {
    use sdk::{LabelOptions, LoadOptions, Model, Prediction, Task, TaskConfig};
    static ANSWERS: OnceLock<RustTransductive> = OnceLock::new();
    ANSWERS.get_or_init(|| {
        let model = Model::load(data("conv4_gray.safetensors"), &LoadOptions::default()).unwrap();
        let images: Vec<PathBuf> = (0..4)
            .map(|i| data(&format!("conv4_gray_inputs/{i}.png")))
            .collect();
        let features = model.embed_paths(&images).unwrap();
        let model = std::sync::Arc::new(model);
        let task = |transductive: bool| {
            let config = TaskConfig {
                transductive,
                ..TaskConfig::default()
            };
            let mut task = Task::new(model.clone(), config).unwrap();
            for (label, i) in [("zero", 0), ("two", 2)] {
                task.add_class(label).unwrap();
                task.add_example_feature(label, features.row(i).as_slice().unwrap())
                    .unwrap();
            }
            task.fit().unwrap();
            task
        };
        let answers = |predictions: Vec<Prediction>| {
            predictions
                .iter()
                .map(|p| (p.class_index, p.probability, p.known_probability))
                .collect()
        };
        let transductive = task(true);
        let names = ["0.png", "1.png", "2.png", "3.png"];
        RustTransductive {
            answers: answers(transductive.classify_features(features.view()).unwrap()),
            inductive: answers(task(false).classify_features(features.view()).unwrap()),
            csv: transductive
                .label_features(features.view(), &LabelOptions::new(0.8, 2))
                .unwrap()
                .csv(&names)
                .unwrap(),
            next: transductive
                .label_next(features.view(), 4)
                .unwrap()
                .iter()
                .map(|s| (s.index, s.score))
                .collect(),
        }
    })
}

/// capi_test's transductive batch through the C ABI answers exactly what the Rust API answers
/// with `TaskConfig::transductive` (printed with 17 digits: each f64 read back exactly), and
/// not what it answers without.
fn check_transductive_output(stdout: &str) {
    let fields = |prefix: &str| -> Vec<Vec<String>> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| l.split(' ').map(str::to_string).collect())
            .collect()
    };
    let answers: Vec<(usize, f64, f64)> = fields("transductive: ")
        .iter()
        .enumerate()
        .map(|(i, f)| {
            assert_eq!(f[0], i.to_string(), "{stdout}");
            (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    let expected = rust_transductive();
    assert_eq!(answers, expected.answers, "{stdout}");
    assert!(
        answers
            .iter()
            .zip(&expected.inductive)
            .any(|(t, i)| t.1 != i.1),
        "the transductive answers are the inductive ones: {answers:?}"
    );
    let csv: String = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("transductive csv: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(csv, expected.csv, "{stdout}");
    let next: Vec<(usize, f64)> = fields("transductive next: ")
        .iter()
        .map(|f| (f[0].parse().unwrap(), f[1].parse().unwrap()))
        .collect();
    assert_eq!(next, expected.next, "{stdout}");
}

#[test]
fn c_test_program_passes_linked_dynamically() {
    let program = compile(
        "cc",
        "-std=c11",
        &["tests/c/capi_test.c"],
        "capi_test_dynamic",
        Link::Dynamic(&lib_dir()),
        &[],
    );
    let stdout = run(&program, &capi_test_args("dynamic"));
    check_capi_test_output(&stdout);
    assert!(stdout.contains("panic: test hook not built in"), "{stdout}");
}

/// Eight threads, each with its own tasks doing new/add/fit/classify/save/load on one model
/// for five seconds, answers bit-identical to one thread (tests/c/stress_test.c). `.ci/run`
/// runs a short version under valgrind for leaks.
#[test]
fn stress_eight_threads_match_one_thread() {
    let program = compile(
        "cc",
        "-std=c11",
        &["tests/c/stress_test.c"],
        "stress_test",
        Link::Dynamic(&lib_dir()),
        &[],
    );
    let tmp = out_dir().join("tmp-stress");
    std::fs::create_dir_all(&tmp).unwrap();
    let stdout = run(
        &program,
        &[
            data("conv4_gray.safetensors"),
            data("conv4_gray_inputs"),
            tmp,
        ],
    );
    let line = stdout.lines().find(|l| l.starts_with("stress:")).unwrap();
    println!("{line}");
    assert!(line.contains(", 0 errors, 0 mismatches"), "{stdout}");
    let cycles: usize = line
        .split(", ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cycles >= 16, "{stdout}");
}

#[test]
fn c_test_program_passes_linked_statically() {
    let program = compile(
        "cc",
        "-std=c11",
        &["tests/c/capi_test.c"],
        "capi_test_static",
        Link::Static(&lib_dir()),
        &[],
    );
    check_capi_test_output(&run(&program, &capi_test_args("static")));
}

#[test]
fn default_library_exports_no_test_hook() {
    for name in ["libmgecl.so", "libmgecl.a"] {
        let bytes = std::fs::read(lib_dir().join(name)).unwrap();
        let hook = b"mgecl_test_panic";
        assert!(
            !bytes.windows(hook.len()).any(|w| w == hook),
            "{name} contains the test hook"
        );
        let entry = b"mgecl_task_classify_top_k";
        assert!(
            bytes.windows(entry.len()).any(|w| w == entry),
            "{name} lacks the C API"
        );
    }
}

/// Hard-links every file under `from` into `to` (copying where a link is impossible), except
/// those `skip` names. A file already there is replaced unless it is the same file: a rebuilt
/// unit keeps its hashed name, and a stale copy with a fresh-looking fingerprint would be
/// linked into the hooks library instead of the current one.
fn link_tree(from: &Path, to: &Path, skip: &dyn Fn(&str) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if skip(&name) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            link_tree(&src, &dst, &|_| false);
        } else if kind.is_file() && !same_file(&src, &dst) {
            let _ = std::fs::remove_file(&dst);
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).unwrap();
            }
        }
    }
}

/// Whether `a` and `b` are one file (hard links of each other).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// `target/capi-hooks/release`, holding libmgecl built with `--features test-hooks`. The
/// release build is linked in first (everything but the C library's own unhashed outputs,
/// which the hooks build writes anew) so that cargo only compiles the C library: the
/// feature is the C shell's alone, every other unit is the one already built.
fn hooks_lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let release = release_dir();
        let target = release.parent().unwrap().join("capi-hooks");
        let c_library_output = |name: &str| name.starts_with("libmgecl.");
        link_tree(
            &release.join("deps"),
            &target.join("release/deps"),
            &c_library_output,
        );
        for folder in ["build", ".fingerprint"] {
            link_tree(
                &release.join(folder),
                &target.join("release").join(folder),
                &|_| false,
            );
        }
        build_c_library(&target, &["test-hooks"]);
        target.join("release")
    })
}

#[test]
fn c_test_program_sees_a_forced_panic_as_a_status() {
    let program = compile(
        "cc",
        "-std=c11",
        &["tests/c/capi_test.c"],
        "capi_test_hooks",
        Link::Static(hooks_lib_dir()),
        &["-DMGECL_TEST_HOOKS"],
    );
    let stdout = run(&program, &capi_test_args("hooks"));
    check_capi_test_output(&stdout);
    assert!(
        stdout.contains("panic: caught as MGECL_STATUS_PANIC"),
        "{stdout}"
    );
}

fn example_args() -> Vec<PathBuf> {
    let image = |i: usize| data(&format!("conv4_gray_inputs/{i}.png"));
    let labelled = |label: &str, i: usize| PathBuf::from(format!("{label}={}", image(i).display()));
    vec![
        data("conv4_gray.safetensors"),
        labelled("zero", 0),
        labelled("zero", 1),
        labelled("two", 2),
        labelled("two", 3),
        PathBuf::from("--"),
        image(0),
        image(3),
    ]
}

/// What the Rust API answers for the examples' task (default options, the same four examples),
/// per query: "label p runner-up q" with three decimals, as the examples print it.
fn rust_answers() -> Vec<(String, String)> {
    use sdk::{LoadOptions, Model, Task, TaskConfig};
    let image = |i: usize| data(&format!("conv4_gray_inputs/{i}.png"));
    let model = Model::load(data("conv4_gray.safetensors"), &LoadOptions::default()).unwrap();
    let mut task = Task::new(std::sync::Arc::new(model), TaskConfig::default()).unwrap();
    for (label, images) in [("zero", [0, 1]), ("two", [2, 3])] {
        task.add_class(label).unwrap();
        for i in images {
            task.add_example_path(label, image(i)).unwrap();
        }
    }
    task.fit().unwrap();
    let labels: Vec<String> = task.classes().into_iter().map(|c| c.label).collect();
    let answers = task.classify_paths(&[image(0), image(3)]).unwrap();
    answers
        .iter()
        .map(|a| {
            let ranked = a.top_k(2);
            let ((i, p), (j, q)) = (ranked[0], ranked[1]);
            let (first, second) = (&labels[i], &labels[j]);
            (
                format!("{first} {p:.3} {second} {q:.3}"),
                format!("{first} [{first} {p:.3}] [{second} {q:.3}]"),
            )
        })
        .collect()
}

fn check_c_example(stdout: &str) {
    assert!(
        stdout.contains("model conv4, 28x28 input, 64-d features"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fitted 2 classes on 4 examples (converged: yes)"),
        "{stdout}"
    );
    let answers: Vec<&str> = stdout.lines().filter(|l| l.contains(".png: ")).collect();
    assert_eq!(answers.len(), 2, "{stdout}");
    let expected = rust_answers();
    for ((line, (want, _)), i) in answers.iter().zip(&expected).zip([0, 3]) {
        assert!(line.ends_with(&format!("{i}.png: {want}")), "{stdout}");
    }
}

#[test]
fn c_example_classifies_linked_dynamically_and_statically() {
    let dynamic = compile(
        "cc",
        "-std=c11",
        &["examples/c/classify.c"],
        "classify_c_dynamic",
        Link::Dynamic(&lib_dir()),
        &[],
    );
    check_c_example(&run(&dynamic, &example_args()));
    let fixed = compile(
        "cc",
        "-std=c11",
        &["examples/c/classify.c"],
        "classify_c_static",
        Link::Static(&lib_dir()),
        &[],
    );
    check_c_example(&run(&fixed, &example_args()));
}

#[test]
fn cpp_example_classifies_with_the_raii_wrapper() {
    let program = compile(
        "c++",
        "-std=c++17",
        &["examples/cpp/classify.cpp"],
        "classify_cpp",
        Link::Dynamic(&lib_dir()),
        &[],
    );
    let stdout = run(&program, &example_args());
    assert!(stdout.contains("model conv4, 64-d features"), "{stdout}");
    assert!(
        stdout.contains("before fit: MGECL_STATUS_NOT_FITTED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fitted 2 classes on 4 examples"),
        "{stdout}"
    );
    for ((_, want), i) in rust_answers().iter().zip([0, 3]) {
        assert!(stdout.contains(&format!("{i}.png: {want}")), "{stdout}");
    }
    // Of two queries (equal density: each is the other's only neighbour), the one with the
    // smaller margin: 0.png (0.688 - 0.312) before 3.png (0.750 - 0.250).
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("label next: ") && l.ends_with("conv4_gray_inputs/0.png")),
        "{stdout}"
    );
    let fixed = compile(
        "c++",
        "-std=c++17",
        &["examples/cpp/classify.cpp"],
        "classify_cpp_static",
        Link::Static(&lib_dir()),
        &[],
    );
    assert_eq!(run(&fixed, &example_args()), stdout);
}

/// The corpus of the C-ABI sequence fuzzer (`tests/c/abi_sequence.c`, fuzz/README.md)
/// replayed: every call of every sequence returns a status, never a panic, and each saved task
/// reloads to the same answer.
#[test]
fn abi_call_sequences_of_the_fuzz_corpus_replay() {
    let program = compile(
        "cc",
        "-std=c11",
        &["tests/c/abi_sequence.c"],
        "abi_sequence",
        Link::Dynamic(&lib_dir()),
        &["-DMGECL_ABI_REPLAY", "-D_POSIX_C_SOURCE=200809L"],
    );
    let mut inputs = Vec::new();
    for dir in ["fuzz/corpus/abi_sequence", "fuzz/regressions/abi_sequence"] {
        if let Ok(entries) = std::fs::read_dir(root().join(dir)) {
            inputs.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    inputs.sort();
    assert!(inputs.len() >= 3, "the seeds are missing: {inputs:?}");
    let tmp = out_dir().join("tmp-abi-sequence");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut args = vec![root().join("tests/data"), tmp];
    args.extend(inputs.iter().cloned());
    let stdout = run(&program, &args);
    assert!(
        stdout.contains(&format!("{} inputs replayed", inputs.len())),
        "{stdout}"
    );
}
