//! The labelling job of `mgecl label`: scan a folder, embed its images in journalled chunks
//! (resumable), label them with a fitted task, write the CSV and the HTML report.

use std::path::{Path, PathBuf};

use mgecl::{Error, LabelOptions, Labelling, Task};

use crate::journal;
use crate::report;

/// What a folder scan found: the image files to label, and every other file with why it is
/// not labelled.
pub struct FolderScan {
    /// Files with an image extension (of a supported format, or HEIC/HEIF/AVIF, which are
    /// reported as failed rather than left out), sorted by path.
    pub images: Vec<PathBuf>,
    /// Other files and symbolic links (not followed), sorted by path, with the reason.
    pub skipped: Vec<(PathBuf, &'static str)>,
}

/// Every file under `root`, recursively (symbolic links are not followed), sorted by path.
///
/// # Errors
/// [`Error::Io`] naming a folder that cannot be listed.
pub fn scan(root: &Path) -> Result<FolderScan, Error> {
    let mut found = FolderScan {
        images: Vec::new(),
        skipped: Vec::new(),
    };
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&folder, e))?;
            let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            let path = entry.path();
            if kind.is_dir() {
                folders.push(path);
            } else if kind.is_symlink() {
                found.skipped.push((path, "symbolic link (not followed)"));
            } else if mgecl::preprocess::is_image_file(&path)
                || mgecl::preprocess::is_unsupported_image_file(&path)
            {
                found.images.push(path);
            } else {
                found
                    .skipped
                    .push((path, "not an image file (by its extension)"));
            }
        }
    }
    found.images.sort();
    found.skipped.sort();
    Ok(found)
}

/// `path` relative to `root`, with `/` separators (the CSV's `path` column).
pub fn relative(path: &Path, root: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// What a labelling job is asked.
pub struct LabelJob {
    pub support: PathBuf,
    pub images: PathBuf,
    pub out: PathBuf,
    pub report: Option<PathBuf>,
    pub options: LabelOptions,
    /// Stop at the first image that cannot be labelled (an error, no CSV) instead of giving
    /// it a row with the error.
    pub strict: bool,
    /// Continue from the progress file beside `out` ([`crate::journal`]) if there is one.
    pub resume: bool,
    /// Each class's support images (shown in the report).
    pub examples: Vec<(String, Vec<PathBuf>)>,
}

/// What [`run`] did.
pub struct LabelRun {
    /// The labelled files' paths relative to `args.images` (the CSV's `path` column).
    pub paths: Vec<String>,
    pub labelling: Labelling,
    /// The files under `args.images` that are not images, with why.
    pub skipped: Vec<(PathBuf, &'static str)>,
}

/// Labels every image under `args.images` with `task` (fitted on `args.support`), writes the
/// CSV and the report. An image that cannot be read, decoded or is over the image limits gets
/// a row with its error, unless `args.strict`.
///
/// # Errors
/// The folder cannot be listed or holds no image file; with `strict`, the first image that
/// cannot be labelled (naming its path); embedding, labelling or writing errors.
pub fn run(
    task: &Task,
    args: &LabelJob,
    progress: &dyn Fn(usize, &str) -> indicatif::ProgressBar,
) -> Result<LabelRun, Error> {
    let FolderScan {
        images: files,
        skipped,
    } = scan(&args.images)?;
    if files.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no image files under {} ({} other files; supported: {})",
            args.images.display(),
            skipped.len(),
            mgecl::preprocess::IMAGE_EXTENSIONS.join(", ")
        )));
    }
    let paths: Vec<String> = files.iter().map(|f| relative(f, &args.images)).collect();
    let job = journal::JobId {
        task: task.fingerprint()?,
        chunk: journal::CHUNK,
        dim: task.model().feature_dim(),
        paths: paths.clone(),
    };
    let journal_path = journal::path_for(&args.out);
    let (mut journal, mut outcomes) = if args.resume && journal_path.exists() {
        let (journal, outcomes) = journal::Journal::resume(&journal_path, &job)?;
        eprintln!(
            "resuming: {} of {} images done ({})",
            outcomes.len(),
            files.len(),
            journal_path.display()
        );
        (journal, outcomes)
    } else {
        if journal_path.exists() {
            eprintln!(
                "note: starting over; {} of an earlier run is replaced (--resume continues it)",
                journal_path.display()
            );
        }
        (journal::Journal::create(&journal_path, &job)?, Vec::new())
    };
    let bar = progress(files.len(), "labelling");
    bar.inc(outcomes.len() as u64);
    let start = outcomes.len();
    for (k, chunk) in files[start..].chunks(journal::CHUNK).enumerate() {
        // As the task classifies them: with each image's copies under augment_queries.
        let sources = mgecl::ImageSource::paths(chunk);
        let mut done = Vec::with_capacity(chunk.len());
        for outcome in task.embed_queries_each(&sources)? {
            match outcome {
                Err(e) if args.strict => {
                    // Nothing to resume: the same file would stop it again.
                    journal.remove()?;
                    return Err(e);
                }
                outcome => done.push(outcome.map_err(|e| e.to_string())),
            }
        }
        journal.append(start + k * journal::CHUNK, &done)?;
        outcomes.extend(done);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let labelling = task.label_outcomes(&outcomes, &args.options)?;
    let csv = labelling.csv(&paths)?;
    mgecl::internals::write_file(&args.out, csv.as_bytes())?;
    if let Some(report_path) = &args.report {
        // Drawn from the CSV as written, as `mgecl report` draws it: the same page either way.
        report::write_from_csv(
            &csv,
            &args.support,
            &args.images,
            &args.examples,
            args.options.review_below,
            report_path,
            progress,
        )?;
    }
    journal.remove()?;
    Ok(LabelRun {
        paths,
        labelling,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_use_forward_slashes() {
        let root = Path::new("/data/images");
        assert_eq!(relative(&root.join("a").join("b.png"), root), "a/b.png");
    }
}
