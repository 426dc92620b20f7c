//! `mgecl label` with the shipped model on a small held-out case: four Tagalog characters (a
//! val alphabet) with three examples each, their other drawings to label, plus every drawing
//! of a fifth character absent from the support. Checks the CSV contract, the accuracy on the
//! known characters, that the review list holds the unknown ones, the report, and (when
//! Debian's `chromium` is installed; MGECL_TEST_CHROMIUM=1 requires it, as `.ci/run` does) the
//! report as headless Chromium renders it.

use mgecl_test_support as common;

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
            "label_next",
            "error"
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

/// With test-time augmentation of the queries, `mgecl label` proposes what `mgecl classify
/// --transductive` answers for the same images with the same flags (labels and probabilities), and the copies change the answers
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
            // label answers its images together by default; classify does with the flag.
            .arg("--transductive")
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

/// `mgecl label --model (shipped) --support S --images I --out OUT` plus `extra`.
fn label_command(scratch: &Path, images: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = mgecl();
    command
        .arg("label")
        .arg("--model")
        .arg(repo_root().join("models/omniglot-conv4.safetensors"))
        .arg("--support")
        .arg(scratch.join("support"))
        .arg("--images")
        .arg(images)
        .arg("--out")
        .arg(out)
        .args(extra);
    command
}

/// The CSV's lines by their path (the first field: the case's paths hold no comma).
fn lines_by_path(csv: &str) -> HashMap<String, String> {
    csv.lines()
        .skip(1)
        .map(|line| {
            (
                line.split(',').next().unwrap().to_string(),
                line.to_string(),
            )
        })
        .collect()
}

/// Every file under `root`, relative, `/`-separated.
fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                found.push(relative.to_str().unwrap().replace('\\', "/"));
            }
        }
    }
    found.sort();
    found
}

/// What a real folder holds beside photos: damaged files, other formats, files that are not
/// images. Every file is accounted for, the damaged ones do not stop the job, and the good
/// images get exactly the rows they get without the damaged ones around.
#[test]
fn damaged_files_get_error_rows_and_the_rest_is_labelled_as_without_them() {
    let scratch = tempfile::tempdir().unwrap();
    make_case(scratch.path());
    let images = scratch.path().join("images");
    // The first drawings again in every other format the decoder reads, beside their PNG.
    let mut originals: Vec<String> = files_under(&images)
        .into_iter()
        .filter(|p| p.starts_with("batch0/"))
        .collect();
    originals.truncate(3);
    let mut converted = Vec::new();
    std::fs::create_dir_all(images.join("formats")).unwrap();
    for (i, original) in originals.iter().enumerate() {
        let drawing = image::open(images.join(original)).unwrap();
        for ext in ["webp", "bmp", "gif", "tiff", "jpg"] {
            let name = format!("formats/{i}.{ext}");
            let picture = if ext == "gif" {
                image::DynamicImage::ImageRgba8(drawing.to_rgba8())
            } else {
                image::DynamicImage::ImageRgb8(drawing.to_rgb8())
            };
            picture.save(images.join(&name)).unwrap();
            converted.push((name, original.clone(), ext));
        }
    }
    // The good images alone, for the comparison.
    let good = scratch.path().join("good");
    for path in files_under(&images) {
        std::fs::create_dir_all(good.join(&path).parent().unwrap()).unwrap();
        std::fs::copy(images.join(&path), good.join(&path)).unwrap();
    }

    let damaged_dir = images.join("upload");
    std::fs::create_dir_all(&damaged_dir).unwrap();
    let png = std::fs::read(images.join(&originals[0])).unwrap();
    let damaged: [(&str, Vec<u8>); 5] = [
        ("upload/cut.png", png[..png.len() / 2].to_vec()),
        ("upload/empty.png", Vec::new()),
        (
            "upload/notes-really.jpg",
            b"shopping list: eggs, milk\n".to_vec(),
        ),
        ("upload/bomb.png", common::decompression_bomb_png()),
        // An iPhone photo's first box (ISO-BMFF ftyp, brand heic).
        (
            "upload/IMG_0001.HEIC",
            b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec(),
        ),
    ];
    for (name, bytes) in &damaged {
        std::fs::write(images.join(name), bytes).unwrap();
    }
    let not_images = ["upload/notes.txt", "upload/.DS_Store"];
    for name in not_images {
        std::fs::write(images.join(name), b"not an image").unwrap();
    }

    let out = scratch.path().join("all.csv");
    let run = label_command(scratch.path(), &images, &out, &["--list-skipped"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("5 failed"), "{stderr}");
    assert!(stderr.contains("2 other files skipped"), "{stderr}");
    let csv = std::fs::read_to_string(&out).unwrap();
    let rows = lines_by_path(&csv);
    let (_, parsed) = parse_csv(&csv);

    // Every file accounted for: a CSV row or a skipped line.
    for path in files_under(&images) {
        let skipped = stderr.contains(&format!("skipped {}", images.join(&path).display()));
        assert_ne!(
            rows.contains_key(&path),
            skipped,
            "{path}: in the CSV or skipped, not both, not neither"
        );
        assert_eq!(skipped, not_images.contains(&path.as_str()), "{path}");
    }
    // The damaged files: an empty label and an error naming the file.
    for (name, _) in &damaged {
        let row = parsed.iter().find(|r| r["path"] == *name).unwrap();
        assert_eq!(row["label"], "", "{name}");
        assert!(row["error"].contains(name), "{name}: {}", row["error"]);
    }
    let error_of = |name: &str| parsed.iter().find(|r| r["path"] == name).unwrap()["error"].clone();
    assert!(error_of("upload/IMG_0001.HEIC").contains("convert them to JPEG or PNG"));
    assert!(error_of("upload/bomb.png").contains("exceeds the decoding limits"));
    // Every other row is labelled, with an empty error.
    let labelled = parsed.iter().filter(|r| r["error"].is_empty()).count();
    assert_eq!(labelled, parsed.len() - damaged.len());
    // The other formats: labelled as their PNG (GIF's palette and JPEG may move pixels).
    for (name, original, ext) in &converted {
        let (a, b) = (
            parsed.iter().find(|r| r["path"] == *name).unwrap(),
            parsed.iter().find(|r| r["path"] == *original).unwrap(),
        );
        assert_eq!(a["label"], b["label"], "{name}");
        if matches!(*ext, "webp" | "bmp" | "tiff") {
            assert_eq!(a["probability"], b["probability"], "{name}");
        }
    }

    // The good images' rows are those of a run without the damaged files.
    let good_out = scratch.path().join("good.csv");
    succeed(&mut label_command(scratch.path(), &good, &good_out, &[]));
    let good_rows = lines_by_path(&std::fs::read_to_string(&good_out).unwrap());
    assert_eq!(good_rows.len(), rows.len() - damaged.len());
    for (path, line) in &good_rows {
        assert_eq!(&rows[path], line, "{path}");
    }

    // --strict: the first damaged file stops the job; no CSV.
    let strict_out = scratch.path().join("strict.csv");
    let strict = label_command(scratch.path(), &images, &strict_out, &["--strict"])
        .output()
        .unwrap();
    assert!(!strict.status.success());
    let message = String::from_utf8_lossy(&strict.stderr);
    assert!(
        damaged.iter().any(|(name, _)| message.contains(name)),
        "{message}"
    );
    assert!(!strict_out.exists());
    assert!(!scratch.path().join("strict.csv.progress").exists());
}

/// `mgecl label --inductive` killed (SIGKILL) at random points of a 600-image run and resumed
/// with `--resume`, 12 times (every other time killed again while resuming): each CSV is
/// byte-identical to the uninterrupted run's, and the progress file is gone at the end.
#[test]
fn a_killed_run_resumes_to_the_same_csv() {
    killed_runs_resume_to_the_same_csv(&["--inductive"], 12, 5);
}

/// The same transductively (label's default; 4 times): the answers come from all the images'
/// features at the end, the journal holds the features, so a resumed run writes the same
/// bytes; and they are not the inductive run's.
#[test]
fn a_killed_transductive_run_resumes_to_the_same_csv() {
    let transductive = killed_runs_resume_to_the_same_csv(&["--transductive"], 4, 1);
    let inductive = killed_runs_resume_to_the_same_csv(&["--inductive"], 0, 0);
    assert_ne!(transductive, inductive);
    // Transductive is label's default.
    assert_eq!(killed_runs_resume_to_the_same_csv(&[], 0, 0), transductive);
}

/// Runs [`a_killed_run_resumes_to_the_same_csv`]'s check with `flags` for `trials` trials,
/// of which at least `midway` must resume midway; returns the uninterrupted run's CSV.
fn killed_runs_resume_to_the_same_csv(flags: &[&str], trials: usize, midway: usize) -> Vec<u8> {
    // Enough for dozens of journal records (one every 16 images) to be killed between.
    const IMAGES: usize = 600;
    let scratch = tempfile::tempdir().unwrap();
    make_case(scratch.path());
    // 600 images: the case's drawings copied under numbered names, 100 per folder.
    let drawings: Vec<PathBuf> = files_under(&scratch.path().join("images"))
        .iter()
        .map(|p| scratch.path().join("images").join(p))
        .collect();
    let images = scratch.path().join("many");
    for i in 0..IMAGES {
        let target = images.join(format!("part{:02}/{i:04}.png", i / 100));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&drawings[i % drawings.len()], target).unwrap();
    }
    // Without the model's test-time copies (5x fewer embeddings): resuming does not depend on
    // them, and each of the runs below is then a few seconds.
    let plain: Vec<&str> = ["--augmented-copies", "0"]
        .iter()
        .chain(flags)
        .copied()
        .collect();
    let resume: Vec<&str> = plain.iter().copied().chain(["--resume"]).collect();
    let reference = scratch.path().join("reference.csv");
    let started = std::time::Instant::now();
    succeed(&mut label_command(
        scratch.path(),
        &images,
        &reference,
        &plain,
    ));
    let mut full = started.elapsed().as_secs_f64();
    let expected = std::fs::read(&reference).unwrap();

    // A fixed-seed LCG: the kill points are random but the same on every run of the test.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut resumed_midway = 0;
    for trial in 0..trials {
        let out = scratch.path().join(format!("trial{trial}.csv"));
        let progress = scratch.path().join(format!("trial{trial}.csv.progress"));
        let kills = 1 + trial % 2;
        for kill in 0..kills {
            let extra: &[&str] = if kill == 0 { &plain } else { &resume };
            let mut child = label_command(scratch.path(), &images, &out, extra)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_secs_f64(full * uniform()));
            // A run that finished before its kill ran faster than the reference (which may
            // have shared the cores with other tests): aim the later kills earlier.
            if child.try_wait().unwrap().is_some() {
                full *= 0.75;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            // Written atomically: no CSV, or the whole one.
            if out.exists() {
                assert_eq!(std::fs::read(&out).unwrap(), expected, "trial {trial}");
            }
        }
        let run = label_command(scratch.path(), &images, &out, &resume)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "trial {trial}: {stderr}");
        if let Some(done) = stderr
            .split("resuming: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
        {
            let done: usize = done.parse().unwrap();
            resumed_midway += usize::from(done > 0 && done < IMAGES);
        }
        assert!(
            std::fs::read(&out).unwrap() == expected,
            "trial {trial}: the resumed CSV differs"
        );
        assert!(!progress.exists(), "trial {trial}: progress file left");
    }
    // Else the kills all fell before the first or after the last image: nothing was tested.
    assert!(
        resumed_midway >= midway,
        "only {resumed_midway} runs resumed midway"
    );
    expected
}
