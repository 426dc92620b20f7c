//! Crash safety: a process killed (SIGKILL) while it saves a task or writes training
//! checkpoints never leaves a file that loads wrongly — each file afterwards is the old
//! version or the new one, whole. The test runs this same binary as a child that writes in a
//! tight loop, kills it at pseudo-random moments, and checks what is on disk.
//!
//! `harness = false`: `main` is the parent; `crash_safety child-task|child-checkpoint DIR`
//! is the child.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use mgecl::{LoadOptions, Model, Task, TaskConfig};
use mgecl_train::net::{EncoderSpec, TrainNet};
use mgecl_train::optim::Sgd;
use mgecl_train::trainer::Trainer;
use mgecl_train::{save_progress, InputSpec, RunFiles, Snapshot};

const ROUNDS: u64 = 24;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}

fn model() -> Arc<Model> {
    Arc::new(Model::load(data("conv4_gray.safetensors"), &LoadOptions::default()).unwrap())
}

/// Task `variant` (0 or 1): different classes and sizes, so a mix of the two is detectable.
fn task(model: &Arc<Model>, variant: usize) -> Task {
    let mut task = Task::new(model.clone(), TaskConfig::default()).unwrap();
    let dim = model.feature_dim();
    let (classes, per_class) = [(2, 3), (3, 200)][variant];
    for c in 0..classes {
        let label = format!("v{variant}-class{c}");
        task.add_class(&label).unwrap();
        for e in 0..per_class {
            let feature: Vec<f32> = (0..dim)
                .map(|i| ((i * 7 + c * 13 + e) % 17) as f32)
                .collect();
            task.add_example_feature(&label, &feature).unwrap();
        }
    }
    task
}

/// What identifies a loaded task: its labels and example counts.
fn task_signature(task: &Task) -> Vec<(String, usize)> {
    task.classes()
        .into_iter()
        .map(|c| (c.label, c.example_ids.len()))
        .collect()
}

fn spec() -> EncoderSpec {
    EncoderSpec {
        arch: mgecl::Architecture::ResNet12,
        widths: vec![8, 16, 32, 64],
        in_channels: 3,
    }
}

fn input() -> InputSpec {
    InputSpec {
        image_size: (32, 32),
        in_channels: 3,
        mean: vec![0.5; 3],
        std: vec![0.25; 3],
        invert: false,
    }
}

/// Writes the checkpoint files of network `variant` (seeded 1 or 2) into `dir`, as training
/// does after an epoch.
fn write_checkpoints(dir: &Path, trainer: &Trainer) {
    let files = RunFiles::create(dir).unwrap();
    let input = input();
    let snap = Snapshot {
        trainer,
        input: &input,
    };
    let mut best = None;
    let mut record = serde_json::json!({"epoch": 1});
    save_progress(
        &files,
        &snap,
        |_| serde_json::json!({"stage": "crash-test"}),
        None,
        true,
        &mut best,
        &mut record,
    )
    .unwrap();
}

fn trainer(variant: u64) -> Trainer {
    let net = TrainNet::new(spec(), 0, variant + 1, &Device::Cpu).unwrap();
    Trainer::new(net, Sgd::new(0.1, 0.9, 5e-4), Default::default()).unwrap()
}

/// The child: writes variant 0, 1, 0, 1, ... forever; says "ready" after the first write.
fn child(kind: &str, dir: &Path) {
    let mut announced = false;
    let mut announce = || {
        if !announced {
            println!("ready");
            announced = true;
        }
    };
    match kind {
        "child-task" => {
            let model = model();
            let tasks = [task(&model, 0), task(&model, 1)];
            for i in 0.. {
                tasks[i % 2].save(dir.join("task.safetensors")).unwrap();
                announce();
            }
        }
        "child-checkpoint" => {
            let trainers = [trainer(0), trainer(1)];
            for i in 0.. {
                write_checkpoints(dir, &trainers[i % 2]);
                announce();
            }
        }
        other => panic!("unknown child {other}"),
    }
}

/// Starts a child writer, lets it write for a while after its first write, kills it. Returns
/// whether it left a temporary (it died mid-write).
fn kill_during_writes(kind: &str, dir: &Path, delay: Duration) -> bool {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(kind)
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "the child failed before its first write"
    );
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
    std::fs::read_dir(dir)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
}

/// A pseudo-random delay of 0..40 ms for round `round`.
fn delay(round: u64) -> Duration {
    let mixed = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    Duration::from_micros(mixed % 40_000)
}

/// A fresh folder, removed when the returned guard drops.
fn fresh_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// [`ROUNDS`] kills of a `kind` child writing into `dir`, each followed by `check(round)` on
/// what it left; reports and requires that some kill landed mid-write. `what` names the files.
fn kill_rounds(kind: &str, dir: &Path, what: &str, check: impl Fn(u64)) {
    let mut mid_write = 0;
    for round in 0..ROUNDS {
        mid_write += kill_during_writes(kind, dir, delay(round)) as usize;
        check(round);
    }
    println!("{what}: {ROUNDS} kills, {mid_write} mid-write, every file loaded whole");
    assert!(
        mid_write > 0,
        "no kill landed during a write: the test proved nothing"
    );
}

fn task_saves_survive_kills() {
    let model = model();
    let expected = [
        task_signature(&task(&model, 0)),
        task_signature(&task(&model, 1)),
    ];
    let scratch = fresh_dir();
    let dir = scratch.path().to_path_buf();
    let path = dir.join("task.safetensors");
    kill_rounds("child-task", &dir, "task saves", |round| {
        let loaded = Task::load(&path, model.clone())
            .unwrap_or_else(|e| panic!("round {round}: the task file does not load: {e}"));
        let signature = task_signature(&loaded);
        assert!(
            expected.contains(&signature),
            "round {round}: a mix: {signature:?}"
        );
    });
    // The next save removes what the killed writers left.
    task(&model, 0).save(&path).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("task.safetensors")]);
}

fn checkpoints_survive_kills() {
    // The fingerprints of the two checkpoints, written without interruption.
    let mut expected = Vec::new();
    for variant in 0..2 {
        let scratch = fresh_dir();
        let dir = scratch.path().to_path_buf();
        write_checkpoints(&dir, &trainer(variant));
        for file in ["best.safetensors", "last.safetensors"] {
            let model = Model::load(dir.join(file), &LoadOptions::default()).unwrap();
            expected.push((file, model.info().fingerprint.clone()));
        }
    }
    let scratch = fresh_dir();
    let dir = scratch.path().to_path_buf();
    kill_rounds("child-checkpoint", &dir, "checkpoints", |round| {
        for file in ["best.safetensors", "last.safetensors"] {
            let model = Model::load(dir.join(file), &LoadOptions::default())
                .unwrap_or_else(|e| panic!("round {round}: {file} does not load: {e}"));
            let found = (file, model.info().fingerprint.clone());
            assert!(expected.contains(&found), "round {round}: {file} is a mix");
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, kind, dir] = args.as_slice() {
        if kind.starts_with("child-") {
            child(kind, Path::new(dir));
            return;
        }
    }
    // `cargo test` passes libtest options (e.g. --nocapture); nothing here takes options.
    task_saves_survive_kills();
    checkpoints_survive_kills();
    println!("crash_safety: ok");
}
