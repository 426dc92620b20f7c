//! Image-folder datasets: every directory that directly holds images is one class, named by
//! its path relative to the root; a list of top-level folder names selects a split. Images
//! are decoded once, converted to the model's pixels (channels, invert) and resized to its
//! input size, then kept in memory as u8 — augmentation and normalisation work from there.

use std::path::{Path, PathBuf};

use crate::augment::rotate_clockwise;
use crate::error::{Error, Result};
use crate::rng::Rng;
use mgecl::preprocess::{ImageSource, Preprocessor};

/// One class: its name and image files.
#[derive(Debug, Clone)]
pub struct ClassFiles {
    /// Path of the folder relative to the root, with `/` separators.
    pub name: String,
    /// Image files, sorted.
    pub files: Vec<PathBuf>,
}

/// Reads a split file: one top-level folder name per line; blank lines and `#` comments are
/// skipped.
///
/// # Errors
/// [`mgecl::Error::Io`] when unreadable; [`Error::InvalidArgument`] when it names nothing.
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
/// [`mgecl::Error::Io`] for a missing or unreadable folder (including an `include` entry that does
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
        } else if mgecl::preprocess::is_image_file(&path) {
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
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Failed("an image decoder thread panicked".into()))
                    })
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

    /// The dataset with each class's images rotated by 90, 180 and 270 degrees added as three
    /// new classes (`NAME@rot90`, ...): the standard Omniglot enlargement of the training
    /// classes (a rotated character is another character).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for non-square images.
    pub fn with_rotated_classes(mut self) -> Result<Self> {
        let (h, w) = self.size;
        if h != w {
            return Err(Error::InvalidArgument(format!(
                "rotated classes need square images (got {h}x{w})"
            )));
        }
        let classes = self.num_classes();
        let c = self.channels;
        for quarter in 1..4 {
            for k in 0..classes {
                let label = self.class_names.len();
                // The rotation tags the parent folder, so that a rotated alphabet is a group
                // of its own (within-alphabet episodes never mix rotations).
                let name = &self.class_names[k];
                let tagged = match name.rsplit_once('/') {
                    Some((parent, leaf)) => format!("{parent}@rot{}/{leaf}", 90 * quarter),
                    None => format!("@rot{}/{name}", 90 * quarter),
                };
                self.class_names.push(tagged);
                let mut members = Vec::with_capacity(self.by_class[k].len());
                for i in self.by_class[k].clone() {
                    let out = rotate_clockwise(&self.pixels[i], (h, w, c), quarter);
                    members.push(self.pixels.len());
                    self.pixels.push(out);
                    self.labels.push(label);
                    self.paths.push(self.paths[i].clone());
                }
                self.by_class.push(members);
            }
        }
        Ok(self)
    }

    /// Classes grouped by their parent folder (an Omniglot alphabet), in name order; classes
    /// at the root form one group.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        let parent = |name: &str| name.rsplit_once('/').map_or("", |(p, _)| p).to_string();
        let mut by_parent: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
        for (k, name) in self.class_names.iter().enumerate() {
            by_parent.entry(parent(name)).or_default().push(k);
        }
        by_parent.into_values().collect()
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
    /// Query images of classes outside the episode (open-set evaluation; usually empty).
    pub unknown: Vec<usize>,
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

/// Where an episode's classes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeClasses {
    /// Any classes of the dataset.
    #[default]
    Any,
    /// All from one group ([`Dataset::groups`]: one alphabet, as in Lake et al.'s one-shot
    /// runs), the group drawn uniformly among those with enough classes.
    WithinGroup,
}

/// Checks that episodes of this shape can be drawn with `classes`: as
/// [`check_episode_shape`], and for [`EpisodeClasses::WithinGroup`] that some group has
/// `ways` classes.
///
/// # Errors
/// [`Error::InvalidArgument`] naming what is missing.
pub fn check_episodes(
    dataset: &Dataset,
    classes: EpisodeClasses,
    (ways, shots, queries): (usize, usize, usize),
) -> Result<()> {
    check_episode_shape(dataset, ways, shots, queries)?;
    if classes == EpisodeClasses::WithinGroup {
        let largest = dataset.groups().iter().map(Vec::len).max().unwrap_or(0);
        if largest < ways {
            return Err(Error::InvalidArgument(format!(
                "within-alphabet {ways}-way episodes need a parent folder with {ways} classes; \
                 the largest has {largest}"
            )));
        }
    }
    Ok(())
}

/// Draws `count` episodes (call [`check_episodes`] first).
pub fn sample_episodes(
    dataset: &Dataset,
    classes: EpisodeClasses,
    (ways, shots, queries): (usize, usize, usize),
    count: usize,
    rng: &mut Rng,
) -> Vec<Episode> {
    let groups: Vec<Vec<usize>> = match classes {
        EpisodeClasses::Any => Vec::new(),
        EpisodeClasses::WithinGroup => dataset
            .groups()
            .into_iter()
            .filter(|g| g.len() >= ways)
            .collect(),
    };
    (0..count)
        .map(|_| match classes {
            EpisodeClasses::Any => sample_episode(dataset, ways, shots, queries, rng),
            EpisodeClasses::WithinGroup => {
                let group = &groups[rng.below(groups.len())];
                let picked: Vec<usize> = rng
                    .choose(group.len(), ways)
                    .into_iter()
                    .map(|i| group[i])
                    .collect();
                episode_of(dataset, picked, shots, queries, rng)
            }
        })
        .collect()
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
    episode_of(dataset, classes, shots, queries, rng)
}

/// An episode of the given dataset classes: `shots + queries` distinct images each.
fn episode_of(
    dataset: &Dataset,
    classes: Vec<usize>,
    shots: usize,
    queries: usize,
    rng: &mut Rng,
) -> Episode {
    let ways = classes.len();
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
        unknown: Vec::new(),
    }
}

/// Adds to each episode `queries` images of each of `unknown_ways` classes outside it (open-set
/// evaluation), drawn with `rng`.
///
/// # Errors
/// [`Error::InvalidArgument`] when the data has fewer than ways + `unknown_ways` classes.
pub fn add_unknown_queries(
    dataset: &Dataset,
    episodes: &mut [Episode],
    unknown_ways: usize,
    queries: usize,
    rng: &mut Rng,
) -> Result<()> {
    for ep in episodes {
        let outside: Vec<usize> = (0..dataset.num_classes())
            .filter(|c| !ep.classes.contains(c))
            .collect();
        if outside.len() < unknown_ways {
            return Err(Error::InvalidArgument(format!(
                "{unknown_ways} unknown classes need {} classes in the data, it has {}",
                ep.classes.len() + unknown_ways,
                dataset.num_classes()
            )));
        }
        for i in rng.choose(outside.len(), unknown_ways) {
            let imgs = &dataset.by_class[outside[i]];
            let picked = rng.choose(imgs.len(), queries);
            ep.unknown.extend(picked.iter().map(|&j| imgs[j]));
        }
    }
    Ok(())
}

/// Redraws the known-class queries of each episode with unequal class sizes, as Veilleux et
/// al. (NeurIPS 2021, "Realistic evaluation of transductive few-shot learning") do: class
/// proportions from a symmetric Dirichlet(`alpha`), `ways x queries` queries in all, at least
/// one per class. A class never gets more queries than it has images outside the support;
/// the draws that would pass that go to the other classes. Supports and unknown queries
/// stay as they are, so the episodes pair with the balanced ones of the same seed.
///
/// # Errors
/// [`Error::InvalidArgument`] for `alpha` not finite and > 0, or an episode whose classes
/// hold fewer than `ways x queries` images outside its support.
pub fn dirichlet_queries(
    dataset: &Dataset,
    episodes: &mut [Episode],
    queries: usize,
    alpha: f64,
    rng: &mut Rng,
) -> Result<()> {
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "the Dirichlet concentration must be > 0, got {alpha}"
        )));
    }
    for ep in episodes {
        let ways = ep.classes.len();
        let total = ways * queries;
        let outside_support: Vec<Vec<usize>> = ep
            .classes
            .iter()
            .map(|&c| {
                dataset.by_class[c]
                    .iter()
                    .copied()
                    .filter(|i| !ep.support.contains(i))
                    .collect()
            })
            .collect();
        let available: usize = outside_support.iter().map(Vec::len).sum();
        if available < total || outside_support.iter().any(Vec::is_empty) {
            return Err(Error::InvalidArgument(format!(
                "{total} queries of {ways} classes need that many images outside the support, \
                 the classes have {available}"
            )));
        }
        let proportions = rng.dirichlet(alpha, ways);
        let mut counts = vec![1usize; ways];
        for _ in ways..total {
            let open: Vec<f64> = proportions
                .iter()
                .zip(&counts)
                .zip(&outside_support)
                .map(|((&p, &n), imgs)| if n < imgs.len() { p } else { 0.0 })
                .collect();
            // All remaining mass on full classes: spread evenly over the open ones.
            let open = if open.iter().sum::<f64>() > 0.0 {
                open
            } else {
                counts
                    .iter()
                    .zip(&outside_support)
                    .map(|(&n, imgs)| f64::from(u8::from(n < imgs.len())))
                    .collect()
            };
            counts[rng.categorical(&open)] += 1;
        }
        ep.query.clear();
        for (imgs, &n) in outside_support.iter().zip(&counts) {
            ep.query
                .extend(rng.choose(imgs.len(), n).into_iter().map(|j| imgs[j]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per_class` images per class, named `parent/class`, 3x3 grey pixels
    /// 1..=9 plus the image index.
    fn dataset(names: &[&str], per_class: usize) -> Dataset {
        let mut d = Dataset {
            class_names: names.iter().map(|s| s.to_string()).collect(),
            labels: Vec::new(),
            paths: Vec::new(),
            pixels: Vec::new(),
            channels: 1,
            size: (3, 3),
            by_class: vec![Vec::new(); names.len()],
        };
        for k in 0..names.len() {
            for _ in 0..per_class {
                let i = d.pixels.len();
                d.by_class[k].push(i);
                d.labels.push(k);
                d.paths.push(PathBuf::from(format!("{i}.png")));
                d.pixels.push((1..=9).map(|v| v + i as u8).collect());
            }
        }
        d
    }

    /// Unequal query counts: `ways x queries` in all, at least one per class, never a support
    /// image, never more than a class holds (20 images, 1 shot: at most 19, so the draws of
    /// a concentrated Dirichlet(0.1) overflow into other classes); the supports unchanged.
    #[test]
    fn dirichlet_queries_keep_the_totals_and_the_supports() {
        let d = dataset(&["a", "b", "c", "d", "e", "f"], 20);
        let mut rng = Rng::new(5, 1);
        let mut episodes = sample_episodes(&d, EpisodeClasses::Any, (5, 1, 15), 200, &mut rng);
        let supports: Vec<Vec<usize>> = episodes.iter().map(|e| e.support.clone()).collect();
        dirichlet_queries(&d, &mut episodes, 15, 0.1, &mut Rng::new(5, 2)).unwrap();
        let mut unequal = 0;
        for (ep, support) in episodes.iter().zip(&supports) {
            assert_eq!(&ep.support, support);
            assert_eq!(ep.query.len(), 75);
            let counts: Vec<usize> = ep
                .classes
                .iter()
                .map(|&c| ep.query.iter().filter(|&&i| d.labels[i] == c).count())
                .collect();
            assert_eq!(
                counts.iter().sum::<usize>(),
                75,
                "only the episode's classes"
            );
            assert!(counts.iter().all(|&n| (1..=19).contains(&n)), "{counts:?}");
            assert!(ep.query.iter().all(|i| !ep.support.contains(i)));
            let mut distinct = ep.query.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 75);
            unequal += usize::from(counts.iter().max() != counts.iter().min());
        }
        assert_eq!(unequal, 200);
        let mut small = sample_episodes(&d, EpisodeClasses::Any, (5, 1, 15), 1, &mut rng);
        assert!(dirichlet_queries(&d, &mut small, 20, 2.0, &mut rng).is_err());
        assert!(dirichlet_queries(&d, &mut small, 2, 0.0, &mut rng).is_err());
    }

    #[test]
    fn rotated_classes_are_quarter_turns_clockwise() {
        let d = dataset(&["a/x", "b/y"], 2).with_rotated_classes().unwrap();
        assert_eq!(d.num_classes(), 8);
        assert_eq!(d.class_names[2], "a@rot90/x");
        assert_eq!(d.class_names[7], "b@rot270/y");
        assert_eq!(
            d.groups().len(),
            8,
            "each rotation of an alphabet is its own group"
        );
        assert_eq!(d.len(), 16);
        // Image 0 is [[1 2 3] [4 5 6] [7 8 9]]: its quarter turns, by hand.
        let of = |class: usize| &d.pixels[d.by_class[class][0]];
        assert_eq!(of(2), &vec![7, 4, 1, 8, 5, 2, 9, 6, 3]);
        assert_eq!(of(4), &vec![9, 8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(of(6), &vec![3, 6, 9, 2, 5, 8, 1, 4, 7]);
        assert!(d.by_class.iter().all(|m| m.len() == 2));
        assert!(d
            .labels
            .iter()
            .enumerate()
            .all(|(i, &k)| d.by_class[k].contains(&i)));
        let mut wide = dataset(&["a/x"], 1);
        wide.size = (3, 1);
        assert!(wide.with_rotated_classes().is_err());
    }

    #[test]
    fn within_alphabet_episodes_keep_to_one_parent_folder() {
        let d = dataset(&["a/1", "a/2", "a/3", "b/1", "b/2", "c/1"], 3);
        assert_eq!(d.groups(), vec![vec![0, 1, 2], vec![3, 4], vec![5]]);
        let mut rng = Rng::new(1, 2);
        let shape = (2, 1, 2);
        check_episodes(&d, EpisodeClasses::WithinGroup, shape).unwrap();
        let episodes = sample_episodes(&d, EpisodeClasses::WithinGroup, shape, 200, &mut rng);
        let parent = |k: usize| d.class_names[k].split('/').next().unwrap().to_string();
        let mut seen = std::collections::BTreeSet::new();
        for e in &episodes {
            assert_eq!(e.classes.len(), 2);
            assert_eq!(parent(e.classes[0]), parent(e.classes[1]));
            seen.insert(parent(e.classes[0]));
            assert_eq!((e.support.len(), e.query.len()), (2, 4));
        }
        // Both folders with 2+ classes are used; "c" (one class) never.
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(check_episodes(&d, EpisodeClasses::WithinGroup, (4, 1, 2)).is_err());
        assert!(check_episodes(&d, EpisodeClasses::Any, (4, 1, 2)).is_ok());
    }
}
