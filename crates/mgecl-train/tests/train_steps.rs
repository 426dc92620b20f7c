//! Training steps against PyTorch: every committed fixture of `tests/data/train/` (written by
//! `make_train_fixtures.py` there, PyTorch in float64) is run on both engines; every tensor
//! after the steps must be within 2e-5 of PyTorch's, every loss within 1e-5. The CPU engine is
//! also run on one thread: the thread count may change results only by float rounding.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mgecl::Engine;
use mgecl_train::net::NamedValues;
use mgecl_train::trainer::run_step_fixture;

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
    assert!(found.len() >= 5, "training fixtures missing in {dir:?}");
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

/// Meta-training's path (a loss of the features built with candle, backpropagated into the
/// encoder) gives the same steps on both engines: candle's autograd is the reference that the
/// fixtures above hold to PyTorch.
#[test]
fn feature_loss_steps_agree_across_engines() {
    use candle_core::Device;
    use mgecl_train::loss::{class_hinge, instance_contrastive};
    use mgecl_train::net::{EncoderSpec, TrainNet};
    use mgecl_train::optim::Sgd;
    use mgecl_train::rng::Rng;
    use mgecl_train::trainer::Trainer;
    use mgecl_train::Batch;

    for (arch, widths, channels, size) in [
        ("conv4", vec![16; 4], 1, 21),
        ("resnet12", vec![16, 16, 24, 32], 3, 20),
    ] {
        let spec = EncoderSpec {
            arch: arch.parse().unwrap(),
            widths,
            in_channels: channels,
        };
        let (ways, shots, queries, views) = (3, 2, 2, 1);
        let n = ways * shots * (1 + views) + ways * queries;
        let mut rng = Rng::new(5, 0);
        let batch = Batch {
            input: (0..n * channels * size * size)
                .map(|_| rng.normal() as f32)
                .collect(),
            n,
            labels: Vec::new(),
            rotations: Vec::new(),
            teacher_logits: Vec::new(),
        };
        let run = |engine: Engine| {
            let net = TrainNet::new(spec.clone(), 0, 11, &Device::Cpu).unwrap();
            let mut trainer = Trainer::new(net, Sgd::new(0.1, 0.9, 5e-4), engine).unwrap();
            // One step: over several, this loss (normalised features of a tiny random batch
            // at lr 0.1) amplifies float rounding in ResNet-12's first block past any fixed
            // bound on either engine, while the losses stay equal to 1e-6 relative.
            trainer
                .step_on_features(&batch, (channels, size, size), |f| {
                    let support = f.narrow(0, 0, ways * shots)?;
                    let query = f.narrow(0, ways * shots * (1 + views), ways * queries)?;
                    let labels: Vec<usize> = (0..ways * queries).map(|q| q / queries).collect();
                    // Margin 2 keeps every hinge term active (cosines differ by at most
                    // 2): no kink for rounding to flip.
                    let class = class_hinge(&support, ways, &query, &labels, 2.0)?;
                    let mut groups: Vec<usize> = (0..ways * shots).collect();
                    groups.extend(0..ways * shots);
                    groups.extend((0..ways * queries).map(|q| 100 + q));
                    let inst = instance_contrastive(f, &groups, 0.5)?;
                    Ok((class + inst)?)
                })
                .unwrap();
            (trainer.tensors().unwrap(), trainer.momentum().unwrap())
        };
        let (fast, fast_momentum) = run(Engine::Auto);
        let (reference, reference_momentum) = run(Engine::Candle);
        assert_eq!(fast_momentum.len(), reference_momentum.len());
        let mut worst = 0f32;
        for ((name, shape, a), (name2, shape2, b)) in fast
            .iter()
            .zip(&reference)
            .chain(fast_momentum.iter().zip(&reference_momentum))
        {
            assert_eq!((name, shape), (name2, shape2));
            let err = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            worst = worst.max(err);
            assert!(err <= 2e-5, "{arch} {name}: engines differ by {err}");
        }
        // The steps moved the encoder: the comparison is not between two untouched copies.
        let start = TrainNet::new(spec.clone(), 0, 11, &Device::Cpu)
            .unwrap()
            .export()
            .unwrap();
        let moved = start
            .iter()
            .zip(&fast)
            .any(|((_, _, a), (_, _, b))| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3));
        assert!(moved, "{arch}: the steps changed nothing");
        println!("{arch}: engines agree within {worst:.2e}");
    }
}
