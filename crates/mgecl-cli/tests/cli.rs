//! The `mgecl` binary: `info` and `embed` against the reference fixtures, `classify`, and
//! `evaluate`'s JSON.

use mgecl_test_support as common;

use std::process::Command;

use common::{data, max_abs_diff, read_tensor};

fn mgecl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mgecl"))
}

#[test]
fn info_json_describes_the_model() {
    let out = mgecl()
        .args(["info", "--json", "--model"])
        .arg(data("resnet12_small.safetensors"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["arch"], "resnet12");
    assert_eq!(info["widths"], serde_json::json!([16, 40, 80, 160]));
    assert_eq!(info["feature_dim"], 160);
    assert_eq!(info["in_channels"], 3);
    assert_eq!(info["image_size"], serde_json::json!([84, 84]));
    assert_eq!(info["device"], "cpu");
}

/// `mgecl info --json | head -c 10`: the reader goes away; the tool must neither panic nor
/// complain ("failed printing to stdout: Broken pipe"), and exits 0.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let mut child = mgecl()
        .args(["info", "--model"])
        .arg(data("resnet12_small.safetensors"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the model is loaded: every write then fails with EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn embed_writes_features_in_argument_order() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let out_file = dir.join("features.safetensors");
    // Reverse order, to check rows follow the arguments.
    let order = [3usize, 2, 1, 0];
    let mut cmd = mgecl();
    cmd.args(["embed", "--model"])
        .arg(data("conv4_gray.safetensors"))
        .arg("--out")
        .arg(&out_file);
    for i in order {
        cmd.arg(data(&format!("conv4_gray_inputs/{i}.png")));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bytes = std::fs::read(&out_file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("features").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    assert_eq!(t.shape(), &[4, 64]);
    let ours: Vec<f64> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
        .collect();
    let (expected, _) = read_tensor("conv4_gray_expected.safetensors", "features_f64");
    for (row, &i) in order.iter().enumerate() {
        let d = max_abs_diff(
            ours[row * 64..(row + 1) * 64].iter().copied(),
            expected[i * 64..(i + 1) * 64].iter().copied(),
        );
        assert!(d <= 1e-4, "row {row} (image {i}) differs by {d}");
    }
}

#[test]
fn errors_exit_nonzero_with_a_message_and_write_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let out_file = dir.join("f.safetensors");
    let out = mgecl()
        .args(["embed", "--model"])
        .arg(data("conv4_gray.safetensors"))
        .arg("--out")
        .arg(&out_file)
        .arg(data("conv4_gray_inputs/0.png"))
        .arg(data("no-such.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such.png"), "{stderr}");
    assert!(!out_file.exists(), "no partial output");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no temporary left behind"
    );

    let out = mgecl()
        .args(["info", "--device", "cuda", "--model"])
        .arg(data("conv4_gray.safetensors"))
        .output()
        .unwrap();
    if !cfg!(feature = "cuda") {
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("cuda"));
    }
}

/// A support folder under `root` of `classes` classes `class0`, `class1`, ..., each holding one
/// fixture image (`conv4_gray_inputs/{i}.png` as `a.png`).
fn support_folder(root: &std::path::Path, classes: usize) -> std::path::PathBuf {
    for i in 0..classes {
        std::fs::create_dir_all(root.join(format!("class{i}"))).unwrap();
        std::fs::copy(
            data(&format!("conv4_gray_inputs/{i}.png")),
            root.join(format!("class{i}/a.png")),
        )
        .unwrap();
    }
    root.to_path_buf()
}

#[test]
fn classify_names_each_image_by_its_support_folder() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = support_folder(scratch.path(), 3);
    let out = mgecl()
        .args(["classify", "--json", "--model"])
        .arg(data("conv4_gray.safetensors"))
        .arg("--support")
        .arg(&dir)
        .args((0..3).map(|i| data(&format!("conv4_gray_inputs/{i}.png"))))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["label"], format!("class{i}"));
        let p = line["probability"].as_f64().unwrap();
        assert_eq!(
            line["probabilities"][format!("class{i}")].as_f64().unwrap(),
            p
        );
        assert!(line["path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{i}.png")));
    }
    // An image of no support class is below cosine 1, so threshold 1 rejects it. (A support
    // image itself sits at cosine 1 up to rounding.)
    let out = mgecl()
        .args(["classify", "--threshold", "1.0", "--model"])
        .arg(data("conv4_gray.safetensors"))
        .arg("--support")
        .arg(&dir)
        .arg(data("conv4_gray_inputs/3.png"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\tunknown\t"));
}

/// `mgecl evaluate --json --per-episode`: one accuracy per episode, whose mean is the reported
/// accuracy; the test-time augmentation flags reach the task (and are refused half-given).
#[test]
fn evaluate_reports_each_episode_and_its_augmentation() {
    let evaluate = |extra: &[&str]| {
        mgecl()
            .args(["evaluate", "--model"])
            .arg(data("conv4_gray.safetensors"))
            .arg("--data")
            .arg(data("omniglot_mini"))
            .args(["--ways", "3", "--queries", "2", "--episodes", "7", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    for extra in [
        &["--per-episode"][..],
        &[
            "--per-episode",
            "--augmented-copies",
            "2",
            "--augment-queries",
        ],
    ] {
        let out = evaluate(extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let each: Vec<f64> = v["episode_accuracies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_f64().unwrap())
            .collect();
        assert_eq!(each.len(), 7);
        let mean = each.iter().sum::<f64>() / 7.0;
        assert!((mean - v["accuracy"].as_f64().unwrap()).abs() < 1e-6, "{v}");
        assert_eq!(v["classifier"], "prototype");
        assert_eq!(v["augment_queries"], extra.len() > 1);
        assert_eq!(v["augmented_copies"], if extra.len() > 1 { 2 } else { 0 });
    }
    let out = evaluate(&["--augment-queries"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--augmented-copies"));
}

/// `mgecl evaluate --json --per-episode` of the fixture Conv-4 on 5 small 3-way episodes of
/// `omniglot_mini` with 2 queries per class, plus `extra`: its stdout (the run must succeed).
fn evaluate_mini(extra: &[&str]) -> String {
    let out = mgecl()
        .args(["evaluate", "--model"])
        .arg(data("conv4_gray.safetensors"))
        .arg("--data")
        .arg(data("omniglot_mini"))
        .args(["--ways", "3", "--queries", "2", "--episodes", "5", "--json"])
        .arg("--per-episode")
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `mgecl evaluate --classifiers logistic,prototype --shots 1,2` embeds once and prints one
/// result per classifier and shot count, each the one a run with `--classifier C --shots S`
/// alone prints.
#[test]
fn evaluate_with_a_list_of_classifiers_equals_one_run_per_classifier() {
    let all = evaluate_mini(&["--classifiers", "logistic,prototype", "--shots", "1,2"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 4, "{all}");
    let mut i = 0;
    for classifier in ["logistic", "prototype"] {
        for shots in ["1", "2"] {
            let alone = evaluate_mini(&["--classifier", classifier, "--shots", shots]);
            assert_eq!(lines[i], alone.trim_end());
            let v: serde_json::Value = serde_json::from_str(lines[i]).unwrap();
            assert_eq!(v["classifier"].as_str(), Some(classifier));
            i += 1;
        }
    }
    // One classifier flag or the other, not both.
    let out = mgecl()
        .args(["evaluate", "--model"])
        .arg(data("conv4_gray.safetensors"))
        .arg("--data")
        .arg(data("omniglot_mini"))
        .args(["--classifier", "logistic", "--classifiers", "prototype"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `mgecl evaluate --shots 1,2` embeds once and prints one result per value, each the one a
/// run with that value alone prints (same episodes, same accuracies).
#[test]
fn evaluate_with_a_list_of_shots_equals_one_run_per_value() {
    let evaluate = |shots: &str| evaluate_mini(&["--shots", shots]);
    let both = evaluate("1,2");
    let lines: Vec<&str> = both.lines().collect();
    assert_eq!(lines.len(), 2, "{both}");
    assert_eq!(lines[0], evaluate("1").trim_end());
    assert_eq!(lines[1], evaluate("2").trim_end());
    let one: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let two: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(
        (one["shots"].as_u64(), two["shots"].as_u64()),
        (Some(1), Some(2))
    );
}

/// `mgecl evaluate --also-transductive` prints, per setting, the inductive result and the
/// transductive one, each the result of a run with that mode alone (same episodes); with
/// `--query-dirichlet` too, whose episodes keep the balanced runs' supports and
/// `ways x queries` queries but not their equal class sizes.
#[test]
fn evaluate_pairs_transductive_with_inductive_on_the_same_episodes() {
    for dirichlet in [&[][..], &["--query-dirichlet", "2"][..]] {
        let with = |extra: &[&str]| {
            let args: Vec<&str> = extra.iter().chain(dirichlet).copied().collect();
            evaluate_mini(&args)
        };
        let both = with(&["--also-transductive", "--shots", "1"]);
        let lines: Vec<&str> = both.lines().collect();
        assert_eq!(lines.len(), 2, "{both}");
        assert_eq!(lines[0], with(&["--shots", "1"]).trim_end());
        assert_eq!(
            lines[1],
            with(&["--transductive", "--shots", "1"]).trim_end()
        );
        let inductive: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        let transductive: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(inductive["transductive"], false);
        assert_eq!(transductive["transductive"], true);
        assert_ne!(
            inductive["episode_accuracies"], transductive["episode_accuracies"],
            "transduction changed no answer"
        );
        if !dirichlet.is_empty() {
            assert_eq!(inductive["query_dirichlet"], 2.0);
            let balanced: serde_json::Value =
                serde_json::from_str(evaluate_mini(&["--shots", "1"]).trim_end()).unwrap();
            assert_ne!(
                balanced["episode_accuracies"],
                inductive["episode_accuracies"]
            );
        }
    }
    let out = mgecl()
        .args(["evaluate", "--model"])
        .arg(data("conv4_gray.safetensors"))
        .arg("--data")
        .arg(data("omniglot_mini"))
        .args(["--ways", "3", "--query-dirichlet", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Dirichlet"));
}

/// `mgecl classify --transductive` classifies its images as one batch: one image alone gets
/// the inductive answer, several get answers that differ from the inductive ones.
#[test]
fn classify_transductive_answers_depend_on_the_batch() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = support_folder(scratch.path(), 2);
    let images: Vec<_> = (0..8)
        .map(|i| data(&format!("conv4_gray_inputs/{i}.png")))
        .filter(|p| p.exists())
        .collect();
    assert!(images.len() >= 4, "the fixture has {} images", images.len());
    let classify = |extra: &[&str], images: &[std::path::PathBuf]| {
        let out = mgecl()
            .args(["classify", "--json", "--model"])
            .arg(data("conv4_gray.safetensors"))
            .arg("--support")
            .arg(&dir)
            .args(extra)
            .args(images)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        classify(&["--transductive"], &images[..1]),
        classify(&[], &images[..1])
    );
    assert_ne!(
        classify(&["--transductive"], &images),
        classify(&[], &images)
    );
}

/// A model's recommended task settings (metadata `task_defaults`) are the commands' defaults;
/// flags override them, and `--augmented-copies 0` also ends the recommended query
/// augmentation.
#[test]
fn commands_start_from_the_models_recommended_task_settings() {
    let evaluate = |extra: &[&str]| {
        let out = mgecl()
            .args(["evaluate", "--model"])
            .arg(data("conv4_gray.safetensors"))
            .args([
                "--meta",
                r#"task_defaults={"classifier":"logistic","augmented_copies":2,"augment_queries":true}"#,
            ])
            .arg("--data")
            .arg(data("omniglot_mini"))
            .args(["--ways", "3", "--queries", "2", "--episodes", "3", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["classifier"].as_str().unwrap().to_string(),
            v["augmented_copies"].as_u64().unwrap(),
            v["augment_queries"].as_bool().unwrap(),
        )
    };
    assert_eq!(evaluate(&[]), ("logistic".into(), 2, true));
    assert_eq!(
        evaluate(&["--classifier", "prototype", "--no-augment-queries"]),
        ("prototype".into(), 2, false)
    );
    assert_eq!(
        evaluate(&["--augmented-copies", "0"]),
        ("logistic".into(), 0, false)
    );
    assert_eq!(
        evaluate(&["--augmented-copies", "1"]),
        ("logistic".into(), 1, true)
    );
}

/// `--meta image_size=4096` asks for a forward pass of gigabytes: refused at load, within a
/// second, naming the limit and the flag that raises it; `--max-memory` moves the limit.
#[test]
fn a_model_beyond_the_memory_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let embed = |extra: &[&str]| {
        let start = std::time::Instant::now();
        let out = mgecl()
            .args(["embed", "--model"])
            .arg(data("conv4_gray.safetensors"))
            .args(["--meta", "image_size=4096"])
            .args(extra)
            .arg("--out")
            .arg(dir.path().join("f.safetensors"))
            .arg(data("conv4_gray_inputs/0.png"))
            .output()
            .unwrap();
        (out, start.elapsed())
    };
    let (out, took) = embed(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    assert!(
        stderr.contains("over the limit of 1024 MiB") && stderr.contains("--max-memory"),
        "{stderr}"
    );
    let (out, _) = embed(&["--max-memory", "512"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("over the limit of 512 MiB"), "{stderr}");
    assert!(!dir.path().join("f.safetensors").exists());
}

/// `mgecl quantize` writes an int8 model that the other commands load (on the int8 engine),
/// whose metadata says how many images calibrated it and from which folders, naming no path
/// of the machine; a failure writes nothing.
#[test]
fn quantize_writes_a_model_the_other_commands_run() {
    let scratch = tempfile::tempdir().unwrap();
    let out_file = scratch.path().join("int8.safetensors");
    let quantize = |data_dir: &std::path::Path, out: &std::path::Path| {
        mgecl()
            .args(["quantize", "--model"])
            .arg(data("conv4_gray.safetensors"))
            .arg("--data")
            .arg(data_dir)
            .arg("--include")
            .arg(data("omniglot_mini/train.txt"))
            .args(["--images", "20", "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let out = quantize(&data("omniglot_mini"), &out_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let out = mgecl()
        .args(["info", "--json", "--model"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["engine"], "cpu-int8");
    let quantization: serde_json::Value =
        serde_json::from_str(info["metadata"]["quantization"].as_str().unwrap()).unwrap();
    assert_eq!(quantization["calibration_images"], 20);
    let described = quantization["calibration_data"].as_str().unwrap();
    assert!(
        described.starts_with("20 images of ")
            && described.contains("omniglot_mini (folders listed in train.txt)"),
        "{described}"
    );
    let root = common::repo_root();
    assert!(!described.contains(root.to_str().unwrap()), "{described}");
    // evaluate runs on it.
    let out = mgecl()
        .args(["evaluate", "--model"])
        .arg(&out_file)
        .arg("--data")
        .arg(data("omniglot_mini"))
        .args(["--ways", "3", "--queries", "2", "--episodes", "5", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A missing data folder: an error, and no file.
    let missing = scratch.path().join("missing.safetensors");
    let out = quantize(&scratch.path().join("no-such-folder"), &missing);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    assert!(!missing.exists());
    // A calibrated model's int8 version is calibrated too (refitted, and written in one go).
    let calibrated = scratch.path().join("calibrated.safetensors");
    let out = mgecl()
        .args(["calibrate", "--episodes-per-shape", "2", "--model"])
        .arg(data("conv4_gray.safetensors"))
        .arg("--data")
        .arg(data("omniglot_mini"))
        .arg("--out")
        .arg(&calibrated)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let int8 = scratch.path().join("calibrated-int8.safetensors");
    let out = mgecl()
        .args(["quantize", "--model"])
        .arg(&calibrated)
        .arg("--data")
        .arg(data("omniglot_mini"))
        .args(["--images", "20", "--out"])
        .arg(&int8)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata = |path: &std::path::Path| -> serde_json::Value {
        let out = mgecl()
            .args(["info", "--json", "--model"])
            .arg(path)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["metadata"].clone()
    };
    let int8_meta = metadata(&int8);
    assert!(int8_meta["quantization"].is_string());
    assert!(int8_meta["calibration"].is_string());
}
