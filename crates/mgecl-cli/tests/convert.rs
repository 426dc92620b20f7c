//! `mgecl convert` on PyTorch checkpoints written by PyTorch itself
//! (tests/data/convert/make_checkpoints.py): RFS-style dicts with an argparse Namespace, a
//! classifier head and counters, DataParallel prefixes, a nested dict, float64 with strided
//! tensors, a bare state dict; ResNet-12 and Conv-4. The converted model's features through
//! `mgecl embed` must match PyTorch's (float64 forward of the same weights) within 1e-4.

use mgecl_test_support as common;

use std::path::Path;
use std::process::{Command, Output};

use common::data;
use safetensors::SafeTensors;

fn mgecl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_mgecl"))
        .args(args)
        .output()
        .unwrap()
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(data("convert/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn meta_args(meta: &serde_json::Value) -> Vec<std::ffi::OsString> {
    meta.as_object()
        .unwrap()
        .iter()
        .flat_map(|(k, v)| {
            [
                "--meta".into(),
                format!("{k}={}", v.as_str().unwrap()).into(),
            ]
        })
        .collect()
}

fn features(file: &Path) -> Vec<f32> {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("features")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn converted_checkpoints_give_pytorchs_features() {
    let scratch = tempfile::tempdir().unwrap();
    let expected = expected();
    let checkpoints = expected["checkpoints"].as_object().unwrap();
    assert!(checkpoints.len() >= 6, "{:?}", checkpoints.keys());
    for (name, case) in checkpoints {
        let input = data(&format!("convert/{name}.pth"));
        let model = scratch.path().join(format!("{name}.safetensors"));
        let mut args = vec![
            "convert".into(),
            input.into_os_string(),
            model.clone().into_os_string(),
        ];
        args.extend(meta_args(&case["meta"]));
        let out = mgecl(args);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let info = mgecl([
            "info".as_ref(),
            "--json".as_ref(),
            "--model".as_ref(),
            model.as_os_str(),
        ]);
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["arch"], case["arch"], "{name}");
        assert_eq!(info["widths"], case["widths"], "{name}");
        assert_eq!(
            info["metadata"]["converted_from"],
            format!("{name}.pth"),
            "{name}: the source is recorded by file name only"
        );

        let images: Vec<std::path::PathBuf> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| data("convert").join(p.as_str().unwrap()))
            .collect();
        let features_file = scratch.path().join(format!("{name}.features"));
        let mut args = vec![
            "embed".into(),
            "--model".into(),
            model.clone().into_os_string(),
            "--out".into(),
            features_file.clone().into_os_string(),
        ];
        args.extend(images.iter().map(|p| p.clone().into_os_string()));
        let out = mgecl(args);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = features(&features_file);
        let theirs: Vec<f64> = case["features"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        eprintln!("{name}: max |mgecl - PyTorch| = {worst:.2e}");
        assert!(
            worst <= 1e-4,
            "{name}: features differ from PyTorch's by {worst}"
        );
        // Not a constant: the features vary across images.
        let dim = ours.len() / images.len();
        assert!(ours[..dim] != ours[dim..2 * dim], "{name}");
    }
}

#[test]
fn the_legacy_format_is_refused_with_how_to_resave_it() {
    let scratch = tempfile::tempdir().unwrap();
    let output = scratch.path().join("out.safetensors");
    let out = mgecl([
        "convert".as_ref(),
        data("convert/conv4_legacy.pth").as_os_str(),
        output.as_os_str(),
        "--meta".as_ref(),
        "image_size=28".as_ref(),
        "--meta".as_ref(),
        "mean=[0.9]".as_ref(),
        "--meta".as_ref(),
        "std=[0.25]".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("legacy (pre-1.6)"), "{stderr}");
    assert!(stderr.contains("torch.save(torch.load("), "{stderr}");
    assert!(!output.exists(), "nothing is written on failure");
}

#[test]
fn missing_metadata_is_named_and_nothing_is_written() {
    let scratch = tempfile::tempdir().unwrap();
    let output = scratch.path().join("out.safetensors");
    let out = mgecl([
        "convert".as_ref(),
        data("convert/resnet12_rfs.pth").as_os_str(),
        output.as_os_str(),
        "--meta".as_ref(),
        "image_size=84".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("missing metadata mean, std"), "{stderr}");
    assert!(!output.exists());
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

#[test]
fn the_report_names_what_was_left_out() {
    let scratch = tempfile::tempdir().unwrap();
    let output = scratch.path().join("out.safetensors");
    let out = mgecl([
        "convert".as_ref(),
        data("convert/resnet12_dataparallel.pth").as_os_str(),
        output.as_os_str(),
        "--meta".as_ref(),
        "image_size=84".as_ref(),
        "--meta".as_ref(),
        "mean=[0.5,0.5,0.5]".as_ref(),
        "--meta".as_ref(),
        "std=[0.25,0.25,0.25]".as_ref(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("resnet12 [8, 16, 24, 32]"), "{stdout}");
    assert!(stdout.contains("prefix \"module.\" stripped"), "{stdout}");
    assert!(
        stdout.contains("classifier.* (2), num_batches_tracked (16)"),
        "{stdout}"
    );
}
