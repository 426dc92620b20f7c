//! Helpers the workspace's integration tests share (a dev-dependency of every crate, never
//! shipped): fixture paths, safetensors readers, synthetic models, training logs.
// Test helpers, not an API: their names say what they do.
#![allow(missing_docs)]

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

/// The repository root (the workspace's, which holds `Cargo.lock`), from any of its crates.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .expect("the workspace root")
        .to_path_buf()
}

/// `tests/data/<name>` at the repository root.
pub fn data(name: &str) -> PathBuf {
    repo_root().join("tests/data").join(name)
}

/// A tensor of a fixture file as f64 values (F32, F64 and I64 are widened) plus its shape.
pub fn read_tensor(file: &str, name: &str) -> (Vec<f64>, Vec<usize>) {
    let bytes = std::fs::read(data(file)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let values = match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => t
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("unsupported dtype {other:?}"),
    };
    (values, t.shape().to_vec())
}

/// Largest absolute difference between two equally long sequences.
pub fn max_abs_diff(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    let (a, b): (Vec<f64>, Vec<f64>) = (a.into_iter().collect(), b.into_iter().collect());
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

pub mod lr_fixture;

/// The message of an expected [`mgecl::Error::InvalidArgument`]; panics on anything else.
pub fn invalid<T: std::fmt::Debug>(r: Result<T, mgecl::Error>) -> String {
    match r {
        Err(mgecl::Error::InvalidArgument(msg)) => msg,
        Ok(v) => panic!("expected InvalidArgument, got Ok({v:?})"),
        Err(other) => panic!("expected InvalidArgument, got {other}"),
    }
}

/// A Conv-4 model file (1 input channel, 8x8 input) of width `dim` with seeded pseudo-random
/// weights: a real model whose feature dimension matches a fixture's, for task tests that
/// work from stored features.
pub fn synthetic_conv4(dim: usize) -> std::sync::Arc<mgecl::Model> {
    synthetic_conv4_seeded(dim, 0x2545_f491_4f6c_dd1d)
}

/// [`synthetic_conv4`] with other weights.
pub fn synthetic_conv4_seeded(dim: usize, seed: u64) -> std::sync::Arc<mgecl::Model> {
    use safetensors::tensor::TensorView;
    let mut state = seed;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, values: Vec<f32>| {
        tensors.push((
            name,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    };
    let mut c_in = 1;
    for i in 1..=4 {
        let n = dim * c_in * 9;
        push(
            format!("layer{i}.0.weight"),
            vec![dim, c_in, 3, 3],
            (0..n).map(|_| rand() * 0.5).collect(),
        );
        push(
            format!("layer{i}.0.bias"),
            vec![dim],
            (0..dim).map(|_| rand() * 0.1).collect(),
        );
        push(format!("layer{i}.1.weight"), vec![dim], vec![1.0; dim]);
        push(format!("layer{i}.1.bias"), vec![dim], vec![0.0; dim]);
        push(
            format!("layer{i}.1.running_mean"),
            vec![dim],
            vec![0.0; dim],
        );
        push(format!("layer{i}.1.running_var"), vec![dim], vec![1.0; dim]);
        c_in = dim;
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let metadata = [
        ("arch", "conv4"),
        ("image_size", "8"),
        ("mean", "[0.5]"),
        ("std", "[0.25]"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let bytes = safetensors::serialize(views, Some(metadata)).unwrap();
    std::sync::Arc::new(mgecl::Model::from_bytes(&bytes, &mgecl::LoadOptions::default()).unwrap())
}

/// The training records of a run's log; the run's last record must be its calibration, and
/// `best.safetensors` must carry it.
pub fn training_log(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.pop().unwrap();
    assert_eq!(last["stage"], "calibrate", "{last}");
    let best =
        mgecl::Model::load(dir.join("best.safetensors"), &mgecl::LoadOptions::default()).unwrap();
    let calibration = best.calibration().expect("training writes a calibration");
    assert_eq!(
        last["calibration"],
        serde_json::to_value(calibration).unwrap()
    );
    lines
}

/// A valid 1x1 PNG whose header then claims 100000 x 100000 pixels (10 GB decoded), its IHDR
/// chunk re-sealed with a correct CRC so that only the image limits can refuse it.
pub fn decompression_bomb_png() -> Vec<u8> {
    let mut png = Vec::new();
    image::GrayImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    // CRC-32 (IEEE) of the chunk type and data.
    let mut crc = 0xffff_ffffu32;
    for &b in &png[12..29] {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    png[29..33].copy_from_slice(&(!crc).to_be_bytes());
    png
}
