//! Training steps against PyTorch: every committed fixture of `tests/data/train/` (written by
//! `make_train_fixtures.py` there, PyTorch in float64) is run on both engines; every tensor
//! after the steps must be within 2e-5 of PyTorch's, every loss within 1e-5. The CPU engine is
//! also run on one thread: the thread count may change results only by float rounding.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mgecl::train::net::NamedValues;
use mgecl::train::trainer::run_step_fixture;
use mgecl::Engine;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/train");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.ends_with(".safetensors") && !name.ends_with("_expected.safetensors")
        })
        .collect();
    found.sort();
    assert!(found.len() >= 4, "training fixtures missing in {dir:?}");
    found
}

fn expected(fixture: &std::path::Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let path = fixture.with_file_name(format!(
        "{}_expected.safetensors",
        fixture.file_stem().unwrap().to_string_lossy()
    ));
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.names()
        .into_iter()
        .map(|name| {
            let t = st.tensor(name).unwrap();
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name.to_string(), (t.shape().to_vec(), v))
        })
        .collect()
}

/// Largest deviation of any tensor (other than `loss`) and of the losses.
fn compare(got: &[NamedValues], want: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "tensor count");
    let (mut tensors, mut losses) = (0f32, 0f32);
    for (name, shape, values) in got {
        let (want_shape, want_values) = want
            .get(name)
            .unwrap_or_else(|| panic!("{name} not expected"));
        assert_eq!(shape, want_shape, "{name}");
        let err = values
            .iter()
            .zip(want_values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(values.iter().all(|v| v.is_finite()), "{name} not finite");
        if name == "loss" {
            losses = losses.max(err);
        } else {
            tensors = tensors.max(err);
        }
    }
    (tensors, losses)
}

#[test]
fn steps_match_pytorch_on_both_engines() {
    for fixture in fixtures() {
        let bytes = std::fs::read(&fixture).unwrap();
        let want = expected(&fixture);
        for engine in [Engine::Auto, Engine::Candle] {
            let got = run_step_fixture(&bytes, engine).unwrap();
            let (tensors, losses) = compare(&got, &want);
            println!(
                "{} {}: max tensor error {tensors:.2e}, max loss error {losses:.2e}",
                fixture.file_name().unwrap().to_string_lossy(),
                engine.name()
            );
            assert!(
                tensors <= 2e-5,
                "{fixture:?} {engine:?}: tensor error {tensors}"
            );
            assert!(
                losses <= 1e-5,
                "{fixture:?} {engine:?}: loss error {losses}"
            );
        }
    }
}

#[test]
fn thread_count_changes_only_rounding() {
    for fixture in fixtures() {
        let bytes = std::fs::read(&fixture).unwrap();
        let many = run_step_fixture(&bytes, Engine::Auto).unwrap();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| run_step_fixture(&bytes, Engine::Auto).unwrap());
        let again = run_step_fixture(&bytes, Engine::Auto).unwrap();
        assert_eq!(many, again, "{fixture:?}: not deterministic");
        for ((name, _, a), (_, _, b)) in many.iter().zip(&one) {
            let err = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                err <= 2e-6,
                "{fixture:?} {name}: 1 vs many threads differ by {err}"
            );
        }
    }
}

#[test]
fn a_malformed_fixture_is_an_error() {
    let fixture = &fixtures()[0];
    let bytes = std::fs::read(fixture).unwrap();
    assert!(run_step_fixture(&bytes[..bytes.len() / 2], Engine::Auto).is_err());
    assert!(run_step_fixture(b"not a fixture", Engine::Auto).is_err());
}
