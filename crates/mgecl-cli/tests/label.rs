//! `mgecl label` with the shipped model on a small held-out case: four Tagalog characters (a
//! val alphabet) with three examples each, their other drawings to label, plus every drawing
//! of a fifth character absent from the support. Checks the CSV contract, the accuracy on the
//! known characters, that the review list holds the unknown ones, the report, and (when
//! Debian's `chromium` is installed; MGECL_TEST_CHROMIUM=1 requires it, as `.ci/run` does) the
//! report as headless Chromium renders it.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{data, repo_root};

const KNOWN: [&str; 4] = ["character01", "character02", "character03", "character04"];
const UNKNOWN: &str = "character05";
const SHOTS: usize = 3;

/// support/<char>/ and images/<char-or-unknown>/...; returns the true character of each image
/// path relative to images/ (None for the unknown one).
fn make_case(dir: &Path) -> HashMap<String, Option<String>> {
    let source = data("omniglot_mini/Tagalog");
    let mut truth = HashMap::new();
    for character in KNOWN.iter().chain(std::iter::once(&UNKNOWN)) {
        let mut drawings: Vec<PathBuf> = std::fs::read_dir(source.join(character))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        drawings.sort();
        let shots = if *character == UNKNOWN { 0 } else { SHOTS };
        for (i, drawing) in drawings.iter().enumerate() {
            let name = drawing.file_name().unwrap().to_str().unwrap().to_string();
            let target = if i < shots {
                dir.join("support").join(character).join(&name)
            } else {
                // Nested folders: the search is recursive, paths are relative to --images.
                let sub = format!("batch{}", i % 2);
                truth.insert(
                    format!("{sub}/{name}"),
                    (*character != UNKNOWN).then(|| character.to_string()),
                );
                dir.join("images").join(sub).join(&name)
            };
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(drawing, target).unwrap();
        }
    }
    truth
}

fn mgecl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mgecl"))
}

/// Runs `command`, which must succeed; its stdout.
fn succeed(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn parse_csv(text: &str) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|line| {
            // The case's paths and labels hold no comma or quote.
            header
                .iter()
                .cloned()
                .zip(line.split(',').map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

#[test]
fn labels_a_folder_and_flags_what_it_does_not_know() {
    let scratch = tempfile::tempdir().unwrap();
    let truth = make_case(scratch.path());
    let csv_path = scratch.path().join("labels.csv");
    let report = scratch.path().join("report.html");
    succeed(
        mgecl()
            .arg("label")
            .arg("--model")
            .arg(repo_root().join("models/omniglot-conv4.safetensors"))
            .arg("--support")
            .arg(scratch.path().join("support"))
            .arg("--images")
            .arg(scratch.path().join("images"))
            .arg("--out")
            .arg(&csv_path)
            .arg("--report")
            .arg(&report)
            .args(["--review-below", "0.8", "--label-next", "5"]),
    );

    let (header, rows) = parse_csv(&std::fs::read_to_string(&csv_path).unwrap());
    assert_eq!(
        header,
        [
            "path",
            "label",
            "probability",
            "needs_review",
            "runner_up",
            "runner_up_probability",
            "known_probability",
            "label_next"
        ]
    );
    assert_eq!(rows.len(), truth.len());
    let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "rows in path order");

    let (mut known, mut correct, mut unknown, mut unknown_flagged) = (0, 0, 0, 0);
    let mut ranks = Vec::new();
    for row in &rows {
        let p: f64 = row["probability"].parse().unwrap();
        let known_p: f64 = row["known_probability"].parse().unwrap();
        let runner_p: f64 = row["runner_up_probability"].parse().unwrap();
        assert!((0.0..=1.0).contains(&p) && (0.0..=1.0).contains(&known_p));
        assert!(runner_p <= p && row["runner_up"] != row["label"]);
        assert_eq!(row["needs_review"] == "true", p < 0.8 || known_p < 0.8);
        if !row["label_next"].is_empty() {
            ranks.push(row["label_next"].parse::<usize>().unwrap());
        }
        match &truth[&row["path"]] {
            Some(character) => {
                known += 1;
                correct += usize::from(&row["label"] == character);
            }
            None => {
                unknown += 1;
                unknown_flagged += usize::from(row["needs_review"] == "true");
            }
        }
    }
    ranks.sort();
    assert_eq!(ranks, [1, 2, 3, 4, 5]);
    let accuracy = correct as f64 / known as f64;
    assert!(accuracy >= 0.85, "accuracy {accuracy} on {known} images");
    assert!(
        unknown_flagged * 2 >= unknown,
        "only {unknown_flagged} of {unknown} unknown images to review"
    );

    let html = std::fs::read_to_string(&report).unwrap();
    for section in [
        "Review these first",
        "Label these next",
        "Your examples",
        "By proposed label",
    ] {
        assert!(html.contains(section), "{section}");
    }
    let thumbnails = html.matches("src=\"data:image/png;base64,").count();
    assert!(
        thumbnails >= rows.len() + KNOWN.len() * SHOTS,
        "{thumbnails}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "self-contained"
    );

    // The same page drawn from the CSV alone (what python -m mgecl.ray label --report runs).
    let redrawn = scratch.path().join("redrawn.html");
    succeed(
        mgecl()
            .arg("report")
            .arg("--csv")
            .arg(&csv_path)
            .arg("--support")
            .arg(scratch.path().join("support"))
            .arg("--images")
            .arg(scratch.path().join("images"))
            .arg("--out")
            .arg(&redrawn),
    );
    assert!(
        std::fs::read_to_string(&redrawn).unwrap() == html,
        "mgecl report differs"
    );

    if let Some(png) = render(&report, scratch.path()) {
        let shot = image::open(&png).unwrap().to_rgb8();
        assert_eq!(shot.dimensions(), (1280, 1600));
        // The review cards' orange border and the "label next" badges' blue are on screen.
        let count = |rgb: [u8; 3]| shot.pixels().filter(|p| p.0 == rgb).count();
        assert!(count([0xe8, 0x89, 0x2b]) > 500, "review borders");
        let distinct: std::collections::HashSet<[u8; 3]> = shot.pixels().map(|p| p.0).collect();
        assert!(distinct.len() > 50, "a rendered page, not a blank one");
    }
}

/// Headless Chromium's screenshot of the page, when Chromium is installed.
fn render(page: &Path, dir: &Path) -> Option<PathBuf> {
    let png = dir.join("report.png");
    let status = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1600",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output();
    match status {
        Ok(out) if out.status.success() && png.exists() => Some(png),
        Ok(out) => panic!(
            "chromium is installed but failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            assert!(
                std::env::var_os("MGECL_TEST_CHROMIUM").is_none(),
                "MGECL_TEST_CHROMIUM is set but chromium is not installed"
            );
            eprintln!("chromium not installed: the report is not rendered");
            None
        }
    }
}

/// With test-time augmentation of the queries, `mgecl label` proposes what `mgecl classify`
/// answers with the same flags (labels and probabilities), and the copies change the answers
/// (queries embedded without their copies gave other probabilities).
#[test]
fn label_augments_queries_as_classify_does() {
    let scratch = tempfile::tempdir().unwrap();
    let truth = make_case(scratch.path());
    let model = repo_root().join("models/omniglot-conv4.safetensors");
    let support = scratch.path().join("support");
    let images = scratch.path().join("images");
    let tta = ["--augmented-copies", "2", "--augment-queries"];
    let label = |out: &Path, extra: &[&str]| {
        succeed(
            mgecl()
                .arg("label")
                .arg("--model")
                .arg(&model)
                .arg("--support")
                .arg(&support)
                .arg("--images")
                .arg(&images)
                .arg("--out")
                .arg(out)
                .args(extra),
        );
        parse_csv(&std::fs::read_to_string(out).unwrap()).1
    };
    let augmented = label(&scratch.path().join("tta.csv"), &tta);
    // The shipped model recommends 4 copies: off, explicitly.
    let plain = label(
        &scratch.path().join("plain.csv"),
        &["--augmented-copies", "0"],
    );
    assert_eq!(augmented.len(), truth.len());

    let files: Vec<PathBuf> = augmented.iter().map(|r| images.join(&r["path"])).collect();
    let answers: Vec<serde_json::Value> = succeed(
        mgecl()
            .arg("classify")
            .arg("--model")
            .arg(&model)
            .arg("--support")
            .arg(&support)
            .arg("--json")
            .args(tta)
            .args(&files),
    )
    .lines()
    .map(|line| serde_json::from_str(line).unwrap())
    .collect();
    assert_eq!(answers.len(), augmented.len());
    let mut changed = 0;
    for ((row, answer), before) in augmented.iter().zip(&answers).zip(&plain) {
        assert_eq!(
            row["label"],
            answer["label"].as_str().unwrap(),
            "{}",
            row["path"]
        );
        let p: f64 = row["probability"].parse().unwrap();
        let expected = answer["probability"].as_f64().unwrap();
        assert!(
            (p - expected).abs() < 1e-6,
            "{}: {p} vs {expected}",
            row["path"]
        );
        changed += usize::from(row["probability"] != before["probability"]);
    }
    assert!(
        changed * 2 > augmented.len(),
        "only {changed} answers changed"
    );
}
