//! Quantised (int8) models through the public API: `quantize_model` on the PyTorch reference
//! fixtures gives a file that loads like any model, runs on the int8 engine only, stays close
//! to the reference features, says what it was quantised from, and refuses tampering clearly.
//! (The engine's integer arithmetic is checked exactly in `src/model/cpu_int8.rs`.)

use mgecl_test_support as common;

use common::{data, read_tensor};
use mgecl::{quantize_model, Engine, ImageSource, LoadOptions, Model, QuantizationInfo};
use safetensors::{Dtype, SafeTensors};

/// The fixture `name`'s f32 model, its file's bytes and its 4 preprocessed inputs.
fn fixture(name: &str) -> (Model, Vec<u8>, Vec<f32>) {
    let bytes = std::fs::read(data(&format!("{name}.safetensors"))).unwrap();
    let model = Model::from_bytes(&bytes, &LoadOptions::default()).unwrap();
    let mut images = Vec::new();
    for i in 0..4 {
        let path = data(&format!("{name}_inputs/{i}.png"));
        images.extend(
            model
                .preprocessor()
                .preprocess(&ImageSource::Path(&path))
                .unwrap(),
        );
    }
    (model, bytes, images)
}

/// The error of a call expected to fail, as its message.
fn error<T>(r: Result<T, mgecl::Error>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error"),
    }
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let norm_a = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let norm_b = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (norm_a * norm_b)
}

fn check(name: &str) {
    let (f32_model, bytes, images) = fixture(name);
    let quantized = quantize_model(&bytes, &LoadOptions::default(), &images, "fixture").unwrap();
    let model = Model::from_bytes(&quantized, &LoadOptions::default()).unwrap();
    let info = model.info();
    assert_eq!(info.engine.name(), "cpu-int8");
    assert_eq!(info.widths, f32_model.info().widths);
    assert_ne!(info.fingerprint, f32_model.info().fingerprint);
    let q = QuantizationInfo::from_metadata(&info.metadata[mgecl::QUANTIZATION_KEY]).unwrap();
    assert_eq!(q.source_fingerprint, f32_model.info().fingerprint);
    assert_eq!(
        (q.calibration_images, q.calibration_data.as_str()),
        (4, "fixture")
    );

    // Every convolution weight is int8; the weights take about a quarter of the f32 bytes.
    let file = SafeTensors::deserialize(&quantized).unwrap();
    let weights: Vec<_> = file
        .tensors()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".weight"))
        .collect();
    assert!(weights.iter().all(|(_, t)| t.dtype() == Dtype::I8));
    assert!(
        quantized.len() * 3 < bytes.len(),
        "{} vs {}",
        quantized.len(),
        bytes.len()
    );

    // Features of the reference images against PyTorch's f64 ones: the direction kept
    // (the classifiers L2-normalise), image by image.
    let features = model.embed_preprocessed(&images).unwrap();
    let (expected, shape) = read_tensor(&format!("{name}_expected.safetensors"), "features_f64");
    assert_eq!(features.shape(), shape.as_slice());
    for (i, row) in features.rows().into_iter().enumerate() {
        let row: Vec<f32> = row.to_vec();
        let c = cosine(&row, &expected[i * shape[1]..(i + 1) * shape[1]]);
        println!("{name}: image {i}: cosine to the f64 reference {c:.6}");
        assert!(c > 0.9995, "{name}: image {i}: cosine {c}");
    }
    // The same through the image path, on any thread count: identical.
    let paths: Vec<_> = (0..4)
        .map(|i| data(&format!("{name}_inputs/{i}.png")))
        .collect();
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let serial = one_thread.install(|| model.embed_paths(&paths).unwrap());
    assert_eq!(serial, features);
}

#[test]
fn conv4_quantized_follows_pytorch() {
    check("conv4_gray");
}

#[test]
fn resnet12_quantized_follows_pytorch() {
    check("resnet12_small");
}

#[test]
fn a_quantized_model_runs_on_the_int8_engine_only() {
    let (_, bytes, images) = fixture("conv4_gray");
    let quantized = quantize_model(&bytes, &LoadOptions::default(), &images, "fixture").unwrap();
    let candle = LoadOptions::default().with_engine(Engine::Candle);
    let message = error(Model::from_bytes(&quantized, &candle));
    assert!(message.contains("int8"), "{message}");
    let auto = LoadOptions::default().with_device(mgecl::DeviceChoice::Auto);
    let model = Model::from_bytes(&quantized, &auto).unwrap();
    assert_eq!(model.info().device, "cpu");
    // Quantising twice, or with no images or a partial one, is refused.
    let again = quantize_model(&quantized, &LoadOptions::default(), &images, "x");
    assert!(error(again).contains("already quantised"));
    assert!(quantize_model(&bytes, &LoadOptions::default(), &[], "x").is_err());
    let partial = &images[..images.len() - 1];
    assert!(quantize_model(&bytes, &LoadOptions::default(), partial, "x").is_err());
}

/// The quantised file with tensor `name`'s data replaced by `data` (same dtype and shape).
fn tampered(bytes: &[u8], name: &str, data: Vec<u8>) -> Vec<u8> {
    let file = SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let d = if n == name {
                data.clone()
            } else {
                t.data().to_vec()
            };
            (n, t.dtype(), t.shape().to_vec(), d)
        })
        .collect();
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, dtype, shape, d)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), d).unwrap();
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize(views, header.metadata().clone()).unwrap()
}

#[test]
fn tampered_quantized_files_are_clear_errors() {
    let (_, bytes, images) = fixture("conv4_gray");
    let quantized = quantize_model(&bytes, &LoadOptions::default(), &images, "fixture").unwrap();
    let load = |b: &[u8]| Model::from_bytes(b, &LoadOptions::default());
    for (what, name, value) in [
        ("zero input scale", "layer2.0.input_scale", 0.0f32),
        ("negative weight scale", "layer3.0.weight_scale", -1.0),
        ("NaN input scale", "layer1.0.input_scale", f32::NAN),
    ] {
        let file = SafeTensors::deserialize(&quantized).unwrap();
        let len = file.tensor(name).unwrap().data().len() / 4;
        let data = std::iter::repeat_n(value, len)
            .flat_map(f32::to_le_bytes)
            .collect();
        let message = error(load(&tampered(&quantized, name, data)));
        assert!(message.contains(name), "{what}: {message}");
    }
    // The marker without int8 weights (an f32 file claiming to be quantised).
    let (_, header) = SafeTensors::read_metadata(&quantized).unwrap();
    let marker = header.metadata().as_ref().unwrap()[mgecl::QUANTIZATION_KEY].clone();
    let options = LoadOptions::default().with_metadata(mgecl::QUANTIZATION_KEY, marker);
    let message = error(Model::from_bytes(&bytes, &options));
    assert!(message.contains("I8"), "{message}");
    // A marker of an unknown version.
    let options = LoadOptions::default().with_metadata(mgecl::QUANTIZATION_KEY, "{\"version\":9}");
    assert!(Model::from_bytes(&quantized, &options).is_err());
}
