//! Decoding honours the EXIF orientation of photos (JPEG, and PNG's eXIf chunk): each fixture
//! of tests/data/exif stores the upright picture turned or mirrored, with the orientation tag
//! that puts it back (made by tests/data/exif/make_exif_fixtures.py; Pillow's
//! `ImageOps.exif_transpose` gives the upright picture within 1 grey level for each).

use mgecl_test_support as common;

use std::collections::BTreeMap;

use common::data;
use mgecl::{ImageSource, Metadata, Preprocessor};

/// A grey 32 x 48 (H x W) preprocessor with mean 0 and std 1: values are pixel / 255.
fn preprocessor() -> Preprocessor {
    let raw: BTreeMap<String, String> = [
        ("arch", "conv4"),
        ("image_size", "[32, 48]"),
        ("mean", "[0.0]"),
        ("std", "[1.0]"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let metadata = Metadata::parse(raw, None, 1).unwrap();
    Preprocessor::new(&metadata.input).unwrap()
}

fn values(name: &str) -> Vec<f32> {
    let path = data(&format!("exif/{name}"));
    preprocessor()
        .preprocess(&ImageSource::Path(&path))
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn photos_are_turned_upright() {
    let upright = values("upright.png");
    for name in [
        "rotate90.jpg",
        "rotate270.png",
        "rotate180.jpg",
        "mirrored.jpg",
    ] {
        let diff = max_diff(&values(name), &upright);
        // JPEG at quality 100 moves a few grey levels; a wrong orientation moves the bright
        // block (250 on a 40-150 gradient) by far more.
        assert!(diff <= 4.0 / 255.0, "{name}: {diff}");
    }
}

#[test]
fn the_orientation_is_what_makes_the_difference() {
    // The stored pixels of the same-size cases, without their orientation, are far from the
    // upright picture: the test above cannot pass by accident.
    let upright = values("upright.png");
    for name in ["rotate180.jpg", "mirrored.jpg"] {
        let bytes = std::fs::read(data(&format!("exif/{name}"))).unwrap();
        let stored = image::load_from_memory(&bytes).unwrap().to_luma8();
        let raw: Vec<f32> = stored.pixels().map(|p| f32::from(p.0[0]) / 255.0).collect();
        assert!(max_diff(&raw, &upright) > 0.5, "{name}");
    }
}
