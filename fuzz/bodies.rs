//! What each fuzz target does with its input, shared by the cargo-fuzz targets
//! (fuzz/fuzz_targets/*.rs) and the corpus replay test (crates/mgecl-train/tests/fuzz_corpora.rs), which runs
//! every committed corpus and crash input through the same code on every `cargo test`.
//! Each function must return normally for any input: a panic is a bug.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use mgecl::{
    Engine, EngineKind, ImageSource, LoadOptions, Metadata, Model, PixelBuffer, PixelFormat,
    Preprocessor, Task,
};
use mgecl_train::evaluate::EpisodesFile;

/// PyTorch checkpoint conversion of untrusted bytes (1-channel 28 px metadata): a model that
/// loads, or an error. The input is converted as a checkpoint, and also as the pickle
/// (`data.pkl`) of a real checkpoint's archive: a mutated `data.pkl` inside a zip fails the
/// entry's CRC before the parser sees it, so the parser is fed directly too.
pub fn convert_checkpoint(data: &[u8]) {
    convert_and_load(data);
    convert_and_load(&with_pickle(data));
}

fn convert_and_load(checkpoint: &[u8]) {
    let options = mgecl::convert::ConvertOptions::new(
        [("image_size", "28"), ("mean", "[0.5]"), ("std", "[0.25]")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    if let Ok(conversion) = mgecl::convert::convert_checkpoint(checkpoint, &options) {
        assert!(!conversion.kept.is_empty());
        let model = Model::from_bytes(&conversion.bytes, &LoadOptions::default())
            .expect("a converted model loads");
        assert_eq!(model.info().fingerprint, conversion.info.fingerprint);
    }
}

/// The entries of the tiny DataParallel Conv-4 seed checkpoint (its storages), read once.
fn template() -> &'static [(String, Vec<u8>)] {
    static CELL: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    CELL.get_or_init(|| {
        let seed = include_bytes!("corpus/convert_checkpoint/seed-conv4-dataparallel.pth");
        let config = zip::read::Config {
            archive_offset: zip::read::ArchiveOffset::Known(0),
        };
        let mut archive =
            zip::ZipArchive::with_config(config, std::io::Cursor::new(&seed[..])).expect("seed");
        (0..archive.len())
            .map(|i| {
                let mut entry = archive.by_index(i).expect("seed entry");
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).expect("seed entry");
                (entry.name().expect("name").into_owned(), bytes)
            })
            .collect()
    })
}

/// The template archive with `pickle` as its `data.pkl`.
fn with_pickle(pickle: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in template() {
        let bytes = if name.ends_with("/data.pkl") {
            pickle
        } else {
            bytes
        };
        writer.start_file(name.as_str(), stored).expect("zip");
        writer.write_all(bytes).expect("zip");
    }
    writer.finish().expect("zip").into_inner()
}

/// Model loading from untrusted bytes: any input must give a model or an error, never a
/// panic, an abort or an allocation beyond what the bytes justify.
pub fn model_from_bytes(data: &[u8]) {
    let fast = LoadOptions::default();
    if let Ok(model) = Model::from_bytes(data, &fast) {
        // A loaded model must also load on the other engine and describe itself; a quantised
        // one runs on the int8 engine only, and candle refuses it as an invalid argument.
        let candle = LoadOptions::default().with_engine(Engine::Candle);
        let other = Model::from_bytes(data, &candle);
        if model.info().engine == EngineKind::CpuInt8 {
            assert!(matches!(other, Err(mgecl::Error::InvalidArgument(_))));
        } else {
            let other = other.expect("loads on one engine, not the other");
            assert_eq!(model.info().fingerprint, other.info().fingerprint);
        }
        // Embed one small blank image when the input size keeps that cheap.
        let (h, w) = model.info().input.image_size;
        if h * w <= 32 * 32 && model.info().widths.iter().all(|&c| c <= 64) {
            let pixels = vec![0u8; h * w];
            let image = ImageSource::Pixels(PixelBuffer {
                data: &pixels,
                width: w as u32,
                height: h as u32,
                stride: w,
                format: PixelFormat::Gray8,
            });
            let _ = model.embed(&[image]);
        }
    }
}

fn preprocessor(size: &str, mean: &str, std: &str, invert: &str, channels: usize) -> Preprocessor {
    let raw: BTreeMap<String, String> = [
        ("arch", "conv4"),
        ("image_size", size),
        ("mean", mean),
        ("std", std),
        ("invert", invert),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let metadata = Metadata::parse(raw, None, channels).expect("valid metadata");
    Preprocessor::new(&metadata.input).expect("1 or 3 channels")
}

fn preprocessors() -> &'static [Preprocessor; 2] {
    static CELL: OnceLock<[Preprocessor; 2]> = OnceLock::new();
    CELL.get_or_init(|| {
        [
            preprocessor("28", "[0.1]", "[0.3]", "true", 1),
            preprocessor(
                "[84, 84]",
                "[0.5, 0.5, 0.5]",
                "[0.25, 0.25, 0.25]",
                "false",
                3,
            ),
        ]
    })
}

/// Image decoding and preprocessing of untrusted bytes, for a grey and an RGB model: as an
/// encoded file (PNG/JPEG), and as a raw pixel buffer whose layout the first six bytes pick
/// (format, width, height, stride as LE u16, one spare byte).
pub fn image_preprocess(data: &[u8]) {
    for pre in preprocessors() {
        if let Ok(values) = pre.preprocess(&ImageSource::Encoded(data)) {
            assert_eq!(values.len(), pre.input_len());
            assert!(values.iter().all(|v| v.is_finite()));
        }
    }
    if data.len() < 6 {
        return;
    }
    let format = [PixelFormat::Gray8, PixelFormat::Rgb8, PixelFormat::Rgba8][data[0] as usize % 3];
    let width = u32::from(data[1]) % 64;
    let height = u32::from(data[2]) % 64;
    let stride = usize::from(u16::from_le_bytes([data[3], data[4]]));
    let pixels = PixelBuffer {
        data: &data[6..],
        width,
        height,
        stride,
        format,
    };
    for pre in preprocessors() {
        if let Ok(values) = pre.preprocess(&ImageSource::Pixels(pixels)) {
            assert_eq!(values.len(), pre.input_len());
            assert!(values.iter().all(|v| v.is_finite()));
        }
    }
}

fn model() -> Arc<Model> {
    static CELL: OnceLock<Arc<Model>> = OnceLock::new();
    CELL.get_or_init(|| {
        let bytes = include_bytes!("seeds/task_model.safetensors");
        Arc::new(Model::from_bytes(bytes, &LoadOptions::default()).expect("the seed model loads"))
    })
    .clone()
}

/// Task-file loading from untrusted bytes against a fixed tiny model. The library skips its
/// checksum under `cfg(fuzzing)` so that mutations reach the parser behind it.
pub fn task_from_bytes(data: &[u8]) {
    if let Ok(mut task) = Task::from_bytes(data, model()) {
        // A loaded task must be usable: list, fit, classify, save and reload.
        let dim = task.model().feature_dim();
        let _ = task.classes();
        if task.fit().is_ok() {
            let query = ndarray::Array2::<f32>::from_elem((2, dim), 0.5);
            task.classify_features(query.view())
                .expect("a fitted task classifies");
        }
    }
}

/// Episodes-file parsing of untrusted text.
pub fn episodes_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(file) = EpisodesFile::parse(text) {
            assert!(!file.episodes.is_empty());
            // What parses must survive a round trip through its own JSON.
            let again = serde_json::to_string(&file).expect("serialises");
            EpisodesFile::parse(&again).expect("round trip parses");
        }
    }
}
