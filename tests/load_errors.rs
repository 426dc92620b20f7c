//! Every way a model file or an image can be bad gives a distinct, clear error — never a panic.

use mgecl_test_support as common;

use std::collections::BTreeMap;

use common::data;
use mgecl::{Error, ImageLimits, ImageSource, LoadOptions, Model, ModelProblem};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

fn conv4_bytes() -> Vec<u8> {
    std::fs::read(data("conv4_gray.safetensors")).unwrap()
}

fn load(bytes: &[u8]) -> Result<Model, Error> {
    Model::from_bytes(bytes, &LoadOptions::default())
}

fn problem(result: Result<Model, Error>) -> ModelProblem {
    match result {
        Err(Error::InvalidModel { problem, detail }) => {
            println!("{problem:?}: {detail}");
            problem
        }
        Err(other) => panic!("expected InvalidModel, got {other}"),
        Ok(_) => panic!("expected an error, the model loaded"),
    }
}

type Entry = (Dtype, Vec<usize>, Vec<u8>);

/// Rewrites the conv4 fixture through `edit`, which sees every tensor and may change or drop it.
fn rewrite(edit: impl Fn(&str, Entry) -> Option<Entry>) -> Vec<u8> {
    let bytes = conv4_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut entries = Vec::new();
    for (name, view) in st.tensors() {
        if let Some(e) = edit(
            &name,
            (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
        ) {
            entries.push((name, e));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = entries
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, header.metadata().clone()).unwrap()
}

/// Replaces the JSON header of a safetensors buffer, keeping the data.
fn with_header(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    out
}

#[test]
fn the_unmodified_fixture_loads() {
    assert!(load(&conv4_bytes()).is_ok());
    assert!(
        load(&rewrite(|_, e| Some(e))).is_ok(),
        "the rewrite helper itself must be lossless"
    );
}

#[test]
fn missing_file() {
    let err = Model::load(data("no-such-model.safetensors"), &LoadOptions::default())
        .err()
        .unwrap();
    match err {
        Error::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected Io, got {other}"),
    }
}

#[test]
fn not_safetensors() {
    let png = std::fs::read(data("conv4_gray_inputs/0.png")).unwrap();
    assert_eq!(problem(load(&png)), ModelProblem::NotSafetensors);
    assert_eq!(problem(load(b"")), ModelProblem::NotSafetensors);
    assert_eq!(
        problem(load(b"\x10\0\0\0\0\0\0\0not json at all!")),
        ModelProblem::NotSafetensors
    );
}

#[test]
fn truncated() {
    let bytes = conv4_bytes();
    assert_eq!(
        problem(load(&bytes[..bytes.len() / 2])),
        ModelProblem::Truncated
    );
    assert_eq!(
        problem(load(&bytes[..bytes.len() - 1])),
        ModelProblem::Truncated
    );
    assert_eq!(
        problem(load(&bytes[..100])),
        ModelProblem::Truncated,
        "cut inside the header"
    );
}

#[test]
fn missing_tensor() {
    let bytes = rewrite(|name, e| (name != "layer3.1.running_var").then_some(e));
    assert_eq!(problem(load(&bytes)), ModelProblem::MissingTensor);
}

#[test]
fn wrong_shape() {
    let bytes = rewrite(|name, (d, s, b)| {
        if name == "layer2.0.bias" {
            Some((d, vec![32], b[..32 * 4].to_vec()))
        } else {
            Some((d, s, b))
        }
    });
    assert_eq!(problem(load(&bytes)), ModelProblem::WrongShape);
    let bytes = rewrite(|name, (d, s, b)| {
        if name == "layer1.0.weight" {
            Some((d, vec![64, 1, 9], b))
        } else {
            Some((d, s, b))
        }
    });
    assert_eq!(problem(load(&bytes)), ModelProblem::WrongShape);
}

#[test]
fn wrong_dtype() {
    let bytes = rewrite(|name, (d, s, b)| {
        if name == "layer4.1.weight" {
            let widened: Vec<u8> = b
                .chunks_exact(4)
                .flat_map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
                .collect();
            Some((Dtype::F64, s, widened))
        } else {
            Some((d, s, b))
        }
    });
    assert_eq!(problem(load(&bytes)), ModelProblem::WrongDtype);
}

#[test]
fn declared_shape_larger_than_the_file() {
    // Shape grown, offsets untouched: the header contradicts itself.
    let bytes = with_header(&conv4_bytes(), |h| {
        h["layer1.0.bias"]["shape"] = serde_json::json!([4_000_000_000u64]);
    });
    assert_eq!(problem(load(&bytes)), ModelProblem::InconsistentHeader);
    // Shape and offsets grown consistently: the data would lie beyond the end of the file.
    // (Must fail without allocating the declared 16 GB.)
    let bytes = with_header(&conv4_bytes(), |h| {
        let map = h.as_object_mut().unwrap();
        let (name, last_end) = map
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .map(|(k, v)| (k.clone(), v["data_offsets"][1].as_u64().unwrap()))
            .max_by_key(|(_, end)| *end)
            .unwrap();
        let start = map[&name]["data_offsets"][0].as_u64().unwrap();
        let n = 4_000_000_000u64;
        map.get_mut(&name).unwrap()["shape"] = serde_json::json!([n]);
        map.get_mut(&name).unwrap()["data_offsets"] = serde_json::json!([start, start + 4 * n]);
        assert!(last_end > start);
    });
    assert_eq!(problem(load(&bytes)), ModelProblem::Truncated);
}

#[test]
fn non_finite_weights() {
    for bad in [f32::NAN, f32::INFINITY] {
        let bytes = rewrite(|name, (d, s, mut b)| {
            if name == "layer2.0.weight" {
                b[40..44].copy_from_slice(&bad.to_le_bytes());
            }
            Some((d, s, b))
        });
        assert_eq!(problem(load(&bytes)), ModelProblem::NonFiniteWeight);
    }
}

#[test]
fn metadata_missing_then_supplied_by_the_caller() {
    let stripped = with_header(&conv4_bytes(), |h| {
        h.as_object_mut().unwrap().remove("__metadata__");
    });
    assert_eq!(problem(load(&stripped)), ModelProblem::BadMetadata);
    let overrides: BTreeMap<String, String> =
        [("image_size", "28"), ("mean", "[0.9]"), ("std", "[0.25]")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let mut options = LoadOptions::default();
    options.metadata_overrides = overrides;
    let model = Model::from_bytes(&stripped, &options).unwrap();
    assert_eq!(
        model.info().arch,
        mgecl::Architecture::Conv4,
        "architecture guessed from the key names"
    );
    // Same features as the file with metadata.
    let full = load(&conv4_bytes()).unwrap();
    let p = data("conv4_gray_inputs/2.png");
    assert_eq!(
        model.embed_paths(&[&p]).unwrap(),
        full.embed_paths(&[&p]).unwrap()
    );
    // A wrong override is caught.
    let mut bad = options.clone();
    bad.metadata_overrides
        .insert("mean".into(), "[0.5, 0.5, 0.5]".into());
    assert_eq!(
        problem(Model::from_bytes(&stripped, &bad)),
        ModelProblem::BadMetadata
    );
}

fn conv4() -> Model {
    load(&conv4_bytes()).unwrap()
}

#[test]
fn empty_and_corrupt_images() {
    let model = conv4();
    let err = model.embed(&[ImageSource::Encoded(b"")]).unwrap_err();
    assert!(matches!(err, Error::InvalidImage(_)), "{err}");
    let err = model
        .embed(&[ImageSource::Encoded(b"this is not an image")])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidImage(_)), "{err}");
    let png = std::fs::read(data("conv4_gray_inputs/0.png")).unwrap();
    let mut corrupt = png.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
    let err = model.embed(&[ImageSource::Encoded(&corrupt)]).unwrap_err();
    assert!(matches!(err, Error::InvalidImage(_)), "{err}");
    let err = model
        .embed(&[ImageSource::Encoded(&png[..png.len() / 3])])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidImage(_)), "{err}");
    let err = model.embed(&[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let err = model.embed_paths(&[data("missing.png")]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn decompression_bomb_is_refused_before_allocation() {
    let png = common::decompression_bomb_png();
    let model = conv4();
    let err = model.embed(&[ImageSource::Encoded(&png)]).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err}");

    // Limits are configurable: a real 300x20 image against a 256-px limit.
    let mut wide = Vec::new();
    image::GrayImage::new(300, 20)
        .write_to(
            &mut std::io::Cursor::new(&mut wide),
            image::ImageFormat::Png,
        )
        .unwrap();
    let strict = model
        .preprocessor()
        .clone()
        .with_limits(ImageLimits::new(256, 16384, 512 << 20));
    let err = strict.preprocess(&ImageSource::Encoded(&wide)).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
    assert!(model
        .preprocessor()
        .preprocess(&ImageSource::Encoded(&wide))
        .is_ok());

    // The same through LoadOptions, for encoded images and raw pixels; and raised above the
    // default for an app with very large images.
    let options = LoadOptions::default().with_image_limits(ImageLimits::new(256, 256, 1 << 20));
    let strict = Model::from_bytes(&conv4_bytes(), &options).unwrap();
    assert_eq!(strict.preprocessor().limits().max_width, 256);
    let err = strict.embed(&[ImageSource::Encoded(&wide)]).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
    let pixels = vec![0u8; 300 * 20];
    let raw = ImageSource::Pixels(mgecl::PixelBuffer {
        data: &pixels,
        width: 300,
        height: 20,
        stride: 300,
        format: mgecl::PixelFormat::Gray8,
    });
    let err = strict.embed(&[raw]).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
    let mut tall = Vec::new();
    image::GrayImage::new(1, 20_000)
        .write_to(
            &mut std::io::Cursor::new(&mut tall),
            image::ImageFormat::Png,
        )
        .unwrap();
    let err = model.embed(&[ImageSource::Encoded(&tall)]).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
    let mut taller = ImageLimits::default();
    taller.max_height = 32_768;
    let generous = LoadOptions::default().with_image_limits(taller);
    let generous = Model::from_bytes(&conv4_bytes(), &generous).unwrap();
    assert!(generous.embed(&[ImageSource::Encoded(&tall)]).is_ok());
}

#[test]
fn bad_pixel_buffers() {
    let model = conv4();
    let data = [0u8; 100];
    let buf = |w, h, stride| mgecl::PixelBuffer {
        data: &data,
        width: w,
        height: h,
        stride,
        format: mgecl::PixelFormat::Rgb8,
    };
    for (w, h, stride) in [(0, 5, 15), (5, 0, 15), (5, 5, 14), (10, 10, 30)] {
        let err = model
            .embed(&[ImageSource::Pixels(buf(w, h, stride))])
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidImage(_) | Error::InvalidArgument(_)),
            "{err}"
        );
    }
    assert!(model.embed(&[ImageSource::Pixels(buf(5, 5, 15))]).is_ok());
}

/// A file whose metadata asks for 4096x4096 inputs is refused at load, before its forward pass
/// could allocate gigabytes, with a message naming what one image needs and the limit; a
/// caller who raises the limit gets the model.
#[test]
fn an_input_size_beyond_the_memory_bound_is_refused_at_load() {
    let huge = with_header(&conv4_bytes(), |h| {
        h["__metadata__"]["image_size"] = "4096".into();
    });
    let start = std::time::Instant::now();
    let err = load(&huge).err().unwrap();
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    let message = err.to_string();
    assert!(matches!(err, Error::LimitExceeded(_)), "{message}");
    // Conv-4 of width 64 on 4096x4096 gray: 4 bytes x 4096^2 x (2 + 1 + 64 + 16) = 5312 MiB.
    assert!(
        message.contains("4096x4096")
            && message.contains("5312 MiB of activations")
            && message.contains("over the limit of 1024 MiB"),
        "{message}"
    );
    let overridden = LoadOptions::default().with_metadata("image_size", "4096");
    let err = Model::from_bytes(&conv4_bytes(), &overridden)
        .err()
        .unwrap();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
    let roomy = overridden.with_max_embed_bytes(16 << 30);
    assert!(Model::from_bytes(&conv4_bytes(), &roomy).is_ok());
}

/// A bound that holds three images cuts a batch of eight into passes of three: the same
/// features as one pass.
#[test]
fn a_tight_memory_bound_cuts_batches_without_changing_features() {
    let free = conv4();
    assert_eq!(free.images_per_pass(), 32);
    let tight = Model::from_bytes(
        &conv4_bytes(),
        &LoadOptions::default().with_max_embed_bytes(free.pass_bytes(3)),
    )
    .unwrap();
    assert_eq!(tight.images_per_pass(), 3);
    let paths: Vec<_> = (0..8)
        .map(|i| data(&format!("conv4_gray_inputs/{}.png", i % 4)))
        .collect();
    let a = free.embed_paths(&paths).unwrap();
    let b = tight.embed_paths(&paths).unwrap();
    let d = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(d <= 1e-5, "passes of 3 and of 8 differ by {d}");
    let one_short = LoadOptions::default().with_max_embed_bytes(free.pass_bytes(1) - 1);
    let err = Model::from_bytes(&conv4_bytes(), &one_short).err().unwrap();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
}
