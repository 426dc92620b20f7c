//! Image bytes or pixels -> the normalised NCHW f32 input the encoder saw in training
//! (the model-file contract of docs/models.md, "Model files"): decode -> convert to the model's channel count -> optional invert
//! -> resize to the input size -> `u8 / 255` -> `(x - mean) / std` per channel.
//!
//! Grey images are replicated to RGB for 3-channel models; colour images become luma
//! (`image`'s Rec. 709 weights) for 1-channel models; alpha is dropped. Resizing uses
//! Lanczos3 and happens only when the size differs.

use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use image::{
    DynamicImage, GrayImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Luma, Rgb,
    RgbImage,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a model takes as input: size, channels and normalisation. The one description that a
/// model file's metadata is parsed into ([`Metadata`](crate::Metadata)), that preprocessing
/// runs, that [`ModelInfo`](crate::ModelInfo) reports and that training writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Input height and width in pixels.
    pub image_size: (usize, usize),
    /// Input channels: 1 (grey) or 3 (RGB).
    pub in_channels: usize,
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: Vec<f32>,
    /// Map each u8 pixel v to 255 - v before normalising (bright strokes on dark).
    pub invert: bool,
}

impl InputSpec {
    /// The model-file metadata entries that describe it (`image_size`, `in_channels`, `mean`,
    /// `std`, `invert`), as [`Metadata::parse`](crate::Metadata::parse) reads them back.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let json = |v: &[f32]| serde_json::to_string(v).unwrap_or_default();
        let (h, w) = self.image_size;
        let size = if h == w {
            h.to_string()
        } else {
            format!("[{h}, {w}]")
        };
        BTreeMap::from([
            ("image_size".to_string(), size),
            ("in_channels".to_string(), self.in_channels.to_string()),
            ("mean".to_string(), json(&self.mean)),
            ("std".to_string(), json(&self.std)),
            ("invert".to_string(), self.invert.to_string()),
        ])
    }
}

/// Limits a decoded image may not exceed, so that a small hostile file (a "decompression
/// bomb") cannot make the decoder allocate gigabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageLimits {
    /// Largest accepted width in pixels (default 16384).
    pub max_width: u32,
    /// Largest accepted height in pixels (default 16384).
    pub max_height: u32,
    /// Largest number of bytes the decoder may allocate (default 512 MiB).
    pub max_decoded_bytes: u64,
}

impl ImageLimits {
    /// Limits of `max_width` x `max_height` pixels and `max_decoded_bytes` decoded.
    pub fn new(max_width: u32, max_height: u32, max_decoded_bytes: u64) -> Self {
        ImageLimits {
            max_width,
            max_height,
            max_decoded_bytes,
        }
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_width: 16384,
            max_height: 16384,
            max_decoded_bytes: 512 << 20,
        }
    }
}

/// Layout of a raw pixel buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PixelFormat {
    /// 3 bytes per pixel, R, G, B.
    Rgb8,
    /// 4 bytes per pixel, R, G, B, A (alpha is ignored).
    Rgba8,
    /// 1 byte per pixel.
    Gray8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Rgba8 => 4,
            PixelFormat::Gray8 => 1,
        }
    }
}

/// A borrowed raw image, e.g. a camera frame: `height` rows of `stride` bytes, each row
/// starting with `width` pixels in `format`.
#[derive(Debug, Clone, Copy)]
pub struct PixelBuffer<'a> {
    /// The bytes; at least `stride * (height - 1) + width * bytes_per_pixel` long.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from the start of one row to the next (>= `width * bytes_per_pixel`).
    pub stride: usize,
    /// Pixel layout.
    pub format: PixelFormat,
}

/// One image to embed, in whichever form the caller holds it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum ImageSource<'a> {
    /// An encoded image file (PNG or JPEG) on disk.
    Path(&'a Path),
    /// An encoded image (PNG or JPEG) in memory.
    Encoded(&'a [u8]),
    /// Raw pixels.
    Pixels(PixelBuffer<'a>),
}

impl<'a> ImageSource<'a> {
    /// The sources of image files, in order: what every `*_paths` convenience passes on.
    pub fn paths<P: AsRef<Path>>(paths: &'a [P]) -> Vec<ImageSource<'a>> {
        paths
            .iter()
            .map(|p| ImageSource::Path(p.as_ref()))
            .collect()
    }
}

/// The formats the decoder reads, by the file extensions that name them: how folders of
/// images are listed (training data, support folders, `mgecl label`). All are decoded by the
/// `image` crate's pure-Rust decoders under the same [`ImageLimits`]; a GIF's first frame is
/// its image.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"];

/// Extensions of photo formats that cannot be decoded (no pure-Rust decoder): listed as images
/// by `mgecl label`, so that they are reported as failed with advice on converting them
/// instead of being left out silently.
pub const UNSUPPORTED_IMAGE_EXTENSIONS: &[&str] = &["heic", "heif", "avif"];

fn lowercase_extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Whether a file name has one of the [`IMAGE_EXTENSIONS`] (any case).
pub fn is_image_file(path: &Path) -> bool {
    lowercase_extension(path).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Whether a file name has one of the [`UNSUPPORTED_IMAGE_EXTENSIONS`] (any case).
pub fn is_unsupported_image_file(path: &Path) -> bool {
    lowercase_extension(path).is_some_and(|e| UNSUPPORTED_IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// What to tell the user about a HEIC/HEIF or AVIF image (recognised by its ISO-BMFF `ftyp`
/// brand), or `None` for other data.
fn unsupported_format_advice(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 12 || &bytes[4..8] != b"ftyp" {
        return None;
    }
    match &bytes[8..12] {
        b"avif" | b"avis" => Some(
            "AVIF images are not supported (no pure-Rust decoder): convert them to JPEG or PNG",
        ),
        b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => Some(
            "HEIC/HEIF images are not supported (no pure-Rust decoder): convert them to JPEG \
             or PNG (e.g. with heif-convert, or export from Photos/Preview)",
        ),
        _ => None,
    }
}

/// The supported formats, for error messages.
const SUPPORTED: &str = "PNG, JPEG, WebP, BMP, GIF and TIFF are supported";

/// Decodes PNG, JPEG, WebP, BMP, GIF (first frame) or TIFF bytes within `bounds` and turns
/// the image upright by its EXIF orientation: the one decoder of encoded images
/// (preprocessing, [`decode_rgb`]).
///
/// # Errors
/// [`Error::InvalidImage`] for empty, corrupt or unsupported data (HEIC/HEIF and AVIF named as
/// such, with advice to convert them); [`Error::LimitExceeded`] when the image is larger than
/// `bounds`.
fn decode_upright(bytes: &[u8], bounds: &ImageLimits) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(Error::InvalidImage("the image data is empty".into()));
    }
    if let Some(advice) = unsupported_format_advice(bytes) {
        return Err(Error::InvalidImage(advice.into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::InvalidImage(format!("cannot read image: {e}")))?;
    match reader.format() {
        Some(
            ImageFormat::Png
            | ImageFormat::Jpeg
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Gif
            | ImageFormat::Tiff,
        ) => {}
        Some(other) => {
            return Err(Error::InvalidImage(format!(
                "{other:?} images are not supported ({SUPPORTED})"
            )))
        }
        None => {
            return Err(Error::InvalidImage(format!(
                "unrecognised image format ({SUPPORTED})"
            )))
        }
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(bounds.max_width);
    limits.max_image_height = Some(bounds.max_height);
    limits.max_alloc = Some(bounds.max_decoded_bytes);
    reader.limits(limits.clone());
    let error = |e: image::ImageError| match e {
        image::ImageError::Limits(l) => Error::LimitExceeded(format!(
            "image exceeds the decoding limits ({l}); limits: {}x{} px, {} bytes",
            bounds.max_width, bounds.max_height, bounds.max_decoded_bytes
        )),
        other => Error::InvalidImage(format!("cannot decode image: {other}")),
    };
    let mut decoder = reader.into_decoder().map_err(error)?;
    // The buffer the pixels need, checked before it is allocated (as ImageReader::decode).
    limits.reserve(decoder.total_bytes()).map_err(error)?;
    // Phones store photos as the sensor saw them plus an EXIF orientation: apply it, so a
    // portrait photo is seen upright. An unreadable EXIF block leaves the image as stored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(error)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// The preprocessing of one model: its input description and decoding limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    input: InputSpec,
    limits: ImageLimits,
}

/// Decoded 8-bit pixels, upright, in HWC order (rows top to bottom), gray (1 channel) or RGB
/// (3): what [`Preprocessor::decode`] gives (already in the model's channel count and inverted
/// if the model asks for it, not yet resized: the point where training augmentation plugs in)
/// and what [`decode_rgb`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels(Planes);

/// The `image` buffers behind [`Pixels`] (private: an `image` upgrade is not an API change).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Planes {
    Gray(GrayImage),
    Rgb(RgbImage),
}

impl Pixels {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        match &self.0 {
            Planes::Gray(img) => img.width(),
            Planes::Rgb(img) => img.width(),
        }
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        match &self.0 {
            Planes::Gray(img) => img.height(),
            Planes::Rgb(img) => img.height(),
        }
    }

    /// Channels per pixel: 1 (gray) or 3 (RGB).
    pub fn channels(&self) -> usize {
        match &self.0 {
            Planes::Gray(_) => 1,
            Planes::Rgb(_) => 3,
        }
    }

    /// The HWC bytes (`height * width * channels`).
    pub fn as_hwc(&self) -> &[u8] {
        match &self.0 {
            Planes::Gray(img) => img.as_raw(),
            Planes::Rgb(img) => img.as_raw(),
        }
    }

    /// The HWC bytes at `width` x `height` (Lanczos3 resize only when the size differs).
    pub fn resized_raw(&self, width: u32, height: u32) -> std::borrow::Cow<'_, [u8]> {
        use std::borrow::Cow;
        if (self.width(), self.height()) == (width, height) {
            return Cow::Borrowed(self.as_hwc());
        }
        Cow::Owned(match &self.0 {
            Planes::Gray(img) => {
                image::imageops::resize(img, width, height, FilterType::Lanczos3).into_raw()
            }
            Planes::Rgb(img) => {
                image::imageops::resize(img, width, height, FilterType::Lanczos3).into_raw()
            }
        })
    }
}

/// Decodes PNG, JPEG, WebP, BMP, GIF (first frame) or TIFF bytes within `limits` into upright
/// RGB pixels (thumbnails, reports); the same decoder preprocessing uses.
///
/// # Errors
/// As [`Preprocessor::decode`] for encoded bytes: [`Error::InvalidImage`] for empty, corrupt or
/// unsupported data, [`Error::LimitExceeded`] beyond `limits`.
pub fn decode_rgb(bytes: &[u8], limits: &ImageLimits) -> Result<Pixels> {
    Ok(Pixels(Planes::Rgb(
        decode_upright(bytes, limits)?.into_rgb8(),
    )))
}

/// The normalisation step: HWC u8 pixels of `(h, w, c)` -> CHW `(v / 255 - mean[c]) / std[c]`,
/// appended to `out`. Shared by inference and training (`mgecl::internals`).
pub(crate) fn normalize_hwc(
    img: &[u8],
    (h, w, c): (usize, usize, usize),
    mean: &[f32],
    std: &[f32],
    out: &mut Vec<f32>,
) {
    let start = out.len();
    out.resize(start + c * h * w, 0.0);
    let plane = h * w;
    for (i, px) in img.chunks_exact(c).enumerate() {
        for k in 0..c {
            out[start + k * plane + i] = (f32::from(px[k]) / 255.0 - mean[k]) / std[k];
        }
    }
}

impl Preprocessor {
    /// The preprocessing of a model with this input.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a channel count other than 1 or 3, or `mean`/`std`
    /// lists of another length.
    pub fn new(input: &InputSpec) -> Result<Self> {
        let channels = input.in_channels;
        if channels != 1 && channels != 3 {
            return Err(Error::InvalidArgument(format!(
                "models with {channels} input channels cannot take images (1 or 3 supported)"
            )));
        }
        if input.mean.len() != channels || input.std.len() != channels {
            return Err(Error::InvalidArgument(format!(
                "mean and std need {channels} values each"
            )));
        }
        Ok(Preprocessor {
            input: input.clone(),
            limits: ImageLimits::default(),
        })
    }

    /// The input this preprocessing produces.
    pub fn input(&self) -> &InputSpec {
        &self.input
    }

    /// The same preprocessing with other decoding limits.
    pub fn with_limits(mut self, limits: ImageLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The decoding limits in force.
    pub fn limits(&self) -> ImageLimits {
        self.limits
    }

    /// Number of f32 values one image becomes (`C * H * W`).
    pub fn input_len(&self) -> usize {
        let (c, h, w) = self.input_shape();
        c * h * w
    }

    /// `(C, H, W)` of one preprocessed image.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        let (h, w) = self.input.image_size;
        (self.input.in_channels, h, w)
    }

    /// Decodes an image of any supported form into model pixels.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file, [`Error::InvalidImage`] for empty, corrupt or
    /// unsupported data, [`Error::LimitExceeded`] when the image is larger than the limits.
    pub fn decode(&self, source: &ImageSource<'_>) -> Result<Pixels> {
        let image = match source {
            ImageSource::Path(path) => {
                let bytes = std::fs::read(path).map_err(|e| Error::io(*path, e))?;
                self.decode_encoded(&bytes).map_err(|e| match e {
                    Error::InvalidImage(m) => {
                        Error::InvalidImage(format!("{}: {m}", path.display()))
                    }
                    Error::LimitExceeded(m) => {
                        Error::LimitExceeded(format!("{}: {m}", path.display()))
                    }
                    other => other,
                })?
            }
            ImageSource::Encoded(bytes) => self.decode_encoded(bytes)?,
            ImageSource::Pixels(pixels) => self.pixels_to_image(pixels)?,
        };
        Ok(self.to_model_pixels(image))
    }

    /// Preprocesses one image into `C*H*W` normalised values (CHW order).
    ///
    /// # Errors
    /// As [`Preprocessor::decode`].
    pub fn preprocess(&self, source: &ImageSource<'_>) -> Result<Vec<f32>> {
        Ok(self.normalize(&self.decode(source)?))
    }

    fn decode_encoded(&self, bytes: &[u8]) -> Result<DynamicImage> {
        decode_upright(bytes, &self.limits)
    }

    fn pixels_to_image(&self, p: &PixelBuffer<'_>) -> Result<DynamicImage> {
        let bpp = p.format.bytes_per_pixel();
        if p.width == 0 || p.height == 0 {
            return Err(Error::InvalidImage(format!(
                "pixel buffer is empty ({}x{})",
                p.width, p.height
            )));
        }
        if p.width > self.limits.max_width || p.height > self.limits.max_height {
            return Err(Error::LimitExceeded(format!(
                "pixel buffer {}x{} exceeds {}x{}",
                p.width, p.height, self.limits.max_width, self.limits.max_height
            )));
        }
        let row_bytes = p.width as usize * bpp;
        if p.stride < row_bytes {
            return Err(Error::InvalidArgument(format!(
                "stride {} is smaller than a row ({} px x {bpp} bytes = {row_bytes})",
                p.stride, p.width
            )));
        }
        let needed = p
            .stride
            .checked_mul(p.height as usize - 1)
            .and_then(|n| n.checked_add(row_bytes));
        if needed.is_none_or(|n| p.data.len() < n) {
            return Err(Error::InvalidArgument(format!(
                "pixel buffer holds {} bytes, {}x{} with stride {} needs {}",
                p.data.len(),
                p.width,
                p.height,
                p.stride,
                needed.map_or_else(|| "more than fits in memory".to_string(), |n| n.to_string())
            )));
        }
        let keep = bpp.min(3);
        let mut packed = Vec::with_capacity(p.width as usize * p.height as usize * keep);
        for row in p.data.chunks(p.stride).take(p.height as usize) {
            for px in row[..row_bytes].chunks_exact(bpp) {
                packed.extend_from_slice(&px[..keep]);
            }
        }
        let image = if keep == 1 {
            ImageBuffer::<Luma<u8>, _>::from_raw(p.width, p.height, packed)
                .map(DynamicImage::ImageLuma8)
        } else {
            ImageBuffer::<Rgb<u8>, _>::from_raw(p.width, p.height, packed)
                .map(DynamicImage::ImageRgb8)
        };
        image.ok_or_else(|| Error::InvalidImage("pixel buffer has the wrong size".into()))
    }

    /// Converts a decoded image to the model's channel count and applies `invert`.
    fn to_model_pixels(&self, image: DynamicImage) -> Pixels {
        let mut planes = if self.input.in_channels == 1 {
            Planes::Gray(image.into_luma8())
        } else {
            Planes::Rgb(image.into_rgb8())
        };
        if self.input.invert {
            match &mut planes {
                Planes::Gray(img) => img.iter_mut().for_each(|v| *v = 255 - *v),
                Planes::Rgb(img) => img.iter_mut().for_each(|v| *v = 255 - *v),
            }
        }
        Pixels(planes)
    }

    /// Resizes model pixels to the input size and normalises them into CHW f32.
    pub fn normalize(&self, pixels: &Pixels) -> Vec<f32> {
        let (c, h, w) = self.input_shape();
        let mut out = Vec::with_capacity(self.input_len());
        let raw = pixels.resized_raw(w as u32, h as u32);
        normalize_hwc(&raw, (h, w, c), &self.input.mean, &self.input.std, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn normalisation_is_chw() {
        let img = [255u8, 0, 0, 0, 255, 0]; // 1x2 RGB: red, green
        let mut out = Vec::new();
        super::normalize_hwc(&img, (1, 2, 3), &[0.0; 3], &[1.0; 3], &mut out);
        assert_eq!(out, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        super::normalize_hwc(&[51u8], (1, 1, 1), &[0.1], &[0.5], &mut out);
        assert!((out[6] - 0.2).abs() < 1e-6, "(0.2 - 0.1) / 0.5");
    }

    /// A 7x5 RGB image of 35 distinct colours (few enough for a GIF palette to hold exactly).
    fn test_image() -> image::RgbImage {
        image::RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb([(x * 30) as u8, (y * 50) as u8, 200])
        })
    }

    #[test]
    fn every_supported_format_decodes_to_the_pixels_it_was_written_from() {
        let original = test_image();
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::WebP, // the image crate writes lossless WebP
            image::ImageFormat::Bmp,
            image::ImageFormat::Gif,
            image::ImageFormat::Tiff,
        ] {
            let mut bytes = Vec::new();
            image::DynamicImage::ImageRgb8(original.clone())
                .write_to(&mut std::io::Cursor::new(&mut bytes), format)
                .unwrap();
            let decoded = super::decode_upright(&bytes, &super::ImageLimits::default())
                .unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(decoded.to_rgb8(), original, "{format:?}");
        }
    }

    #[test]
    fn heic_and_avif_are_refused_by_name() {
        // An ISO-BMFF `ftyp` box: size, "ftyp", major brand, minor version, compatible brand.
        for (brand, name) in [(b"heic", "HEIC"), (b"avif", "AVIF")] {
            let mut bytes = vec![0, 0, 0, 20];
            bytes.extend_from_slice(b"ftyp");
            bytes.extend_from_slice(brand);
            bytes.extend_from_slice(&[0, 0, 0, 0]);
            bytes.extend_from_slice(b"mif1");
            let message = super::decode_upright(&bytes, &super::ImageLimits::default())
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(name) && message.contains("convert"),
                "{message}"
            );
        }
        assert!(super::is_unsupported_image_file(std::path::Path::new(
            "a/IMG_1.HEIC"
        )));
        assert!(!super::is_image_file(std::path::Path::new("a/IMG_1.heic")));
        assert!(super::is_image_file(std::path::Path::new("a/b.WebP")));
    }
}
