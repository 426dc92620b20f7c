//! Image-folder datasets: every directory that directly holds images is one class, named by
//! its path relative to the root; a list of top-level folder names selects a split. Images
//! are decoded once, converted to the model's pixels (channels, invert) and resized to its
//! input size, then kept in memory as u8 — augmentation and normalisation work from there.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::preprocess::{ImageSource, Preprocessor};
use crate::train::rng::Rng;

/// One class: its name and image files.
#[derive(Debug, Clone)]
pub struct ClassFiles {
    /// Path of the folder relative to the root, with `/` separators.
    pub name: String,
    /// Image files, sorted.
    pub files: Vec<PathBuf>,
}

fn is_image(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
}

/// Reads a split file: one top-level folder name per line; blank lines and `#` comments are
/// skipped.
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::InvalidArgument`] when it names nothing.
pub fn read_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} lists no folders",
            path.display()
        )));
    }
    Ok(names)
}

/// Finds the classes under `root`, optionally only under the top-level folders in `include`.
///
/// # Errors
/// [`Error::Io`] for a missing or unreadable folder (including an `include` entry that does
/// not exist); [`Error::InvalidArgument`] when no class is found.
pub fn scan_classes(root: &Path, include: Option<&[String]>) -> Result<Vec<ClassFiles>> {
    if !root.is_dir() {
        return Err(Error::io(
            root,
            std::io::Error::new(std::io::ErrorKind::NotFound, "data folder not found"),
        ));
    }
    let tops: Vec<PathBuf> = match include {
        Some(names) => names.iter().map(|n| root.join(n)).collect(),
        None => vec![root.to_path_buf()],
    };
    let mut classes = Vec::new();
    for top in tops {
        if !top.is_dir() {
            return Err(Error::io(
                &top,
                std::io::Error::new(std::io::ErrorKind::NotFound, "listed folder not found"),
            ));
        }
        walk(root, &top, &mut classes)?;
    }
    classes.sort_by(|a, b| a.name.cmp(&b.name));
    if classes.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no image folders under {}",
            root.display()
        )));
    }
    Ok(classes)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ClassFiles>) -> Result<()> {
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            subdirs.push(path);
        } else if is_image(&path) {
            files.push(path);
        }
    }
    if !files.is_empty() {
        files.sort();
        let name = dir
            .strip_prefix(root)
            .unwrap_or(dir)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        out.push(ClassFiles { name, files });
    }
    subdirs.sort();
    for sub in subdirs {
        walk(root, &sub, out)?;
    }
    Ok(())
}

/// A dataset decoded into memory at the model's input size.
pub struct Dataset {
    /// Class names, index = label.
    pub class_names: Vec<String>,
    /// Per image: its class index.
    pub labels: Vec<usize>,
    /// Per image: its source file.
    pub paths: Vec<PathBuf>,
    /// Per image: u8 pixels, `channels * height * width`, HWC order (as `image` stores them).
    pub pixels: Vec<Vec<u8>>,
    /// Channels (1 or 3).
    pub channels: usize,
    /// Height and width.
    pub size: (usize, usize),
    /// Per class: indices of its images.
    pub by_class: Vec<Vec<usize>>,
}

impl Dataset {
    /// Decodes every image of `classes` with the preprocessing of a model (channels, invert,
    /// Lanczos resize), using both cores.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a class without images; any decoding error, naming the
    /// file.
    pub fn load(classes: &[ClassFiles], pre: &Preprocessor) -> Result<Self> {
        if let Some(empty) = classes.iter().find(|c| c.files.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "class {:?} has no images",
                empty.name
            )));
        }
        let (channels, h, w) = pre.input_shape();
        let mut labels = Vec::new();
        let mut paths = Vec::new();
        for (k, class) in classes.iter().enumerate() {
            for f in &class.files {
                labels.push(k);
                paths.push(f.clone());
            }
        }
        let decode = |path: &PathBuf| -> Result<Vec<u8>> {
            let pixels = pre.decode(&ImageSource::Path(path))?;
            Ok(pixels.resized_raw(w as u32, h as u32).into_owned())
        };
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        let chunk = paths.len().div_ceil(threads).max(1);
        let results: Vec<Result<Vec<Vec<u8>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = paths
                .chunks(chunk)
                .map(|part| s.spawn(move || part.iter().map(decode).collect::<Result<Vec<_>>>()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Backend("decoder thread panicked".into())))
                })
                .collect()
        });
        let mut pixels = Vec::with_capacity(paths.len());
        for r in results {
            pixels.extend(r?);
        }
        let mut by_class = vec![Vec::new(); classes.len()];
        for (i, &k) in labels.iter().enumerate() {
            by_class[k].push(i);
        }
        Ok(Dataset {
            class_names: classes.iter().map(|c| c.name.clone()).collect(),
            labels,
            paths,
            pixels,
            channels,
            size: (h, w),
            by_class,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1].
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let c = self.channels;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        let mut n = 0f64;
        for img in &self.pixels {
            for px in img.chunks_exact(c) {
                for (k, &v) in px.iter().enumerate() {
                    let x = f64::from(v) / 255.0;
                    sum[k] += x;
                    sq[k] += x * x;
                }
            }
            n += (img.len() / c) as f64;
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| ((q / n - m * m).max(1e-12)).sqrt() as f32)
            .collect();
        (mean.into_iter().map(|m| m as f32).collect(), std)
    }
}

/// One few-shot episode: image indices into a [`Dataset`], class-major
/// (`support[c * shots + s]`, `query[c * queries + q]`), and the dataset classes used.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// Dataset class index of each episode class.
    pub classes: Vec<usize>,
    /// Support image indices, class-major.
    pub support: Vec<usize>,
    /// Query image indices, class-major.
    pub query: Vec<usize>,
}

/// Checks that every class of `dataset` can give `shots + queries` distinct images.
///
/// # Errors
/// [`Error::InvalidArgument`] for zero ways or shots, more ways than classes, or a class
/// with fewer images than `shots + queries`.
pub fn check_episode_shape(
    dataset: &Dataset,
    ways: usize,
    shots: usize,
    queries: usize,
) -> Result<()> {
    if ways < 2 || shots == 0 {
        return Err(Error::InvalidArgument(format!(
            "episodes need at least 2 ways and 1 shot (got {ways}-way {shots}-shot)"
        )));
    }
    if ways > dataset.num_classes() {
        return Err(Error::InvalidArgument(format!(
            "{ways}-way episodes need {ways} classes, the data has {}",
            dataset.num_classes()
        )));
    }
    if let Some((k, imgs)) = dataset
        .by_class
        .iter()
        .enumerate()
        .find(|(_, v)| v.len() < shots + queries)
    {
        return Err(Error::InvalidArgument(format!(
            "class {:?} has {} images, fewer than {shots} shots + {queries} queries",
            dataset.class_names[k],
            imgs.len()
        )));
    }
    Ok(())
}

/// Samples one episode (call [`check_episode_shape`] first).
pub fn sample_episode(
    dataset: &Dataset,
    ways: usize,
    shots: usize,
    queries: usize,
    rng: &mut Rng,
) -> Episode {
    let classes = rng.choose(dataset.num_classes(), ways);
    let mut support = Vec::with_capacity(ways * shots);
    let mut query = Vec::with_capacity(ways * queries);
    for &c in &classes {
        let imgs = &dataset.by_class[c];
        let picked = rng.choose(imgs.len(), shots + queries);
        support.extend(picked[..shots].iter().map(|&i| imgs[i]));
        query.extend(picked[shots..].iter().map(|&i| imgs[i]));
    }
    Episode {
        classes,
        support,
        query,
    }
}
