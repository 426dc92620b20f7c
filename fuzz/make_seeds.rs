//! Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*) and the tiny
//! model the task target loads (fuzz/seeds/task_model.safetensors), all made by the library's
//! own writers so that they are real files of each format.
//!
//! Run from the repository root: `cargo run --release --example fuzz_seeds`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use mgecl::{ClassifierKind, LoadOptions, Model, Task, TaskConfig};
use mgecl_train::checkpoint_bytes;
use mgecl_train::net::{EncoderSpec, TrainNet};
use mgecl_train::{model_metadata, InputSpec};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// A randomly initialised encoder saved as a model file, as training writes them.
fn model_file(arch: &str, widths: [usize; 4], channels: usize, size: usize) -> Res<Vec<u8>> {
    let spec = EncoderSpec {
        arch: arch.parse()?,
        widths: widths.to_vec(),
        in_channels: channels,
    };
    let net = TrainNet::new(spec.clone(), 0, 7, &Device::Cpu)?;
    let input = InputSpec {
        image_size: (size, size),
        in_channels: channels,
        mean: vec![0.5; channels],
        std: vec![0.25; channels],
        invert: channels == 1,
    };
    let training = serde_json::json!({"seed": "fuzz"});
    Ok(checkpoint_bytes(
        &net,
        None,
        &model_metadata(&spec, &input, &training),
    )?)
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Res<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, format)?;
    Ok(out.into_inner())
}

fn main() -> Res<()> {
    let root = PathBuf::from("fuzz");
    let corpus = |target: &str| root.join("corpus").join(target);

    // Models: tiny Conv-4 and ResNet-12 files (fast to mutate), one without metadata.
    let conv4 = model_file("conv4", [4; 4], 1, 8)?;
    write(&root.join("seeds"), "task_model.safetensors", &conv4)?;
    let dir = corpus("model_from_bytes");
    write(&dir, "seed-conv4.safetensors", &conv4)?;
    write(
        &dir,
        "seed-resnet12.safetensors",
        &model_file("resnet12", [2, 3, 4, 5], 3, 12)?,
    )?;
    write(
        &dir,
        "seed-conv4-rgb.safetensors",
        &model_file("conv4", [3; 4], 3, 10)?,
    )?;
    // Their int8 versions (`mgecl quantize`'s format), calibrated on a ramp of inputs.
    for (name, channels, size, f32_file) in [
        ("seed-conv4-int8.safetensors", 1, 8, conv4.clone()),
        (
            "seed-resnet12-int8.safetensors",
            3,
            12,
            model_file("resnet12", [2, 3, 4, 5], 3, 12)?,
        ),
    ] {
        let len = 2 * channels * size * size;
        let images: Vec<f32> = (0..len).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect();
        let int8 = mgecl::quantize_model(&f32_file, &LoadOptions::default(), &images, "ramp")?;
        write(&dir, name, &int8)?;
    }

    // Tasks against the tiny Conv-4: fitted logistic, prototype with a threshold, unfitted,
    // empty.
    let model = Arc::new(Model::from_bytes(&conv4, &LoadOptions::default())?);
    let dir = corpus("task_from_bytes");
    let tmp = std::env::temp_dir().join(format!("mgecl-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let save = |name: &str, task: &Task| -> Res<()> {
        let path = tmp.join(name);
        task.save(&path)?;
        write(&dir, name, &std::fs::read(&path)?)
    };
    let mut task = Task::new(model.clone(), TaskConfig::default())?;
    save("seed-empty.task", &task)?;
    for (label, rows) in [("a", 2), ("b", 1), ("c", 2)] {
        task.add_class(label)?;
        for r in 0..rows {
            let feature: Vec<f32> = (0..4).map(|i| (i + r + label.len()) as f32).collect();
            task.add_example_feature(label, &feature)?;
        }
    }
    task.add_example_feature("b", &[1.0, -2.0, 0.5, 0.0])?;
    save("seed-unfitted.task", &task)?;
    task.fit()?;
    save("seed-logistic.task", &task)?;
    task.set_config(TaskConfig {
        classifier: ClassifierKind::Prototype,
        threshold: Some(0.4),
        ..TaskConfig::default()
    })?;
    task.fit()?;
    save("seed-prototype.task", &task)?;
    std::fs::remove_dir_all(&tmp)?;

    // Images: the reference inputs, Omniglot drawings, and each colour type / format.
    let dir = corpus("image_preprocess");
    for (i, source) in [
        "tests/data/conv4_gray_inputs/0.png",
        "tests/data/resnet12_small_inputs/0.png",
        "tests/data/omniglot_mini/Tagalog/character01/0893_01.png",
    ]
    .iter()
    .enumerate()
    {
        if let Ok(bytes) = std::fs::read(source) {
            write(&dir, &format!("seed-file{i}.png"), &bytes)?;
        }
    }
    let rgb = RgbImage::from_fn(9, 7, |x, y| Rgb([(x * 28) as u8, (y * 36) as u8, 200]));
    let rgba = RgbaImage::from_fn(5, 6, |x, y| Rgba([(x * 50) as u8, 9, (y * 40) as u8, 128]));
    let colour = DynamicImage::ImageRgb8(rgb);
    let gray8 = DynamicImage::from(colour.to_luma8());
    let gray16 = DynamicImage::from(colour.to_luma16());
    let alpha = DynamicImage::ImageRgba8(rgba);
    let alpha_of_colour = DynamicImage::from(colour.to_rgba8());
    let images = [
        ("seed-rgb.png", &colour, ImageFormat::Png),
        ("seed-rgba.png", &alpha, ImageFormat::Png),
        ("seed-gray16.png", &gray16, ImageFormat::Png),
        ("seed-rgb.jpg", &colour, ImageFormat::Jpeg),
        ("seed-gray.jpg", &gray8, ImageFormat::Jpeg),
        ("seed-rgb.webp", &colour, ImageFormat::WebP),
        ("seed-rgb.bmp", &colour, ImageFormat::Bmp),
        ("seed-rgba.gif", &alpha_of_colour, ImageFormat::Gif),
        ("seed-gray.tiff", &gray8, ImageFormat::Tiff),
    ];
    for (name, image, format) in images {
        write(&dir, name, &encode(image, format)?)?;
    }
    // The first box of a HEIC file (refused by name).
    write(&dir, "seed-heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic")?;
    // Raw buffers: format, width, height, stride (LE u16), one spare byte, then pixels.
    let mut raw = vec![1u8, 4, 3, 12, 0, 0];
    raw.extend((0..36).map(|v| v as u8 * 7));
    write(&dir, "seed-raw-rgb", &raw)?;
    let mut raw = vec![0u8, 5, 2, 8, 0, 0];
    raw.extend((0..13).map(|v| v as u8 * 19));
    write(&dir, "seed-raw-gray-stride", &raw)?;

    // Episodes files.
    let dir = corpus("episodes_parse");
    write(
        &dir,
        "seed-one.json",
        br#"{"episodes": [{"support": [{"label": "a", "path": "x/1.png"}, {"label": "b", "path": "y/1.png"}],
               "query":   [{"label": "a", "path": "x/2.png"}]}]}"#,
    )?;
    write(
        &dir,
        "seed-two.json",
        "{\"episodes\":[{\"support\":[{\"label\":\"\u{e9}\",\"path\":\"a.png\"},{\"label\":\"z\",\"path\":\"b.png\"}],\"query\":[{\"label\":\"z\",\"path\":\"c.png\"},{\"label\":\"\u{e9}\",\"path\":\"d.png\"}]},{\"support\":[{\"label\":\"p\",\"path\":\"../p.png\"},{\"label\":\"q\",\"path\":\"q.png\"}],\"query\":[{\"label\":\"p\",\"path\":\"r.png\"}]}]}".as_bytes(),
    )?;
    println!("seeds written under {}", root.display());
    Ok(())
}
