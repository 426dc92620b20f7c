//! The command-line tool's training commands: a killed `mgecl pretrain` resumes (`--resume`)
//! to exactly the result of an uninterrupted run.

use mgecl_test_support as common;

use std::path::Path;
use std::process::Command;

use common::{data, training_log};

fn weights(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_killed_run_resumes_to_the_uninterrupted_result() {
    let exe = env!("CARGO_BIN_EXE_mgecl");
    let root = data("omniglot_mini");
    let run = |out: &Path, resume: bool| {
        let mut cmd = Command::new(exe);
        cmd.args(["pretrain", "--data"]).arg(&root);
        cmd.arg("--include").arg(root.join("train.txt"));
        cmd.args([
            "--widths",
            "16",
            "--invert",
            "--epochs",
            "3",
            "--lr-milestones",
            "2",
            "--batch-size",
            "32",
            "--seed",
            "5",
        ]);
        cmd.arg("--out").arg(out);
        if resume {
            cmd.arg("--resume");
        }
        cmd
    };
    let scratch = tempfile::tempdir().unwrap();
    let straight = scratch.path().join("straight");
    let out = run(&straight, false).output().unwrap();
    assert!(out.status.success());
    // stderr is a pipe, not a terminal: no progress bar, but a status line per epoch.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for epoch in 1..=3 {
        assert!(
            stderr.contains(&format!("epoch {epoch}/3 1/")),
            "no status line for epoch {epoch}: {stderr}"
        );
    }

    let killed = scratch.path().join("killed");
    let mut child = run(&killed, false)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as the first epoch's checkpoint exists (mid-way through the second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !killed.join("log.jsonl").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run(&killed, true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        weights(&killed.join("last.safetensors")),
        weights(&straight.join("last.safetensors"))
    );
    assert_eq!(
        training_log(&killed).last().unwrap()["loss"],
        training_log(&straight).last().unwrap()["loss"]
    );
}
